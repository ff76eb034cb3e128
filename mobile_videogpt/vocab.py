"""The extended vocabulary: ``<image>`` and the coach's action tokens. The one place that defines them.

Id layout for Mobile-VideoGPT-0.5B (tied embedding / lm_head with 151,666 rows):

* 0..151642: Qwen byte-level BPE tokens; 151643..151664: Qwen2.5 control tokens (``len(tokenizer) == 151665``).
* 151665: ``<image>``, added as a special token in training (it explains the one extra embedding row). Prompts never
  encode it: they are split on the literal ``<image>`` and joined with :data:`IMAGE_TOKEN_INDEX` (-200), a sentinel
  that the multimodal splice replaces with visual features.
* 151666, 151667, 151668: ``<next>``, ``<feedback>``, ``<correct>`` -- new rows appended after every existing
  embedding row, so they can never collide with a trained row.

The embedding matrix grows by ``len(ACTION_TOKENS)`` rows initialised to the mean of the existing rows
(:func:`extend_embedding_matrix`); the chosen ids are recorded next to the checkpoint in :data:`ACTION_TOKENS_FILE`
(:func:`save_action_tokens` / :func:`load_action_tokens`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
"""Placeholder for visual features in prompt text."""

IMAGE_TOKEN_INDEX = -200
"""Sentinel id that stands for :data:`IMAGE_TOKEN` in ``input_ids`` (never an embedding row)."""

ACTION_TOKENS: tuple[str, str, str] = ("<next>", "<feedback>", "<correct>")
"""The coach's action tokens, in id order."""

ACTION_TOKENS_FILE = "action_tokens.json"
"""File, in a model directory, recording the action-token ids (see :func:`save_action_tokens`)."""

_FIELD_BY_TOKEN: dict[str, str] = {"<next>": "next", "<feedback>": "feedback", "<correct>": "correct"}


@dataclass(frozen=True)
class ActionTokenIds:
    """Ids of the action tokens ``<next>``, ``<feedback>``, ``<correct>``.

    Attributes:
        next: Id of ``<next>``.
        feedback: Id of ``<feedback>``.
        correct: Id of ``<correct>``.

    Raises:
        ValueError: On construction, if an id is not a non-negative ``int`` or two ids are equal.
    """

    next: int
    feedback: int
    correct: int

    def __post_init__(self) -> None:
        """Validates the ids.

        Raises:
            ValueError: If an id is not a non-negative ``int`` or the ids are not distinct.
        """
        for token, field_name in _FIELD_BY_TOKEN.items():
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"id of {token} must be a non-negative int, got {value!r}")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"action-token ids must be distinct, got {self.as_dict()}")

    @property
    def ids(self) -> tuple[int, int, int]:
        """The ids in :data:`ACTION_TOKENS` order."""
        return (self.next, self.feedback, self.correct)

    @property
    def vocab_size(self) -> int:
        """Embedding-row count after extension: one past the largest action-token id."""
        return max(self.ids) + 1

    def as_dict(self) -> dict[str, int]:
        """Maps each token string to its id.

        Returns:
            ``{"<next>": ..., "<feedback>": ..., "<correct>": ...}`` in :data:`ACTION_TOKENS` order.
        """
        return dict(zip(ACTION_TOKENS, self.ids))


def plan_action_token_ids(embedding_rows: int) -> ActionTokenIds:
    """Chooses the action-token ids for a model with ``embedding_rows`` embedding rows (before extension).

    The new ids are ``embedding_rows``, ``+1``, ``+2``: appended after every existing row, so they never collide with
    a trained row (the 0.5B checkpoint has 151,666 rows while Qwen2.5's tokenizer has 151,665 entries; row 151665 is
    ``<image>`` from training).

    Args:
        embedding_rows: Rows of the input embedding matrix before extension.

    Returns:
        The planned ids.

    Raises:
        ValueError: If ``embedding_rows`` is not a positive ``int``.
    """
    if isinstance(embedding_rows, bool) or not isinstance(embedding_rows, int) or embedding_rows <= 0:
        raise ValueError(f"embedding_rows must be a positive int, got {embedding_rows!r}")
    return ActionTokenIds(next=embedding_rows, feedback=embedding_rows + 1, correct=embedding_rows + 2)


def _token_ids(tokenizer: PreTrainedTokenizerBase, tokens: tuple[str, ...]) -> dict[str, int | None]:
    """Looks up whole-token ids (``None`` for a token that is not in the vocabulary).

    Args:
        tokenizer: Any Hugging Face tokenizer.
        tokens: Token strings to look up.

    Returns:
        Token -> id or ``None``.
    """
    vocab = tokenizer.get_vocab()
    return {token: vocab.get(token) for token in tokens}


