"""A live camera read through ``cv2.VideoCapture``, with open/read timeouts and a consecutive-failure limit."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

import cv2
import numpy as np

from runtime.frames import Frame
from runtime.sources.base import FALLBACK_FPS, FrameSource, SourceError

logger = logging.getLogger(__name__)


class CameraSource(FrameSource):
    """A live camera read through ``cv2.VideoCapture``.

    Timestamps are ``time.monotonic()`` when each frame is returned by the
    driver. ``cv2.VideoCapture`` calls can block indefinitely on some drivers, so
    open and read run on a helper thread with timeouts.

    Args:
        index: OpenCV device index (``0`` is usually the built-in webcam).
        width: Requested capture width in pixels, or ``None`` for the default.
        height: Requested capture height in pixels, or ``None`` for the default.
        fps: Requested frame rate, or ``None`` for the driver default.
        open_timeout_s: Longest wait for the device to open.
        read_timeout_s: Longest wait for one frame.
        max_consecutive_failures: Failed reads in a row tolerated before the
            camera is declared lost.
        capture_factory: Builds the capture object from the index; tests pass a
            fake. Defaults to ``cv2.VideoCapture``.
    """

    def __init__(
        self,
        index: int,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 2.0,
        max_consecutive_failures: int = 30,
        capture_factory: Callable[[int], Any] | None = None,
    ) -> None:
        super().__init__()
        if index < 0:
            raise SourceError(f"camera index {index} is invalid: must be >= 0")
        if open_timeout_s <= 0 or read_timeout_s <= 0:
            raise ValueError("open_timeout_s and read_timeout_s must be > 0")
        if max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures = {max_consecutive_failures}: must be >= 1")
        self.index = index
        self._width = width
        self._height = height
        self._requested_fps = fps
        self._open_timeout_s = open_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_failures = max_consecutive_failures
        self._factory: Callable[[int], Any] = capture_factory or cv2.VideoCapture
        self._cap: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[tuple[bool, np.ndarray | None]] | None = None
        self._next_index = 0
        self._fps = 0.0

    @property
    def description(self) -> str:
        return f"camera index {self.index}"

    @property
    def nominal_fps(self) -> float:
        """The driver-reported frame rate (``FALLBACK_FPS`` if unknown)."""
        return self._fps if self._fps > 0 else FALLBACK_FPS

    def _open(self) -> None:
        # One worker thread: a hung driver call occupies it and every later call
        # times out instead of piling up threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"camera{self.index}")
        future = self._executor.submit(self._open_capture)
        try:
            cap = future.result(timeout=self._open_timeout_s)
        except FutureTimeoutError:
            self._shutdown_executor()
            raise SourceError(
                f"camera index {self.index} did not open within {self._open_timeout_s:.1f} s "
                "(device busy or driver hung)"
            ) from None
        except Exception:
            self._shutdown_executor()
            raise
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            self._shutdown_executor()
            raise SourceError(
                f"camera index {self.index} could not be opened: no such device, or it is in use "
                "or not permitted (try another --source index)"
            )
        self._cap = cap
        reported = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = reported if math.isfinite(reported) and reported > 0 else 0.0
        self._next_index = 0

    def _open_capture(self) -> Any:
        cap = self._factory(self.index)
        if cap is not None and cap.isOpened():
            if self._width is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._width)
            if self._height is not None:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._height)
            if self._requested_fps is not None:
                cap.set(cv2.CAP_PROP_FPS, self._requested_fps)
        return cap

    def _read(self) -> Frame | None:
        assert self._executor is not None and self._cap is not None
        started = time.perf_counter()
        failures = 0
        while True:
            # Reuse a read still pending from a previous timeout rather than
            # queueing a second one behind a hung driver call.
            if self._pending is None:
                self._pending = self._executor.submit(self._cap.read)
            try:
                ok, bgr = self._pending.result(timeout=self._read_timeout_s)
            except FutureTimeoutError:
                raise SourceError(
                    f"camera index {self.index} delivered no frame within {self._read_timeout_s:.1f} s"
                ) from None
            finally:
                if self._pending is not None and self._pending.done():
                    self._pending = None
            if ok and bgr is not None:
                break
            failures += 1
            if failures >= self._max_failures:
                raise SourceError(f"camera index {self.index} failed {failures} consecutive reads (disconnected?)")
        timestamp = time.monotonic()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        frame = Frame(self._next_index, timestamp, rgb, decode_ms=(time.perf_counter() - started) * 1e3)
        self._next_index += 1
        return frame

    def _close(self) -> None:
        if self._cap is not None:
            if self._pending is None or self._pending.done():
                self._cap.release()
            else:
                # Releasing while the driver is inside read() can crash some
                # backends; leave it to the pending call's thread to finish.
                logger.warning("camera index %d: a read is still pending; release deferred", self.index)
                cap = self._cap
                self._pending.add_done_callback(lambda _f: cap.release())
            self._cap = None
        self._pending = None
        self._shutdown_executor()

    def _shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
