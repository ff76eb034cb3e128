"""Tests for mobile_videogpt.tokenizer: the offline Qwen2.5 tokenizer rebuilt from dashscope's qwen.tiktoken."""

from __future__ import annotations

import importlib.util
import json
import random
import unicodedata
from pathlib import Path

import pytest
from jinja2.exceptions import TemplateError
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from mobile_videogpt import tokenizer as qwen_tok
from mobile_videogpt.tokenizer import (
    QWEN2_5_CONTROL_TOKENS,
    QWEN_PRETOKENIZE_REGEX,
    build_qwen2_tokenizer,
    find_qwen_vocab_file,
    load_tiktoken_ranks,
    tiktoken_ranks_to_bpe,
)

SYSTEM_LINE = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
SYSTEM_LINE_IDS = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198]
UNICODE_SAMPLES = (
    "Squat: keep your knees over your toes, 3 sets × 12 reps.",
    "Überprüfe die Hüfte — gut gemacht! Ça va? ñandú",
    "深蹲时膝盖不要内扣。スクワット、いいね！스쿼트 좋아요",
    "emoji 🏋️‍♀️👍🏽🔥 and tabs\tand\r\nnewlines\n\n  trailing spaces   ",
    "code: def f(x): return x**2 + 1_000_000  # 12345678901234567890",
)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the tokenizer is saved into by the module's single build."""
    return tmp_path_factory.mktemp("qwen_tokenizer")


@pytest.fixture(scope="module")
def tok(saved_dir: Path) -> PreTrainedTokenizerFast:
    """The Qwen2.5 tokenizer, built once for this module and saved to ``saved_dir``."""
    return build_qwen2_tokenizer(saved_dir)


@pytest.fixture(scope="module")
def reloaded(tok: PreTrainedTokenizerFast, saved_dir: Path) -> PreTrainedTokenizerBase:
    """The saved tokenizer, loaded back through AutoTokenizer without network access."""
    return AutoTokenizer.from_pretrained(saved_dir, local_files_only=True)


def test_find_qwen_vocab_file_points_into_dashscope() -> None:
    path = find_qwen_vocab_file()
    assert path.name == "qwen.tiktoken"
    assert path.parent.name == "resources"
    assert path.parent.parent.name == "dashscope"
    assert path.is_file()


def test_find_qwen_vocab_file_missing_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name: str, *args: object) -> object:
        return None if name == "dashscope" else real_find_spec(name, *args)

    monkeypatch.setattr(qwen_tok.importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps dashscope"):
        find_qwen_vocab_file()


def test_load_tiktoken_ranks_reads_qwen_file() -> None:
    ranks = load_tiktoken_ranks(find_qwen_vocab_file())
    assert len(ranks) == 151_643
    assert ranks[b"Hello"] == 9707
    assert ranks[b" world"] == 1879
    assert list(ranks.values())[:3] == [0, 1, 2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"QQ== 0\nQg== 1 extra\n", "expected 'base64_token rank'"),
        (b"QQ== zero\n", "cannot parse"),
        (b"QQ== 0\nQQ== 1\n", "appears twice"),
        (b"QQ== 0\nQg== 2\n", "not a permutation"),
    ],
)
def test_load_tiktoken_ranks_rejects_malformed_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_tiktoken_ranks(path)


def test_tiktoken_ranks_to_bpe_orders_merges_by_produced_rank() -> None:
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"ab"] = 256
    ranks[b"bc"] = 257
    ranks[b"abc"] = 258
    vocab, merges = tiktoken_ranks_to_bpe(ranks)
    assert vocab["abc"] == 258
    # Both splits of "abc" become merges; for the same produced token the left part's rank decides first,
    # so a(97)+bc(257) precedes ab(256)+c(99).
    assert merges == [("a", "b"), ("b", "c"), ("a", "bc"), ("ab", "c")]


def test_tiktoken_ranks_to_bpe_requires_all_bytes() -> None:
    with pytest.raises(ValueError, match="single-byte tokens"):
        tiktoken_ranks_to_bpe({b"a": 0})


def test_reference_encodings(tok: PreTrainedTokenizerFast) -> None:
    assert tok("Hello world").input_ids == [9707, 1879]
    assert tok(SYSTEM_LINE).input_ids == SYSTEM_LINE_IDS
    assert tok.encode(SYSTEM_LINE) == SYSTEM_LINE_IDS


