"""Tests for mobile_videogpt.vocab: <image> and action tokens, embedding growth, the action-token file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from mobile_videogpt.tokenizer import build_qwen2_tokenizer
from mobile_videogpt.vocab import (
    ACTION_TOKENS,
    ACTION_TOKENS_FILE,
    IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    ActionTokenIds,
    extend_embedding_matrix,
    extend_tokenizer,
    load_action_tokens,
    plan_action_token_ids,
    save_action_tokens,
)


def word_tokenizer(n_words: int, extra: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A small word-level tokenizer with ids 0..n_words-1 (``w0``..) followed by ``extra`` tokens."""
    vocab = {f"w{i}": i for i in range(n_words)}
    for token in extra:
        vocab[token] = len(vocab)
    backend = Tokenizer(WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


@pytest.fixture(scope="module")
def qwen_tok() -> PreTrainedTokenizerFast:
    """The real Qwen2.5 tokenizer (151,665 entries), built once for this module."""
    return build_qwen2_tokenizer()


def test_constants() -> None:
    assert IMAGE_TOKEN == "<image>"
    assert IMAGE_TOKEN_INDEX == -200
    assert ACTION_TOKENS == ("<next>", "<feedback>", "<correct>")
    assert ACTION_TOKENS_FILE == "action_tokens.json"


def test_action_token_ids_accessors() -> None:
    ids = ActionTokenIds(next=10, feedback=11, correct=12)
    assert ids.ids == (10, 11, 12)
    assert ids.vocab_size == 13
    assert ids.as_dict() == {"<next>": 10, "<feedback>": 11, "<correct>": 12}
    with pytest.raises(AttributeError):
        ids.next = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"next": -1, "feedback": 1, "correct": 2}, "<next> must be a non-negative int"),
        ({"next": 0, "feedback": 1.0, "correct": 2}, "<feedback> must be a non-negative int"),
        ({"next": 0, "feedback": 1, "correct": True}, "<correct> must be a non-negative int"),
        ({"next": 5, "feedback": 5, "correct": 6}, "must be distinct"),
    ],
)
def test_action_token_ids_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ActionTokenIds(**kwargs)  # type: ignore[arg-type]


def test_plan_for_mobile_videogpt_0_5b() -> None:
    ids = plan_action_token_ids(151666)
    assert ids == ActionTokenIds(next=151666, feedback=151667, correct=151668)
    assert ids.vocab_size == 151669


def test_plan_for_1000_rows() -> None:
    ids = plan_action_token_ids(1000)
    assert ids.ids == (1000, 1001, 1002)
    assert ids.vocab_size == 1003


@pytest.mark.parametrize("rows", [0, -5, 3.0, True])
def test_plan_rejects_invalid_row_counts(rows: object) -> None:
    with pytest.raises(ValueError, match="embedding_rows must be a positive int"):
        plan_action_token_ids(rows)  # type: ignore[arg-type]


def test_extend_real_qwen_tokenizer(qwen_tok: PreTrainedTokenizerFast) -> None:
    assert len(qwen_tok) == 151665
    assert IMAGE_TOKEN not in qwen_tok.get_vocab()

    ids = extend_tokenizer(qwen_tok, 151666)

    assert ids == plan_action_token_ids(151666)
    assert qwen_tok.convert_tokens_to_ids(IMAGE_TOKEN) == 151665
    assert [qwen_tok.convert_tokens_to_ids(t) for t in ACTION_TOKENS] == [151666, 151667, 151668]
    assert len(qwen_tok) == 151669 == ids.vocab_size
    # Added as special tokens: never split, skipped on decode with skip_special_tokens.
    encoded = qwen_tok("hi<next><feedback> x<correct><image>").input_ids
    assert encoded == [6023, 151666, 151667, 856, 151668, 151665]
    assert qwen_tok.decode(encoded, skip_special_tokens=True) == "hi x"
    assert qwen_tok.decode(encoded) == "hi<next><feedback> x<correct><image>"
    # The regular vocabulary is untouched.
    assert qwen_tok("Hello world").input_ids == [9707, 1879]

    # Idempotent: a second call with the same row count changes nothing.
    assert extend_tokenizer(qwen_tok, 151666) == ids
    assert len(qwen_tok) == 151669

    # Passing the already-extended row count is a mistake that must be named, not silently re-planned.
    with pytest.raises(ValueError, match=r"already has action tokens .* plan for 151669 embedding rows"):
        extend_tokenizer(qwen_tok, 151669)


def test_extend_tokenizer_with_image_already_present() -> None:
    tok = word_tokenizer(999, extra=(IMAGE_TOKEN,))
    assert len(tok) == 1000
    ids = extend_tokenizer(tok, 1000)
    assert ids.ids == (1000, 1001, 1002)
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) == 999
    assert len(tok) == 1003
    assert tok("w5 <feedback>").input_ids == [5, 1001]