def extend_tokenizer(tokenizer: PreTrainedTokenizerBase, embedding_rows: int) -> ActionTokenIds:
    """Adds ``<image>`` (when missing) and the action tokens as special tokens, at the planned ids.

    Steps:

    1. If all action tokens are already present with the ids planned for ``embedding_rows``, nothing changes
       (idempotent).
    2. If ``len(tokenizer) == embedding_rows - 1`` and ``<image>`` is missing (the case of Qwen2.5's 151,665-entry
       tokenizer and the 151,666-row checkpoint), ``<image>`` is added as a special token, taking id
       ``embedding_rows - 1``.
    3. ``len(tokenizer)`` must now equal ``embedding_rows``; the action tokens are added as special tokens and their
       assigned ids are checked against :func:`plan_action_token_ids`.

    The embedding matrix must be grown to match with :func:`extend_embedding_matrix`.

    Args:
        tokenizer: The model's tokenizer; modified in place.
        embedding_rows: Rows of the model's input embedding matrix *before* extension (151666 for the 0.5B model).

    Returns:
        The action-token ids.

    Raises:
        ValueError: If the tokenizer size does not fit ``embedding_rows``, the action tokens are present only in part
            or at other ids, or the tokenizer assigned ids other than the planned ones.
    """
    planned = plan_action_token_ids(embedding_rows)
    existing = _token_ids(tokenizer, ACTION_TOKENS)
    present = {token: token_id for token, token_id in existing.items() if token_id is not None}
    if present:
        if present == planned.as_dict():
            logger.debug("tokenizer already has the action tokens at %s", planned.as_dict())
            return planned
        raise ValueError(
            f"tokenizer already has action tokens {present}, but the plan for {embedding_rows} embedding rows is "
            f"{planned.as_dict()} (pass the row count before extension, or start from a tokenizer without them)"
        )

    if len(tokenizer) == embedding_rows - 1 and _token_ids(tokenizer, (IMAGE_TOKEN,))[IMAGE_TOKEN] is None:
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
        image_id = _token_ids(tokenizer, (IMAGE_TOKEN,))[IMAGE_TOKEN]
        if image_id != embedding_rows - 1:
            raise ValueError(f"{IMAGE_TOKEN} was assigned id {image_id}, expected {embedding_rows - 1}")
        logger.info("added %s to the tokenizer at id %d", IMAGE_TOKEN, image_id)

    if len(tokenizer) != embedding_rows:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} entries but the embedding matrix has {embedding_rows} rows; they must "
            f"match (or differ by one missing {IMAGE_TOKEN}) before action tokens can be added"
        )

    tokenizer.add_tokens(list(ACTION_TOKENS), special_tokens=True)
    assigned = _token_ids(tokenizer, ACTION_TOKENS)
    if assigned != planned.as_dict():
        raise ValueError(f"tokenizer assigned action-token ids {assigned}, expected {planned.as_dict()}")
    logger.info("added action tokens %s", planned.as_dict())
    return planned


def extend_embedding_matrix(weight: torch.Tensor, n_new: int = len(ACTION_TOKENS)) -> torch.Tensor:
    """Returns a copy of an embedding (or lm_head) matrix with ``n_new`` rows appended, each the mean of all rows.

    The mean is computed in fp32 and cast back to ``weight.dtype``; device and dtype are preserved and ``weight`` is
    not modified. With ``tie_word_embeddings`` the caller keeps the tie by assigning one ``nn.Parameter`` built from
    the result to both the input embedding and ``lm_head``.

    Args:
        weight: ``[rows, hidden]`` matrix.
        n_new: Number of rows to append (default: one per action token).

    Returns:
        A new ``[rows + n_new, hidden]`` tensor (no autograd history).

    Raises:
        ValueError: If ``weight`` is not a non-empty 2-D floating-point tensor or ``n_new`` is not a positive ``int``.
    """
    if weight.ndim != 2 or weight.shape[0] == 0:
        raise ValueError(f"weight must be a non-empty [rows, hidden] matrix, got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must be floating point, got {weight.dtype}")
    if isinstance(n_new, bool) or not isinstance(n_new, int) or n_new <= 0:
        raise ValueError(f"n_new must be a positive int, got {n_new!r}")
    with torch.no_grad():
        mean_row = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
        return torch.cat([weight.detach(), mean_row.expand(n_new, -1)], dim=0)


def save_action_tokens(model_dir: Path, ids: ActionTokenIds) -> Path:
    """Writes :data:`ACTION_TOKENS_FILE` into ``model_dir``.

    Format: ``{"action_tokens": {"<next>": id, "<feedback>": id, "<correct>": id}, "vocab_size": rows}``.

    Args:
        model_dir: Model directory; created if missing.
        ids: The action-token ids.

    Returns:
        Path of the written file.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / ACTION_TOKENS_FILE
    payload = {"action_tokens": ids.as_dict(), "vocab_size": ids.vocab_size}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", path)
    return path


def _parse_action_tokens(payload: Any, path: Path) -> ActionTokenIds:
    """Validates the parsed content of an action-token file.

    Args:
        payload: Parsed JSON.
        path: The file, for error messages.

    Returns:
        The ids.

    Raises:
        ValueError: If the content does not have the expected keys, token names or consistent ``vocab_size``.
    """
    if not isinstance(payload, dict) or set(payload) != {"action_tokens", "vocab_size"}:
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: expected an object with keys 'action_tokens' and 'vocab_size', got {keys}")
    tokens = payload["action_tokens"]
    if not isinstance(tokens, dict) or set(tokens) != set(ACTION_TOKENS):
        found = sorted(tokens) if isinstance(tokens, dict) else type(tokens).__name__
        raise ValueError(f"{path}: 'action_tokens' must map exactly {list(ACTION_TOKENS)} to ids, got {found}")
    try:
        ids = ActionTokenIds(**{_FIELD_BY_TOKEN[token]: tokens[token] for token in ACTION_TOKENS})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    vocab_size = payload["vocab_size"]
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size != ids.vocab_size:
        raise ValueError(
            f"{path}: vocab_size is {vocab_size!r} but the largest action-token id implies {ids.vocab_size}"
        )
    return ids


def load_action_tokens(model_dir: Path) -> ActionTokenIds | None:
    """Reads :data:`ACTION_TOKENS_FILE` from ``model_dir``.

    Args:
        model_dir: Model directory.

    Returns:
        The ids, or ``None`` if the directory has no such file (a model without action tokens).

    Raises:
        ValueError: If the file is not valid JSON or its content is malformed (see :func:`save_action_tokens`).
    """
    path = Path(model_dir) / ACTION_TOKENS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    return _parse_action_tokens(payload, path)