def test_vocabulary_size_and_control_token_ids(tok: PreTrainedTokenizerFast) -> None:
    assert len(tok) == 151_665
    for offset, (name, _special) in enumerate(QWEN2_5_CONTROL_TOKENS):
        assert tok.convert_tokens_to_ids(name) == 151_643 + offset
        assert tok(name).input_ids == [151_643 + offset]
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 151645
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 151643
    assert tok.bos_token is None
    assert tok("hi").input_ids == [6023]  # no BOS/EOS added


def test_special_flags_follow_qwen2_5(tok: PreTrainedTokenizerFast) -> None:
    ids = [151644, 6023, 151645, 151657, 151659]
    # <|im_start|>/<|im_end|> are special (skipped); <tool_call>/<|fim_prefix|> are plain added tokens in Qwen2.5.
    assert tok.decode(ids, skip_special_tokens=True) == "hi<tool_call><|fim_prefix|>"
    assert tok.decode(ids) == "<|im_start|>hi<|im_end|><tool_call><|fim_prefix|>"


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_round_trip(tok: PreTrainedTokenizerFast, text: str) -> None:
    assert tok.decode(tok(text).input_ids) == text


def test_nfc_normalisation_like_qwen2(tok: PreTrainedTokenizerFast) -> None:
    decomposed = unicodedata.normalize("NFD", "café Ångström")
    composed = unicodedata.normalize("NFC", decomposed)
    assert decomposed != composed
    assert tok(decomposed).input_ids == tok(composed).input_ids
    assert tok.decode(tok(decomposed).input_ids) == composed


def test_matches_tiktoken_on_random_text(tok: PreTrainedTokenizerFast) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    ranks = load_tiktoken_ranks(find_qwen_vocab_file())
    specials = {name: 151_643 + i for i, (name, _special) in enumerate(QWEN2_5_CONTROL_TOKENS)}
    reference = tiktoken.Encoding(
        "qwen", pat_str=QWEN_PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens=specials
    )
    rng = random.Random(1234)
    pieces = [token.decode("utf-8", "ignore") for token in list(ranks)[::101]]
    alphabet = "aZ 09\n\t.,;'\"!?-_()<>/@#%&*+=é中文한🙂🏽\u200b\r" + "".join(UNICODE_SAMPLES)
    samples = list(UNICODE_SAMPLES) + [SYSTEM_LINE]
    for i in range(400):
        if i % 2:
            samples.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 15))))
        else:
            samples.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 50))))
    for text in samples:
        text = unicodedata.normalize("NFC", text)
        assert tok(text).input_ids == reference.encode(text, allowed_special="all"), repr(text)


def test_chat_template_renders_mobile_videogpt_chatml(tok: PreTrainedTokenizerFast) -> None:
    question = "Is my squat depth correct?"
    user = "<image>" * 16 + "\n" + question
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n" + "<image>" * 16 + "\n" + question + "<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    rendered = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    assert rendered == expected


def test_chat_template_custom_system_and_history(tok: PreTrainedTokenizerFast) -> None:
    messages = [
        {"role": "system", "content": "You are a physiotherapist."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a physiotherapist.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    )


def test_chat_template_rejects_unknown_role(tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(TemplateError, match="Unsupported chat role: tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_saved_dir_loads_offline_with_auto_tokenizer(
    tok: PreTrainedTokenizerFast, reloaded: PreTrainedTokenizerBase, saved_dir: Path
) -> None:
    config = json.loads((saved_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (saved_dir / "tokenizer.json").is_file()
    assert len(reloaded) == 151_665
    assert reloaded("Hello world").input_ids == [9707, 1879]
    assert reloaded(SYSTEM_LINE).input_ids == SYSTEM_LINE_IDS
    assert reloaded.eos_token_id == 151645 and reloaded.pad_token_id == 151643 and reloaded.bos_token is None
    assert reloaded.chat_template == tok.chat_template
    for text in UNICODE_SAMPLES:
        assert reloaded(text).input_ids == tok(text).input_ids
    backend = json.loads(reloaded.backend_tokenizer.to_str())
    assert backend["model"]["ignore_merges"] is True
