"""The real Qwen2.5 tokenizer, rebuilt offline from the ranks shipped in the ``dashscope`` wheel.

Mobile-VideoGPT uses Qwen2.5's byte-level BPE tokenizer. Its Hugging Face files cannot be downloaded here, but the
same 151,643 mergeable ranks ship as ``dashscope/resources/qwen.tiktoken`` inside the ``dashscope`` PyPI package.
This module turns those ranks into a Hugging Face fast tokenizer (``tokenizers`` byte-level BPE) that reproduces
Qwen2.5's ids exactly, adds Qwen2.5's 22 control tokens (ids 151643..151664, so ``len(tokenizer) == 151665``) and
the ChatML chat template, and can save it so that ``transformers.AutoTokenizer.from_pretrained`` loads it offline.

How the ranks become a BPE model (the standard tiktoken -> Hugging Face conversion):

* Each token's bytes are written in GPT-2's byte-to-unicode alphabet; its vocabulary id is its rank.
* For every token longer than one byte, each split into two existing tokens becomes a merge. Merges are ordered by
  the rank of the token they produce (ties by the ranks of the two parts), which is exactly tiktoken's rule "merge
  the adjacent pair whose concatenation has the lowest rank".
* ``ignore_merges=True``: a pre-tokenised piece that is itself a token is emitted whole, as tiktoken does.

Pipeline: NFC normaliser (as Qwen2's tokenizer), Qwen's split regex (single digits), ByteLevel pre-tokeniser and
decoder, no BOS. Text that is not NFC-normalised therefore decodes to its NFC form, as with the real tokenizer.

Only the ``dashscope`` package *folder* is used; the package itself is never imported (its runtime dependencies are
heavy and not installed: ``pip install --no-deps dashscope``).
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import logging
import time
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen / Qwen2 pre-tokenisation pattern (digits are split one by one)."""

QWEN_NUM_REGULAR_TOKENS = 151_643
"""Number of byte-level BPE ranks in ``qwen.tiktoken`` (ids 0..151642)."""

QWEN2_5_CONTROL_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
"""Qwen2.5's control tokens in id order (151643..151664), with the ``special`` flag of Qwen2.5's tokenizer config.

All are added tokens (never split by BPE). As in Qwen2.5, the tool-call and fill-in-the-middle tokens are not marked
special, so ``decode(..., skip_special_tokens=True)`` keeps them.
"""

QWEN2_5_VOCAB_LEN = QWEN_NUM_REGULAR_TOKENS + len(QWEN2_5_CONTROL_TOKENS)
"""``len(tokenizer)`` of Qwen2.5: 151,665."""

ENDOFTEXT_TOKEN = "<|endoftext|>"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
MODEL_MAX_LENGTH = 131_072

QWEN_CHATML_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('Unsupported chat role: ' + message['role'] + ' (expected system, user or assistant)') }}"
    "{%- endif %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)
"""Qwen2.5's ChatML template without the tool-calling branches, default system prompt "You are a helpful assistant."
(the Qwen2 / Mobile-VideoGPT ``conv_qwen`` system text).

For system/user/assistant messages it renders exactly what Qwen2.5's template renders when no tools are given.
"""

SAVED_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
"""``tokenizer_class`` written to ``tokenizer_config.json``: loads the saved ``tokenizer.json`` verbatim (keeping
``ignore_merges``) through ``AutoTokenizer`` in transformers 4.x and 5.x alike."""

_VOCAB_RELATIVE_PATH = Path("resources") / "qwen.tiktoken"


