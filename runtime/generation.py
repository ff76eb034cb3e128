"""The runtime's one greedy decode loop (feedback text, and the parity harness's free-running check).

:func:`greedy_decode` runs the logits processors (the repetition penalty of the checkpoint's generation config, over
the ids generated in this text), picks the arg-max token, stops at a stop id (which is neither yielded nor fed) or
after ``max_new_tokens``, and feeds each yielded token back only when another token will follow: the last one of a
text cut by ``max_new_tokens`` is left unfed, so the caller decides whether the closing turn feeds it
(:attr:`GreedyState.last_unfed`). The reference model keeps its own loop (``MobileVideoGPT.generate``) over torch;
both apply the one penalty function, :func:`engine_format.generation.apply_repetition_penalty`.

:func:`resolve_generation` decides the settings once per session. Precedence, per value: the ``generation.*`` key of
``streaming_config.yaml`` when it is set (not null), else the checkpoint's ``generation_config.json`` (recorded in
the engines' manifest; stop ids fall back to ``config.json``'s ``eos_token_id``), else the defaults here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine_format import FormatError
from engine_format.generation import CheckpointGeneration, apply_repetition_penalty
from runtime.config import ConfigError, GenerationConfig

logger = logging.getLogger(__name__)

Feed = Callable[[Sequence[int]], np.ndarray]
"""Feeds token ids to the decoder (in place on its KV cache) and returns the logits ``[V]`` after the last one."""

LogitsProcessor = Callable[[Sequence[int], np.ndarray], np.ndarray]
"""``(ids generated so far, logits [V]) -> logits [V]``, applied before the arg-max (HF ``LogitsProcessor`` order)."""

DEFAULT_MAX_NEW_TOKENS = 24
"""Feedback budget when neither the config nor the checkpoint sets one (one short coaching sentence)."""

DEFAULT_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""Stop tokens when neither the config nor the checkpoint names any (Qwen2.5's turn and document ends)."""


class RepetitionPenalty:
    """HF ``RepetitionPenaltyLogitsProcessor`` as a :data:`LogitsProcessor` (over the generated ids only).

    Args:
        penalty: > 0; 1.0 is no penalty.
    """

    def __init__(self, penalty: float) -> None:
        self.penalty = float(penalty)

    def __call__(self, generated: Sequence[int], logits: np.ndarray) -> np.ndarray:
        return apply_repetition_penalty(logits, generated, self.penalty)


@dataclass
class GreedyState:
    """What a :func:`greedy_decode` run did.

    Attributes:
        ids: Generated ids (a final stop id excluded).
        stopped: Generation ended on a stop id.
        fed: How many of ``ids`` were fed back to the decoder.
    """

    ids: list[int] = field(default_factory=list)
    stopped: bool = False
    fed: int = 0

    @property
    def last_unfed(self) -> bool:
        """The last generated id was not fed (generation hit ``max_new_tokens``)."""
        return len(self.ids) > self.fed


def greedy_decode(
    logits: np.ndarray,
    feed: Feed,
    max_new_tokens: int,
    stop_ids: Collection[int],
    state: GreedyState,
    processors: Sequence[LogitsProcessor] = (),
) -> Iterator[int]:
    """Greedy decoding from ``logits`` (the decoder's output at the last fed position).

    Args:
        logits: ``[V]`` logits the first token is chosen from.
        feed: Feeds ids and returns the next logits.
        max_new_tokens: Upper bound on generated ids.
        stop_ids: Ids that end the text.
        state: Filled as the loop runs.
        processors: Applied in order to each step's logits, with the ids generated so far, before the arg-max.

    Yields:
        Each generated id, before it is fed.
    """
    for step in range(max_new_tokens):
        for process in processors:
            logits = process(state.ids, logits)
        token = int(np.argmax(logits))
        if token in stop_ids:
            state.stopped = True
            return
        state.ids.append(token)
        yield token
        if step + 1 < max_new_tokens:
            logits = feed([token])
            state.fed += 1


