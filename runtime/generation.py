"""The runtime's one greedy decode loop (feedback text, and the parity harness's free-running check).

:func:`greedy_decode` picks the arg-max token, stops at a stop id (which is neither yielded nor fed) or after
``max_new_tokens``, and feeds each yielded token back only when another token will follow: the last one of a text cut
by ``max_new_tokens`` is left unfed, so the caller decides whether the closing turn feeds it
(:attr:`GreedyState.last_unfed`). The reference model keeps its own loop (``MobileVideoGPT.generate``) over torch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

Feed = Callable[[Sequence[int]], np.ndarray]
"""Feeds token ids to the decoder (in place on its KV cache) and returns the logits ``[V]`` after the last one."""


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
    logits: np.ndarray, feed: Feed, max_new_tokens: int, stop_ids: Collection[int], state: GreedyState
) -> Iterator[int]:
    """Greedy decoding from ``logits`` (the decoder's output at the last fed position).

    Args:
        logits: ``[V]`` logits the first token is chosen from.
        feed: Feeds ids and returns the next logits.
        max_new_tokens: Upper bound on generated ids.
        stop_ids: Ids that end the text.
        state: Filled as the loop runs.

    Yields:
        Each generated id, before it is fed.
    """
    for step in range(max_new_tokens):
        token = int(np.argmax(logits))
        if token in stop_ids:
            state.stopped = True
            return
        state.ids.append(token)
        yield token
        if step + 1 < max_new_tokens:
            logits = feed([token])
            state.fed += 1
