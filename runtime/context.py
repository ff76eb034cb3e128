"""The decoder's KV context across windows: a fixed system prefix, then one chat turn per window, bounded.

Layout of the cache (cache index == RoPE position, always ``0 .. length-1``)::

    [system turn (+ coaching instruction)] [window a: user header, 2402 visual rows, question, assistant header,
                                            action token (+ feedback text), <|im_end|>\\n] [window b: ...] ...

* **Appending a window** runs one ``decode`` over ``pending closure + window_prefix + visual rows + window_suffix``
  (token ids and the backend's own feature arrays, so a GPU backend embeds and concatenates on the device) and
  returns the logits at the last position, whose action-token entries decide the action. The turn is closed
  with ``<action><|im_end|>\\n``; those ids are *deferred* and fed at the front of the next window's append, which
  saves one decoder call per window (the logits of the closing tokens are never needed).
* **Feedback** extends the last window's turn token by token (``extend``), continuing after the ``<feedback>``
  token in the same cache, so the text is conditioned on every window still in the context.
* **Eviction** (``max_windows``, ``max_tokens``): the oldest window's KV range is dropped and every later key is
  re-rotated ``length`` positions down (``KVCache.shift_positions(-length, start)``, in place), so positions stay
  contiguous,
  the system prefix is never recomputed, and no position ever reaches ``max_tokens`` (itself checked against the
  model's ``max_position_embeddings``). Re-basing is exact for RoPE; what eviction cannot undo is that the kept
  windows' deeper-layer KV was computed while the evicted window was visible (the StreamingLLM-style trade-off;
  a bit-exact alternative is re-prefilling the kept windows, which costs a full prefill per eviction).
* **Clearing** drops every window but keeps the prefix: after each feedback (``clear_after_feedback``) so the next
  feedback is not conditioned on the previous one, and on a *stream-time gap* larger than ``timeout_s`` between the
  newest window in the context and the next window (stalled camera, long latest-wins skip), because windows in one
  context are presented to the model as consecutive turns. A timeout since the last clear was rejected: eviction
  already bounds the context, so an age limit would only throw away useful recent windows.

Events (``ContextEvicted``, ``ContextCleared``) go to the ``on_event`` callback.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine_format.prompt import StreamingPromptIds
from runtime.backends.base import Array, ModelBackend
from runtime.backends.kv import KVCache
from runtime.config import ConfigError, ContextConfig
from runtime.events import ContextCleared, ContextEvicted, Event
from runtime.windowing import Window

logger = logging.getLogger(__name__)


class ContextError(RuntimeError):
    """The context was used out of order (e.g. generation with no window in it)."""


@dataclass
class WindowSpan:
    """Where one window's turn lives in the cache.

    Attributes:
        window_index: The window.
        start: Cache index of its first token.
        length: Tokens fed so far for its turn (visual rows, text, action, feedback, closing tokens).
        t_start: Window start in stream seconds.
        t_end: Window end in stream seconds.
    """

    window_index: int
    start: int
    length: int
    t_start: float
    t_end: float


class DecoderContext:
    """Holds the decoder KV cache across windows within the configured limits.

    Args:
        backend: The model backend (owns the KV storage).
        prompt: The streaming conversation's token pieces (``system_ids`` is the fixed prefix).
        cfg: The ``context`` config section.
        reserve_tokens: Positions kept free after each window for its action and a feedback
            (``1 + max_new_tokens + len(turn_end_ids)``), so generation never crosses ``max_tokens``.
        on_event: Receives ``ContextEvicted`` / ``ContextCleared`` events.

    Raises:
        ConfigError: If ``context.max_tokens`` exceeds the model's ``max_position_embeddings``.
    """

    def __init__(
        self,
        backend: ModelBackend,
        prompt: StreamingPromptIds,
        cfg: ContextConfig,
        *,
        reserve_tokens: int = 0,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        limit = backend.max_position_embeddings
        if cfg.max_tokens > limit:
            raise ConfigError(
                f"context.max_tokens = {cfg.max_tokens}: must be <= the model's max_position_embeddings ({limit})"
            )
        if reserve_tokens < 0:
            raise ValueError(f"reserve_tokens = {reserve_tokens}: must be >= 0")
        self.backend = backend
        self.prompt = prompt
        self.cfg = cfg
        self.reserve_tokens = reserve_tokens
        self._on_event = on_event
        self._kv: KVCache | None = None
        self._prefix_len = len(prompt.system_ids)
        self._windows: list[WindowSpan] = []
        self._pending: list[int] = []
        self.evictions: Counter[str] = Counter()
        self.clears: Counter[str] = Counter()

    # ------------------------------------------------------------------ state
    @property
    def length(self) -> int:
        """Positions in the cache (prefix included)."""
        return 0 if self._kv is None else self._kv.length

    @property
    def kv_bytes(self) -> int:
        """Bytes held by the KV cache."""
        return 0 if self._kv is None else self._kv.nbytes

    @property
    def kv(self) -> KVCache | None:
        """The current cache (``None`` before the prefix is prefilled)."""
        return self._kv

    @property
    def windows(self) -> list[WindowSpan]:
        """The windows in the context, oldest first (copies)."""
        return [WindowSpan(**vars(w)) for w in self._windows]

    @property
    def prefix_length(self) -> int:
        """Positions of the fixed system prefix."""
        return self._prefix_len

    def window_tokens(self, visual_rows: int) -> int:
        """Positions one window's append adds (without deferred closing tokens)."""
        return len(self.prompt.window_prefix_ids) + visual_rows + len(self.prompt.window_suffix_ids)

    def check_fits(self, visual_rows: int) -> None:
        """Checks that the prefix, one window and the reserve fit in ``max_tokens``.

        Raises:
            ConfigError: Naming ``context.max_tokens`` and the size needed.
        """
        needed = self._prefix_len + self.window_tokens(visual_rows) + self.reserve_tokens
        if needed > self.cfg.max_tokens:
            raise ConfigError(
                f"context.max_tokens = {self.cfg.max_tokens}: must be >= {needed} (system prefix "
                f"{self._prefix_len} + one window {self.window_tokens(visual_rows)} + action/feedback reserve "
                f"{self.reserve_tokens})"
            )

    # ------------------------------------------------------------------ operations
    def prefill_prefix(self) -> None:
        """Allocates the KV cache (``max_tokens`` positions) and runs the system prefix through the decoder once.

        Done lazily by the first append otherwise.
        """
        if self._kv is not None:
            return
        self._kv = self.backend.allocate_kv(self.cfg.max_tokens)
        self.backend.decode([list(self.prompt.system_ids)], self._kv)
        logger.debug("prefilled the %d-token system prefix (%d KV bytes)", self._kv.length, self._kv.nbytes)

    def append_window(self, window: Window, visual: Sequence[Array], visual_rows: int) -> np.ndarray:
        """Appends one window's turn up to the action query and returns the next-token logits there.

        Clears on a stream-time gap above ``timeout_s`` and evicts the oldest windows as needed first.

        Args:
            window: The window (its times drive the timeout).
            visual: The visual rows in order, as backend arrays (image tokens ``[16, 144, H]``, then video tokens
                ``[2, 49, H]``: 2402 rows at the release geometry).
            visual_rows: Their total row count.

        Returns:
            Logits ``[V]`` (float32) at the last position.

        Raises:
            ConfigError: If one window cannot fit in ``max_tokens``.
        """
        self.prefill_prefix()
        if self._windows and window.t_start - self._windows[-1].t_end > self.cfg.timeout_s:
            gap = window.t_start - self._windows[-1].t_end
            logger.info("context timeout: %.2f s gap before window %d", gap, window.index)
            self.clear("timeout", window.index)
        self.check_fits(visual_rows)
        new_tokens = self.window_tokens(visual_rows)
        while self._windows:
            if len(self._windows) >= self.cfg.max_windows:
                self._evict_oldest("max_windows")
            elif self.length + len(self._pending) + new_tokens + self.reserve_tokens > self.cfg.max_tokens:
                self._evict_oldest("max_tokens")
            else:
                break

        assert self._kv is not None
        segments = [self._pending + list(self.prompt.window_prefix_ids), *visual, list(self.prompt.window_suffix_ids)]
        start = self.length + len(self._pending)
        logits = self.backend.decode(segments, self._kv)
        if self._pending:
            self._windows[-1].length += len(self._pending)
            self._pending = []
        self._windows.append(WindowSpan(window.index, start, new_tokens, window.t_start, window.t_end))
        return logits

    def close_turn(self, action_id: int) -> None:
        """Ends the last window's turn with ``action_id`` (deferred to the next append; see the module docstring)."""
        if not self._windows:
            raise ContextError("close_turn called with no window in the context")
        self._pending = [int(action_id), *self.prompt.turn_end_ids]

    def extend(self, ids: Sequence[int]) -> np.ndarray:
        """Feeds tokens into the last window's turn (the ``<feedback>`` token, then each generated token).

        Args:
            ids: Token ids to feed.

        Returns:
            Logits ``[V]`` after the last one.

        Raises:
            ContextError: With no window in the context, or when the reserve is exhausted.
        """
        if not self._windows or self._kv is None:
            raise ContextError("extend called with no window in the context")
        if self._pending:
            raise ContextError("extend called after the turn was closed")
        if self.length + len(ids) > self.cfg.max_tokens:
            raise ContextError(
                f"feedback would exceed context.max_tokens ({self.cfg.max_tokens}); the reserve of "
                f"{self.reserve_tokens} tokens is too small for it"
            )
        logits = self.backend.decode([list(ids)], self._kv)
        self._windows[-1].length += len(ids)
        return logits

    def end_feedback(self, last_token: int | None, window_index: int) -> None:
        """Closes the turn after a feedback; clears the windows if ``clear_after_feedback``.

        Args:
            last_token: The last generated token if it was not fed yet and is part of the text (``None`` when
                generation ended on a stop token).
            window_index: The window that asked for the feedback (for the event).
        """
        if self.cfg.clear_after_feedback:
            self.clear("feedback", window_index)
            return
        closing = [] if last_token is None else [int(last_token)]
        self._pending = closing + list(self.prompt.turn_end_ids)

    def clear(self, reason: str, window_index: int | None = None) -> None:
        """Drops every window (the system prefix stays cached) and emits ``ContextCleared``.

        Args:
            reason: One of ``runtime.events.CONTEXT_CLEAR_REASONS``.
            window_index: The window that caused it, if any.
        """
        event = ContextCleared(reason, window_index)  # validates the reason before changing anything
        if self._kv is not None and self._kv.length > self._prefix_len:
            self._kv.truncate(self._prefix_len)
        self._windows = []
        self._pending = []
        self.clears[reason] += 1
        self._emit(event)

    def _evict_oldest(self, reason: str) -> None:
        assert self._kv is not None
        oldest = self._windows.pop(0)
        end = oldest.start + oldest.length
        self._kv.drop(oldest.start, end)
        self._kv.shift_positions(-oldest.length, start=oldest.start)
        for span in self._windows:
            span.start -= oldest.length
        if not self._windows:
            self._pending = []  # the closing tokens belonged to the evicted window
        self.evictions[reason] += 1
        logger.debug("evicted window %d (%d tokens, %s)", oldest.window_index, oldest.length, reason)
        self._emit(ContextEvicted(oldest.window_index, reason, oldest.length))

    def _emit(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)