def find_qwen_vocab_file() -> Path:
    """Locates ``resources/qwen.tiktoken`` inside the installed ``dashscope`` package without importing it.

    Returns:
        Absolute path of the tiktoken rank file.

    Raises:
        FileNotFoundError: If ``dashscope`` is not installed or its folder has no ``resources/qwen.tiktoken``.
    """
    install_hint = "Install the package without its heavy dependencies: `pip install --no-deps dashscope`."
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The Qwen vocabulary ships in the `dashscope` package, which is not installed. {install_hint}"
        )
    searched: list[str] = []
    for location in spec.submodule_search_locations:
        candidate = Path(location) / _VOCAB_RELATIVE_PATH
        if candidate.is_file():
            return candidate.resolve()
        searched.append(str(candidate))
    raise FileNotFoundError(
        f"`dashscope` is installed but has no {_VOCAB_RELATIVE_PATH.as_posix()} (looked at: {', '.join(searched)}). "
        f"Reinstall it: `pip install --force-reinstall --no-deps dashscope`."
    )


def load_tiktoken_ranks(vocab_file: Path) -> dict[bytes, int]:
    """Reads a tiktoken rank file (lines ``base64(token_bytes) rank``).

    Args:
        vocab_file: Path of the ``.tiktoken`` file.

    Returns:
        Token bytes -> rank, in rank order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If a line is malformed, a token or rank repeats, or the ranks are not exactly 0..N-1.
    """
    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise FileNotFoundError(f"tiktoken rank file not found: {vocab_file}")
    ranks: dict[bytes, int] = {}
    with vocab_file.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{vocab_file}:{line_no}: expected 'base64_token rank', got {line[:80]!r}")
            try:
                token = base64.b64decode(fields[0], validate=True)
                rank = int(fields[1])
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"{vocab_file}:{line_no}: cannot parse {line[:80]!r}: {exc}") from exc
            if token in ranks:
                raise ValueError(f"{vocab_file}:{line_no}: token {token!r} appears twice")
            ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{vocab_file}: ranks are not a permutation of 0..{len(ranks) - 1}")
    return dict(sorted(ranks.items(), key=lambda item: item[1]))


def _byte_to_unicode_table() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map used by byte-level BPE.

    Returns:
        A 256-entry map from byte value to its one-character stand-in.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table: dict[int, str] = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


