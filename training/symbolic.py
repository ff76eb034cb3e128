"""A symbolic decoder backend: the runtime's decoder context lays out training sequences by itself.

:class:`SymbolicBackend` implements the decoder half of :class:`~runtime.backends.base.ModelBackend`: ``decode``
appends *entries* to a :class:`SymbolicKV` instead of computing anything. An entry is a token id (``>= 0``) or a
visual row ``(window key, row)`` (stored as ``-1 - window key`` plus the row). Because eviction, re-basing, clearing
and the deferred closing tokens are the runtime's own :class:`~runtime.context.DecoderContext` code acting on this
cache, the entries at an action query are exactly what the streaming decoder holds there (positions are the entry
indices: the context keeps them contiguous).

The visual encoders are not part of it (``encode_*`` raise): training takes visual rows from the feature cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine_format.geometry import ModelFacts
from engine_format.preprocess import ClipPreprocessConfig
from engine_format.vocab import ActionTokenIds
from runtime.backends.base import ImageFeatures, ModelBackend, Segment
from runtime.backends.kv import KVCache


@dataclass(frozen=True)
class VisualRef:
    """Stands for one window's visual rows in a decode call.

    Attributes:
        key: The window's key (its position in the episode's window list).
        rows: Row count (2402 at the release geometry).
    """

    key: int
    rows: int


@dataclass(frozen=True)
class Entries:
    """A snapshot of a symbolic cache.

    Attributes:
        code: ``[P]`` int64: a token id (``>= 0``) or ``-1 - window key`` for a visual row.
        row: ``[P]`` int64: the visual row index (0 for tokens).
    """

    code: np.ndarray
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.code)

    def runs(self) -> list[tuple[str, int, int, int]]:
        """Maximal runs of tokens or of one window's consecutive rows: ``(kind, start, stop, window key or -1)``."""
        out: list[tuple[str, int, int, int]] = []
        start = 0
        for i in range(1, len(self.code) + 1):
            if i < len(self.code):
                a, b = self.code[i - 1], self.code[i]
                same = (a >= 0 and b >= 0) or (a < 0 and b == a and self.row[i] == self.row[i - 1] + 1)
                if same:
                    continue
            kind = "tokens" if self.code[start] >= 0 else "visual"
            out.append((kind, start, i, int(-1 - self.code[start]) if kind == "visual" else -1))
            start = i
        return out


class SymbolicKV(KVCache):
    """A KV cache holding entry codes instead of keys and values (see the module docstring)."""

    def __init__(self, facts: ModelFacts, capacity: int) -> None:
        super().__init__(facts.rope, facts.num_layers, facts.num_key_value_heads, capacity, itemsize=0)
        self._code = np.zeros(capacity, dtype=np.int64)
        self._row = np.zeros(capacity, dtype=np.int64)

    @property
    def allocated_bytes(self) -> int:
        """No key/value storage."""
        return 0

    def layer_views(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """There are no keys or values to view."""
        raise NotImplementedError("a symbolic cache holds entry codes, not keys and values")

    def append(self, code: np.ndarray, row: np.ndarray) -> None:
        """Appends entries at the next positions."""
        n = len(code)
        self.check_room(n)
        self._code[self.length : self.length + n] = code
        self._row[self.length : self.length + n] = row
        self.record_append(self.new_positions(n))

    def snapshot(self) -> Entries:
        """A copy of the live entries."""
        return Entries(self._code[: self.length].copy(), self._row[: self.length].copy())

    def _compact(self, start: int, stop: int) -> None:
        for arr in (self._code, self._row):
            arr[start : self.length - (stop - start)] = arr[stop : self.length].copy()

    def _rotate(self, start: int, cos: np.ndarray, sin: np.ndarray) -> None:
        """Nothing to rotate: an entry's position is its index (the base class moves the position ids)."""


class SymbolicBackend(ModelBackend):
    """The decoder of a model, symbolically (see the module docstring).

    Args:
        facts: The model's facts (geometry, RoPE range, vocabulary size).
        action_token_ids: Ids of the action tokens.
    """

    name = "symbolic"
    precision = "fp32"
    device = "cpu"
    random_weights = False
    clip_preprocess = ClipPreprocessConfig()

    def __init__(self, facts: ModelFacts, action_token_ids: ActionTokenIds) -> None:
        self.facts = facts
        self.action_token_ids = action_token_ids
        self.last_kv: SymbolicKV | None = None

    def allocate_kv(self, capacity: int) -> SymbolicKV:
        """A symbolic cache of ``capacity`` entries."""
        self.last_kv = SymbolicKV(self.facts, capacity)
        return self.last_kv

    def decode(self, segments: Sequence[Segment], kv: KVCache) -> np.ndarray:
        """Appends the segments' entries; returns an empty array (nothing is computed)."""
        if not isinstance(kv, SymbolicKV):
            raise TypeError(f"the symbolic backend needs its own SymbolicKV, got {type(kv).__name__}")
        for segment in segments:
            if isinstance(segment, VisualRef):
                kv.append(np.full(segment.rows, -1 - segment.key, np.int64), np.arange(segment.rows, dtype=np.int64))
            elif isinstance(segment, (list, tuple)):
                ids = np.asarray(segment, dtype=np.int64)
                if ids.size and (ids.min() < 0 or ids.max() >= self.facts.vocab_size):
                    raise ValueError(f"token ids must lie in [0, {self.facts.vocab_size})")
                kv.append(ids, np.zeros(len(ids), np.int64))
            else:
                raise TypeError(f"symbolic decode takes token-id lists and VisualRef, got {type(segment).__name__}")
        return np.zeros(0, dtype=np.float32)

    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        """Not available: visual rows come from the feature cache."""
        raise NotImplementedError("the symbolic backend has no visual encoders (use training.features)")

    def select_frames(self, clip_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Not available (see :meth:`encode_images`)."""
        raise NotImplementedError("the symbolic backend has no visual encoders (use training.features)")

    def encode_video(self, video_pixels: np.ndarray) -> np.ndarray:
        """Not available (see :meth:`encode_images`)."""
        raise NotImplementedError("the symbolic backend has no visual encoders (use training.features)")

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Not available: there is no embedding table."""
        raise NotImplementedError("the symbolic backend has no embedding table")
