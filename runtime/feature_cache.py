"""LRU cache of per-frame image-encoder outputs keyed by frame index.

Overlapping windows share frames; each frame's encoder output is computed once
and reused by every window that samples it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class FrameFeatureCache(Generic[T]):
    """Least-recently-used map from frame index to its encoder features.

    Hit/miss accounting is per requested position: a position served without
    calling the encoder is a hit (including a repeat of a frame computed earlier
    in the same request), a position whose frame had to be encoded is a miss.

    Args:
        max_entries: Capacity in frames; must be >= 1.

    Raises:
        ValueError: If ``max_entries`` < 1.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries = {max_entries}: must be >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[int, T] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get_or_compute(self, indices: Sequence[int], compute_fn: Callable[[list[int]], Sequence[T] | Any]) -> list[T]:
        """Return features for ``indices``, encoding only the frames not cached.

        Args:
            indices: Frame indices in the order the caller wants features
                (repeats allowed).
            compute_fn: Called once, with the distinct missing indices in first
                appearance order, and only if any are missing. Must return a
                sequence (list, array or tensor indexed on its first axis) of
                the same length, one feature per index.

        Returns:
            One feature per entry of ``indices``, in the same order.

        Raises:
            ValueError: If ``compute_fn`` returns the wrong number of features.
        """
        found: dict[int, T] = {}
        missing: list[int] = []
        with self._lock:
            for idx in indices:
                if idx in found:
                    continue
                if idx in self._entries:
                    self._entries.move_to_end(idx)
                    found[idx] = self._entries[idx]
                elif idx not in missing:
                    missing.append(idx)

        if missing:
            # The encoder runs outside the lock so a slow batch never blocks readers.
            computed = compute_fn(list(missing))
            if len(computed) != len(missing):
                raise ValueError(
                    f"compute_fn returned {len(computed)} features for {len(missing)} missing frames {missing}"
                )
            with self._lock:
                for idx, feature in zip(missing, computed, strict=True):
                    found[idx] = feature
                    self._entries[idx] = feature
                    self._entries.move_to_end(idx)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
                    self.evictions += 1

        with self._lock:
            self.misses += len(missing)
            self.hits += len(indices) - len(missing)
        return [found[idx] for idx in indices]

    def __contains__(self, index: object) -> bool:
        with self._lock:
            return index in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def hit_rate(self) -> float:
        """Fraction of requested frames served from the cache (0.0 before any request)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def stats(self) -> dict[str, float | int]:
        """Counters for logs and events: hits, misses, hit_rate, entries, evictions."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": self.hit_rate,
                "entries": len(self._entries),
                "max_entries": self.max_entries,
                "evictions": self.evictions,
            }

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        with self._lock:
            self._entries.clear()
