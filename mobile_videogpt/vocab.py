"""The extended vocabulary in the reference model: growing the tokenizer and the embedding matrix.

The ids and names themselves (``<image>``, ``<next>``, ``<feedback>``, ``<correct>``, :class:`ActionTokenIds`, the
``action_tokens.json`` file) are defined once in :mod:`engine_format.vocab` and re-exported here. This module adds what
needs transformers or torch:

* :func:`extend_tokenizer` adds ``<image>`` (when missing) and the action tokens to a Hugging Face tokenizer at the
  planned ids;
* :func:`extend_embedding_matrix` grows the tied embedding / lm_head matrix by one mean-initialised row per token.
"""

from __future__ import annotations

import logging

import torch
from transformers import PreTrainedTokenizerBase

from engine_format.vocab import (  # noqa: F401 - re-exported: the one definition lives in engine_format
    ACTION_TOKENS,
    ACTION_TOKENS_FILE,
    IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    ActionTokenIds,
    load_action_tokens,
    plan_action_token_ids,
    save_action_tokens,
)

logger = logging.getLogger(__name__)


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