def test_extend_tokenizer_without_image_when_sizes_match() -> None:
    tok = word_tokenizer(1000)
    ids = extend_tokenizer(tok, 1000)
    assert ids.ids == (1000, 1001, 1002)
    assert IMAGE_TOKEN not in tok.get_vocab()


@pytest.mark.parametrize("rows", [1200, 998])
def test_extend_tokenizer_size_mismatch_names_both_numbers(rows: int) -> None:
    tok = word_tokenizer(1000)
    with pytest.raises(ValueError, match=rf"tokenizer has 1000 entries but the embedding matrix has {rows} rows"):
        extend_tokenizer(tok, rows)
    assert len(tok) == 1000  # nothing was added


def test_extend_tokenizer_adds_image_then_checks_size() -> None:
    tok = word_tokenizer(999)
    ids = extend_tokenizer(tok, 1000)
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) == 999
    assert ids.ids == (1000, 1001, 1002)


def test_extend_tokenizer_rejects_partial_action_tokens() -> None:
    tok = word_tokenizer(1000, extra=("<next>",))
    with pytest.raises(ValueError, match=r"already has action tokens \{'<next>': 1000\}"):
        extend_tokenizer(tok, 1000)


def test_extend_embedding_matrix_appends_mean_rows() -> None:
    torch.manual_seed(0)
    weight = torch.randn(7, 5)
    original = weight.clone()
    grown = extend_embedding_matrix(weight)
    assert grown.shape == (10, 5)
    assert torch.equal(grown[:7], original)
    expected_mean = original.mean(dim=0)
    for row in grown[7:]:
        torch.testing.assert_close(row, expected_mean)
    assert torch.equal(weight, original)  # input untouched
    assert grown.data_ptr() != weight.data_ptr()


def test_extend_embedding_matrix_fp16_mean_in_fp32() -> None:
    weight = torch.full((4096, 3), 1000.0, dtype=torch.float16)
    weight[0] = 3000.0
    grown = extend_embedding_matrix(weight, n_new=2)
    assert grown.dtype == torch.float16 and grown.shape == (4098, 3)
    expected = weight.float().mean(dim=0).half()
    assert torch.equal(grown[4096], expected) and torch.equal(grown[4097], expected)


def test_extend_embedding_matrix_keeps_tie_when_caller_shares_parameter() -> None:
    embed = torch.nn.Embedding(6, 4)
    head = torch.nn.Linear(4, 6, bias=False)
    head.weight = embed.weight
    shared = torch.nn.Parameter(extend_embedding_matrix(embed.weight))
    embed.weight = shared
    head.weight = shared
    assert embed.weight is head.weight and embed.weight.shape == (9, 4)
    assert embed.weight.requires_grad


@pytest.mark.parametrize(
    ("weight", "n_new", "message"),
    [
        (torch.zeros(5), 3, "non-empty \\[rows, hidden\\] matrix"),
        (torch.zeros(0, 4), 3, "non-empty \\[rows, hidden\\] matrix"),
        (torch.zeros(5, 4, dtype=torch.int64), 3, "floating point"),
        (torch.zeros(5, 4), 0, "n_new must be a positive int"),
    ],
)
def test_extend_embedding_matrix_rejects_bad_input(weight: torch.Tensor, n_new: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        extend_embedding_matrix(weight, n_new)


def test_save_load_round_trip(tmp_path: Path) -> None:
    ids = plan_action_token_ids(151666)
    path = save_action_tokens(tmp_path / "model", ids)
    assert path == tmp_path / "model" / ACTION_TOKENS_FILE
    assert json.loads(path.read_text()) == {
        "action_tokens": {"<next>": 151666, "<feedback>": 151667, "<correct>": 151668},
        "vocab_size": 151669,
    }
    assert load_action_tokens(tmp_path / "model") == ids


def test_load_absent_returns_none(tmp_path: Path) -> None:
    assert load_action_tokens(tmp_path) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2, 3]", "expected an object with keys 'action_tokens' and 'vocab_size'"),
        ('{"action_tokens": {"<next>": 5, "<feedback>": 6, "<correct>": 7}}', "expected an object with keys"),
        ('{"action_tokens": {"<next>": 5, "<feedback>": 6}, "vocab_size": 7}', "must map exactly"),
        ('{"action_tokens": {"<next>": 5, "<feedback>": 6, "<stop>": 7}, "vocab_size": 8}', "must map exactly"),
        ('{"action_tokens": {"<next>": "5", "<feedback>": 6, "<correct>": 7}, "vocab_size": 8}', "<next> must be"),
        ('{"action_tokens": {"<next>": 5, "<feedback>": 5, "<correct>": 7}, "vocab_size": 8}', "distinct"),
        ('{"action_tokens": {"<next>": 5, "<feedback>": 6, "<correct>": 7}, "vocab_size": 9}', "vocab_size is 9"),
    ],
)
def test_load_malformed_file_raises(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / ACTION_TOKENS_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as excinfo:
        load_action_tokens(tmp_path)
    assert ACTION_TOKENS_FILE in str(excinfo.value)
