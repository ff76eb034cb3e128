"""The synthetic scene as a frame source (tests, the demo, benchmarks)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from runtime.frames import Frame
from runtime.sources.base import FrameSource, Pacer, StreamEnd
from runtime.sources.scene import SquatScene


class SyntheticSource(FrameSource):
    """The :class:`~runtime.sources.scene.SquatScene` at ``fps``, for ``duration_s`` seconds.

    Args:
        fps: Frame rate; timestamps are ``index / fps``.
        duration_s: Stream length in seconds (``round(duration_s * fps)`` frames).
        size: Frame size as ``(height, width)``.
        seed: Seed for the background texture and the sensor noise.
        paced: Release frames in real time (``True``) or as fast as possible.
        noise_std: Standard deviation of the per-frame sensor noise (0-255 scale).
    """

    def __init__(
        self,
        fps: float = 30.0,
        duration_s: float = 10.0,
        size: tuple[int, int] = (240, 320),
        seed: int = 0,
        paced: bool = False,
        noise_std: float = 2.0,
    ) -> None:
        super().__init__()
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps = {fps}: must be a finite number > 0")
        if not duration_s > 0:
            raise ValueError(f"duration_s = {duration_s}: must be > 0")
        self.scene = SquatScene(size, seed, noise_std)
        self.fps = float(fps)
        self.duration_s = float(duration_s)
        self.size = self.scene.size
        self.seed = seed
        self.paced = paced
        self.frame_count = max(1, round(self.duration_s * self.fps))
        self._next_index = 0
        self._pacer = Pacer()
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return f"synthetic source (seed {self.seed}, {self.duration_s:g} s at {self.fps:g} fps)"

    @property
    def nominal_fps(self) -> float:
        return self.fps

    squat_depth = staticmethod(SquatScene.squat_depth)
    is_moving = staticmethod(SquatScene.is_moving)

    def render(self, index: int) -> np.ndarray:
        """Render frame ``index`` as an RGB ``uint8`` array, without pacing."""
        return self.scene.render(index / self.fps, index)

    def _open(self) -> None:
        self._next_index = 0
        self._pacer = Pacer()

    def _read(self) -> Frame | None:
        with self._lock:
            index = self._next_index
            if index >= self.frame_count:
                self.stream_end = StreamEnd("end_of_stream", self.frame_count / self.fps, self.frame_count, self.frame_count)
                return None
            self._next_index += 1
        timestamp = index / self.fps
        started = time.perf_counter()
        image = self.render(index)
        decode_ms = (time.perf_counter() - started) * 1e3  # measured before pacing sleeps
        if self.paced:
            self._pacer.wait_until(timestamp)
        return Frame(index, timestamp, image, decode_ms=decode_ms)

    def _close(self) -> None:
        pass
