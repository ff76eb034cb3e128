"""Shared builders for the runtime tests."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from runtime.frames import Frame


def make_frame(index: int, timestamp: float, value: int = 0, size: tuple[int, int] = (4, 4)) -> Frame:
    """A tiny frame whose pixels all equal ``value``."""
    return Frame(index, timestamp, np.full((*size, 3), value, dtype=np.uint8))


def frames_at(timestamps: Iterable[float]) -> list[Frame]:
    """Tiny frames with the given timestamps, indexed in order."""
    return [make_frame(i, t) for i, t in enumerate(timestamps)]