def tiktoken_ranks_to_bpe(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Derives a byte-level BPE vocabulary and merge list that reproduce tiktoken's encoding of ``ranks``.

    For each token longer than one byte, every split into two existing tokens becomes a merge; merges are ordered by
    the rank of the produced token, then by the ranks of its two parts (the standard tiktoken -> HF conversion, as in
    ``transformers.convert_slow_tokenizer.TikTokenConverter``).

    Args:
        ranks: Token bytes -> rank; ranks must be 0..N-1 and all 256 single bytes must be present.

    Returns:
        ``(vocab, merges)``: byte-level-unicode token string -> id, and the ordered merge pairs.

    Raises:
        ValueError: If a single byte is missing from ``ranks``.
    """
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"tiktoken ranks lack {len(missing)} single-byte tokens (e.g. byte {missing[0]}); "
                         "byte-level BPE needs all 256")
    table = str.maketrans(_byte_to_unicode_table())
    as_text = {token: token.decode("latin-1").translate(table) for token in ranks}
    vocab = {as_text[token]: rank for token, rank in ranks.items()}

    merges: list[tuple[str, str]] = []
    unreachable = 0
    get_rank = ranks.get
    for token, _rank in sorted(ranks.items(), key=lambda item: item[1]):
        n = len(token)
        if n == 1:
            continue
        splits: list[tuple[int, int, bytes, bytes]] = []
        for i in range(1, n):
            left = token[:i]
            left_rank = get_rank(left)
            if left_rank is None:
                continue
            right = token[i:]
            right_rank = get_rank(right)
            if right_rank is None:
                continue
            splits.append((left_rank, right_rank, left, right))
        if not splits:
            unreachable += 1
            continue
        if len(splits) > 1:
            splits.sort()
        merges.extend((as_text[left], as_text[right]) for _, _, left, right in splits)
    if unreachable:
        logger.debug("%d multi-byte tokens have no two-part split (reachable only as whole pieces)", unreachable)
    return vocab, merges


def _build_backend(ranks: dict[bytes, int]) -> Tokenizer:
    """Builds the ``tokenizers`` backend: BPE from ``ranks`` plus Qwen's normaliser, splitter and control tokens.

    Args:
        ranks: The 151,643 Qwen ranks.

    Returns:
        The backend tokenizer with the 22 control tokens at ids 151643..151664.

    Raises:
        ValueError: If a control token does not land on its Qwen2.5 id.
    """
    vocab, merges = tiktoken_ranks_to_bpe(ranks)
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=True))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_tokens(
        [AddedToken(name, special=special, normalized=False) for name, special in QWEN2_5_CONTROL_TOKENS]
    )
    for offset, (name, _special) in enumerate(QWEN2_5_CONTROL_TOKENS):
        expected = QWEN_NUM_REGULAR_TOKENS + offset
        actual = backend.token_to_id(name)
        if actual != expected:
            raise ValueError(f"control token {name} got id {actual}, Qwen2.5 has it at {expected}")
    return backend


def build_qwen2_tokenizer(out_dir: Path | None = None) -> PreTrainedTokenizerFast:
    """Builds the Qwen2.5 tokenizer from ``dashscope``'s ``qwen.tiktoken`` (offline, a few seconds).

    The result encodes exactly as Qwen2.5 (e.g. ``"Hello world"`` -> ``[9707, 1879]``), has ``len == 151665``,
    eos ``<|im_end|>`` (151645), pad ``<|endoftext|>`` (151643), no bos, and a ChatML ``chat_template``.

    Args:
        out_dir: If given, the tokenizer is saved there (``tokenizer.json``, ``tokenizer_config.json``, chat
            template) so that ``transformers.AutoTokenizer.from_pretrained(out_dir)`` loads it offline. Nothing is
            cached anywhere else.

    Returns:
        The fast tokenizer.

    Raises:
        FileNotFoundError: If ``dashscope`` (or its rank file) is not installed.
        ValueError: If the rank file does not hold Qwen's 151,643 ranks.
    """
    start = time.perf_counter()
    vocab_file = find_qwen_vocab_file()
    ranks = load_tiktoken_ranks(vocab_file)
    if len(ranks) != QWEN_NUM_REGULAR_TOKENS:
        raise ValueError(f"{vocab_file} holds {len(ranks)} ranks; the Qwen vocabulary has {QWEN_NUM_REGULAR_TOKENS}")
    backend = _build_backend(ranks)
    special_names = [name for name, special in QWEN2_5_CONTROL_TOKENS if special]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token=IM_END_TOKEN,
        pad_token=ENDOFTEXT_TOKEN,
        unk_token=None,
        additional_special_tokens=[name for name in special_names if name != ENDOFTEXT_TOKEN],
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=MODEL_MAX_LENGTH,
        chat_template=QWEN_CHATML_TEMPLATE,
    )
    if len(tokenizer) != QWEN2_5_VOCAB_LEN:
        raise ValueError(f"built tokenizer has {len(tokenizer)} entries, expected {QWEN2_5_VOCAB_LEN}")
    logger.info("built the Qwen2.5 tokenizer from %s in %.2f s", vocab_file, time.perf_counter() - start)
    if out_dir is not None:
        save_tokenizer(tokenizer, out_dir)
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> Path:
    """Saves a fast tokenizer so that ``AutoTokenizer.from_pretrained(out_dir)`` reloads it offline, verbatim.

    ``save_pretrained`` records the runtime class name (``TokenizersBackend`` in transformers 5); it is replaced by
    :data:`SAVED_TOKENIZER_CLASS`, which resolves in transformers 4 and 5 and loads ``tokenizer.json`` as saved.

    Args:
        tokenizer: The tokenizer (e.g. from :func:`build_qwen2_tokenizer`, possibly extended).
        out_dir: Target folder; created if missing.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        FileNotFoundError: If ``save_pretrained`` wrote no ``tokenizer_config.json``.
    """
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    config_file = out_dir / "tokenizer_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"save_pretrained wrote no {config_file}")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = SAVED_TOKENIZER_CLASS
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("saved the tokenizer to %s", out_dir)
    return out_dir
