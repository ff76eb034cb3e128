"""``<image>`` and the coach's action tokens: the one place that defines them and their ids.

Id layout for Mobile-VideoGPT-0.5B (tied embedding / lm_head with 151,666 rows):

* 0..151642: Qwen byte-level BPE tokens; 151643..151664: Qwen2.5 control tokens (``len(tokenizer) == 151665``).
* 151665: ``<image>``, added as a special token in training (it explains the one extra embedding row). Prompts never
  encode it: they are split on the literal ``<image>`` and joined with :data:`IMAGE_TOKEN_INDEX` (-200), a sentinel
  that the multimodal splice replaces with visual features.
* 151666, 151667, 151668: ``<next>``, ``<feedback>``, ``<correct>`` -- new rows appended after every existing
  embedding row, so they can never collide with a trained row.

The ids chosen are recorded next to a checkpoint (and in every engines directory) in :data:`ACTION_TOKENS_FILE`.
Growing the embedding matrix and the tokenizer is the reference package's job (``mobile_videogpt.vocab``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine_format import FormatError

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
"""Placeholder for visual features in prompt text."""

IMAGE_TOKEN_INDEX = -200
"""Sentinel id that stands for :data:`IMAGE_TOKEN` in ``input_ids`` (never an embedding row)."""

ACTION_TOKENS: tuple[str, str, str] = ("<next>", "<feedback>", "<correct>")
"""The coach's action tokens, in id order (also the order of every action-logit triple)."""

NEXT, FEEDBACK, CORRECT = ACTION_TOKENS

ACTION_TOKENS_FILE = "action_tokens.json"
"""File, in a model or tokenizer directory, recording the action-token ids (see :func:`save_action_tokens`)."""

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

    def id_of(self, token: str) -> int:
        """The id of one action token.

        Raises:
            KeyError: If ``token`` is not one of :data:`ACTION_TOKENS`.
        """
        if token not in ACTION_TOKENS:
            raise KeyError(f"{token!r} is not an action token ({', '.join(ACTION_TOKENS)})")
        return self.ids[ACTION_TOKENS.index(token)]

    def as_dict(self) -> dict[str, int]:
        """``{"<next>": ..., "<feedback>": ..., "<correct>": ...}`` in :data:`ACTION_TOKENS` order."""
        return dict(zip(ACTION_TOKENS, self.ids))

    @classmethod
    def from_dict(cls, tokens: Any, where: str) -> ActionTokenIds:
        """Parses ``{"<next>": id, ...}``.

        Args:
            tokens: The mapping.
            where: File or key named in errors.

        Raises:
            FormatError: If the mapping does not hold exactly the three tokens with valid ids.
        """
        if not isinstance(tokens, dict) or set(tokens) != set(ACTION_TOKENS):
            found = sorted(tokens) if isinstance(tokens, dict) else type(tokens).__name__
            raise FormatError(f"{where}: must map exactly {list(ACTION_TOKENS)} to ids, got {found}")
        try:
            return cls(**{_FIELD_BY_TOKEN[token]: tokens[token] for token in ACTION_TOKENS})
        except ValueError as exc:
            raise FormatError(f"{where}: {exc}") from exc


def plan_action_token_ids(embedding_rows: int) -> ActionTokenIds:
    """Chooses the action-token ids for a model with ``embedding_rows`` embedding rows (before extension).

    The new ids are ``embedding_rows``, ``+1``, ``+2``: appended after every existing row, so they never collide with
    a trained row (the 0.5B checkpoint has 151,666 rows while Qwen2.5's tokenizer has 151,665 entries; row 151665 is
    ``<image>`` from training).

    Raises:
        ValueError: If ``embedding_rows`` is not a positive ``int``.
    """
    if isinstance(embedding_rows, bool) or not isinstance(embedding_rows, int) or embedding_rows <= 0:
        raise ValueError(f"embedding_rows must be a positive int, got {embedding_rows!r}")
    return ActionTokenIds(next=embedding_rows, feedback=embedding_rows + 1, correct=embedding_rows + 2)


def save_action_tokens(directory: Path, ids: ActionTokenIds) -> Path:
    """Writes :data:`ACTION_TOKENS_FILE` into ``directory`` (created if missing).

    Format: ``{"action_tokens": {"<next>": id, "<feedback>": id, "<correct>": id}, "vocab_size": rows}``.

    Returns:
        Path of the written file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ACTION_TOKENS_FILE
    payload = {"action_tokens": ids.as_dict(), "vocab_size": ids.vocab_size}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", path)
    return path


def parse_action_tokens(payload: Any, path: Path) -> ActionTokenIds:
    """Validates the parsed content of an action-token file.

    Raises:
        FormatError: If the content does not have the expected keys, token names or consistent ``vocab_size``.
    """
    if not isinstance(payload, dict) or set(payload) != {"action_tokens", "vocab_size"}:
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise FormatError(f"{path}: expected an object with keys 'action_tokens' and 'vocab_size', got {keys}")
    ids = ActionTokenIds.from_dict(payload["action_tokens"], f"{path}: 'action_tokens'")
    vocab_size = payload["vocab_size"]
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size != ids.vocab_size:
        raise FormatError(
            f"{path}: vocab_size is {vocab_size!r} but the largest action-token id implies {ids.vocab_size}"
        )
    return ids


def load_action_tokens(directory: Path) -> ActionTokenIds | None:
    """Reads :data:`ACTION_TOKENS_FILE` from ``directory``.

    Returns:
        The ids, or ``None`` if the directory has no such file (a model without action tokens).

    Raises:
        FormatError: If the file is not valid JSON or its content is malformed.
    """
    path = Path(directory) / ACTION_TOKENS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path} is not valid JSON: {exc}") from exc
    return parse_action_tokens(payload, path)
