"""The timestamped frame record shared by every part of the streaming runtime."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured video frame.

    Equality is identity (``eq=False``): comparing pixel arrays element-wise is
    never what the runtime wants, and it keeps frames hashable.

    Attributes:
        index: Sequential frame number within its source, starting at 0. It is
            unique per stream, so it doubles as the feature-cache key.
        timestamp: Capture time in seconds. ``time.monotonic()`` for live
            cameras; the presentation time for files (container PTS x time
            base, from 0) and ``index / fps`` for the synthetic source.
            Non-decreasing within a stream.
        image: ``uint8`` array of shape ``[H, W, 3]`` in RGB order.
        decode_ms: Time the source spent producing this frame (decode or
            render plus colour conversion), excluding any pacing wait; for
            cameras it includes the wait for the driver.
    """

    index: int
    timestamp: float
    image: np.ndarray
    decode_ms: float = 0.0

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])