class _SingleTokens(Protocol):
    def single_token_id(self, token: str, where: str) -> int: ...


@dataclass(frozen=True)
class GenerationSettings:
    """The feedback generation settings of one session, with where each came from.

    Attributes:
        max_new_tokens: Token budget per feedback.
        stop_ids: Ids that end a feedback (the session adds the action tokens).
        repetition_penalty: HF repetition penalty over the generated ids (1.0 = none).
        sources: ``{"max_new_tokens" | "stop" | "repetition_penalty": "config" | "checkpoint" | "default"}``.
    """

    max_new_tokens: int
    stop_ids: frozenset[int]
    repetition_penalty: float
    sources: dict[str, str]

    def processors(self) -> list[LogitsProcessor]:
        """The logits processors :func:`greedy_decode` runs (none at penalty 1.0: today's plain arg-max)."""
        return [] if self.repetition_penalty == 1.0 else [RepetitionPenalty(self.repetition_penalty)]

    def describe(self) -> str:
        """One readable line: each value and its source."""
        return (
            f"max_new_tokens {self.max_new_tokens} ({self.sources['max_new_tokens']}), "
            f"repetition_penalty {self.repetition_penalty:g} ({self.sources['repetition_penalty']}), "
            f"stop ids {sorted(self.stop_ids)} ({self.sources['stop']})"
        )


def _stop_ids(tokenizer: _SingleTokens, tokens: Sequence[str], key: str) -> list[int]:
    try:
        return [tokenizer.single_token_id(t, f"{key}[{i}]") for i, t in enumerate(tokens)]
    except FormatError as exc:
        raise ConfigError(str(exc)) from exc


def resolve_generation(
    config: GenerationConfig,
    checkpoint: CheckpointGeneration,
    checkpoint_eos: Sequence[int],
    tokenizer: _SingleTokens,
) -> GenerationSettings:
    """Applies the precedence (config key if set, else checkpoint, else default) to each value.

    Args:
        config: The ``generation`` section of the streaming config.
        checkpoint: The checkpoint's generation config (the backend's ``generation``).
        checkpoint_eos: The checkpoint's stop ids (``ModelFacts.eos_token_ids``: ``generation_config.json``'s, else
            ``config.json``'s ``eos_token_id``).
        tokenizer: Maps stop-token strings to ids.

    Raises:
        ConfigError: If a configured (or default) stop token is not a single token of the tokenizer.
    """
    sources: dict[str, str] = {}
    if config.max_new_tokens is not None:
        budget, sources["max_new_tokens"] = config.max_new_tokens, "config"
    elif checkpoint.max_new_tokens is not None:
        budget, sources["max_new_tokens"] = checkpoint.max_new_tokens, "checkpoint"
    else:
        budget, sources["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS, "default"
    if config.repetition_penalty is not None:
        penalty, sources["repetition_penalty"] = config.repetition_penalty, "config"
    elif checkpoint.repetition_penalty is not None:
        penalty, sources["repetition_penalty"] = checkpoint.repetition_penalty, "checkpoint"
    else:
        penalty, sources["repetition_penalty"] = 1.0, "default"
    if config.stop_tokens is not None:
        stop, sources["stop"] = _stop_ids(tokenizer, config.stop_tokens, "generation.stop_tokens"), "config"
    elif checkpoint_eos:
        stop, sources["stop"] = list(checkpoint_eos), "checkpoint"
    else:
        stop, sources["stop"] = _stop_ids(tokenizer, DEFAULT_STOP_TOKENS, "default stop tokens"), "default"
    settings = GenerationSettings(budget, frozenset(stop), float(penalty), sources)
    if checkpoint.source is not None:
        checkpoint.log_notes(f"checkpoint {checkpoint.source}")  # ignored fields at INFO, unsupported ones as a warning
    logger.info("feedback generation: %s", settings.describe())
    return settings
