"""A live camera read through ``cv2.VideoCapture``: timeouts, measured delivery, reconnect after a stall.

What a driver claims (``CAP_PROP_FPS``, frame width and height) is often not what it delivers: USB cameras drop to
15 fps in low light, and drivers answer a request they cannot honour with another mode. So the camera reads its first
warm-up frames at :meth:`open` and reports the size and rate it actually delivers
(:attr:`CameraSource.reported_size`, :attr:`CameraSource.nominal_fps`, logged next to the driver's claim). The
warm-up frames precede the stream and are not part of it.

A camera that stalls (no frame within the read timeout, or too many failed reads in a row) is released and reopened
with exponential back-off, up to a configured number of attempts, each attempt logged. Timestamps are
``time.monotonic()``, so the stall shows up as a gap in stream time and the decoder context's ``context.timeout_s``
clear applies to the windows after it. A camera that never comes back raises :class:`SourceError` naming the index
and the attempts.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.config import CameraConfig
from runtime.frames import Frame
from runtime.sources.base import FALLBACK_FPS, FrameSource, SourceError

logger = logging.getLogger(__name__)


class _Stall(Exception):
    """The open capture stopped delivering (internal: turned into a reconnect or a SourceError)."""


class CameraSource(FrameSource):
    """A live camera read through ``cv2.VideoCapture``.

    Timestamps are ``time.monotonic()`` when each frame is returned by the driver. ``cv2.VideoCapture`` calls can
    block indefinitely on some drivers, so open and read run on a helper thread with timeouts.

    Args:
        index: OpenCV device index (``0`` is usually the built-in webcam).
        width: Requested capture width in pixels, or ``None`` for the default.
        height: Requested capture height in pixels, or ``None`` for the default.
        fps: Requested frame rate, or ``None`` for the driver default.
        open_timeout_s: Longest wait for the device to open (and for each probe frame).
        read_timeout_s: Longest wait for one frame before the camera counts as stalled.
        max_consecutive_failures: Failed reads in a row before the camera counts as stalled.
        reconnect_attempts: Reopen attempts after a stall before giving up (0: a stall is an error at once).
        reconnect_backoff_s: Wait before the first reopen attempt; doubled after each failed one.
        reconnect_backoff_max_s: Longest wait between attempts.
        probe_frames: Warm-up frames read at open to measure the delivered size and frame rate.
        capture_factory: Builds the capture object from the index; tests pass a fake. Defaults to
            ``cv2.VideoCapture``.
        clock: The timestamp clock (``time.monotonic``; tests pass a fake one that advances with the fake capture).
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
        reconnect_attempts: int = 0,
        reconnect_backoff_s: float = 0.5,
        reconnect_backoff_max_s: float = 8.0,
        probe_frames: int = 10,
        capture_factory: Callable[[int], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if index < 0:
            raise SourceError(f"camera index {index} is invalid: must be >= 0")
        if open_timeout_s <= 0 or read_timeout_s <= 0:
            raise ValueError("open_timeout_s and read_timeout_s must be > 0")
        if max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures = {max_consecutive_failures}: must be >= 1")
        if reconnect_attempts < 0 or reconnect_backoff_s < 0 or reconnect_backoff_max_s < reconnect_backoff_s:
            raise ValueError("reconnect_attempts and reconnect_backoff_s must be >= 0, and the maximum >= the first")
        if probe_frames < 1:
            raise ValueError(f"probe_frames = {probe_frames}: must be >= 1")
        self.index = index
        self._width = width
        self._height = height
        self._requested_fps = fps
        self._open_timeout_s = open_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_failures = max_consecutive_failures
        self._reconnect_attempts = reconnect_attempts
        self._backoff_s = reconnect_backoff_s
        self._backoff_max_s = reconnect_backoff_max_s
        self._probe_frames = probe_frames
        self._factory: Callable[[int], Any] = capture_factory or cv2.VideoCapture
        self._clock = clock
        self._cap: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[tuple[bool, np.ndarray | None]] | None = None
        self._next_index = 0
        self._driver_fps = 0.0
        self._driver_size: tuple[int, int] | None = None
        self._measured_fps = 0.0
        self._size: tuple[int, int] | None = None
        self.reconnects = 0
        """Successful reconnects so far."""

    @classmethod
    def from_config(
        cls, index: int, config: CameraConfig, capture_factory: Callable[[int], Any] | None = None
    ) -> CameraSource:
        """A camera with the ``camera.*`` settings of the streaming configuration (0 = driver default)."""
        return cls(
            index,
            width=config.width or None,
            height=config.height or None,
            fps=config.fps or None,
            open_timeout_s=config.open_timeout_s,
            read_timeout_s=config.read_timeout_s,
            max_consecutive_failures=config.max_consecutive_failures,
            reconnect_attempts=config.reconnect_attempts,
            reconnect_backoff_s=config.reconnect_backoff_s,
            reconnect_backoff_max_s=config.reconnect_backoff_max_s,
            probe_frames=config.probe_frames,
            capture_factory=capture_factory,
        )

    @property
    def description(self) -> str:
        return f"camera index {self.index}"

    @property
    def nominal_fps(self) -> float:
        """The frame rate measured over the first frames; the driver's claim before that (``FALLBACK_FPS`` if none)."""
        if self._measured_fps > 0:
            return self._measured_fps
        return self._driver_fps if self._driver_fps > 0 else FALLBACK_FPS

    @property
    def driver_fps(self) -> float | None:
        """What the driver claims (``CAP_PROP_FPS``), ``None`` if it reports nothing."""
        return self._driver_fps or None

    @property
    def reported_size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the frames actually delivered (``None`` before :meth:`open`)."""
        return self._size

    # ------------------------------------------------------------------ opening

    def _open(self) -> None:
        self._cap = self._open_device()
        self._next_index = 0
        self._probe()

    def _open_device(self) -> Any:
        """Opens the device on a fresh helper thread, with the open timeout.

        Raises:
            SourceError: If it does not open in time, or opens closed (no such device, busy, not permitted).
        """
        # One worker thread: a hung driver call occupies it and every later call times out instead of piling up
        # threads.
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
            raise SourceError(f"camera index {self.index} could not be opened: {self._missing_reason()}")
        reported = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._driver_fps = reported if math.isfinite(reported) and reported > 0 else 0.0
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        self._driver_size = (width, height) if width > 0 and height > 0 else None
        return cap

    def _missing_reason(self) -> str:
        """Why the device did not open, as precisely as the platform lets us say."""
        if sys.platform.startswith("linux"):
            # OpenCV's V4L2 backend maps index N to /dev/videoN.
            node = Path("/dev") / f"video{self.index}"
            if not node.exists():
                found = sorted(p.name for p in Path("/dev").glob("video*"))
                return f"no such device ({node} does not exist; present: {', '.join(found) or 'none'})"
            return f"{node} exists but did not open (in use by another program, or not permitted)"
        return "no such device, or it is in use or not permitted (try another --source index)"

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

    def _probe(self) -> None:
        """Reads warm-up frames and measures the size and rate the camera delivers.

        The warm-up frames are not part of the stream (they precede it, and the first frames of many cameras are
        dark while auto-exposure settles); the stream's first frame is the first one :meth:`read` returns.
        """
        stamps: list[float] = []
        size: tuple[int, int] | None = None
        for _ in range(self._probe_frames):
            try:
                bgr = self._read_bgr(self._open_timeout_s)
            except _Stall as stall:
                if stamps:
                    break  # measured over fewer frames; the stall is handled by the first read after them
                self._release_capture()
                raise SourceError(f"camera index {self.index} opened but {stall}") from None
            stamps.append(self._clock())
            size = (int(bgr.shape[1]), int(bgr.shape[0]))
        assert size is not None
        span = stamps[-1] - stamps[0]
        self._measured_fps = (len(stamps) - 1) / span if len(stamps) >= 2 and span > 0 else 0.0
        self._size = size
        driver = (f"{self._driver_size[0]}x{self._driver_size[1]}" if self._driver_size else "no size") + (
            f" at {self._driver_fps:.1f} fps" if self._driver_fps else ", no fps"
        )
        logger.info(
            "camera index %d delivers %dx%d at %.1f fps (measured over %d warm-up frames, not streamed; "
            "the driver reports %s)",
            self.index,
            size[0],
            size[1],
            self.nominal_fps,
            len(stamps),
            driver,
        )
        requested = (self._width or size[0], self._height or size[1])
        if requested != size:
            logger.warning("camera index %d: requested %dx%d, delivers %dx%d", self.index, *requested, *size)
        if self._requested_fps and self._measured_fps and abs(self._measured_fps / self._requested_fps - 1) > 0.2:
            logger.warning(
                "camera index %d: requested %.1f fps, delivers %.1f fps",
                self.index,
                self._requested_fps,
                self._measured_fps,
            )

    # ------------------------------------------------------------------ reading

    def _read(self) -> Frame | None:
        started = time.perf_counter()
        attempts_used = 0
        while True:
            try:
                bgr = self._read_bgr(self._read_timeout_s)
                break
            except _Stall as stall:
                attempts_used = self._reconnect(str(stall), attempts_used)
        return self._frame(bgr, started)

    def _read_bgr(self, timeout_s: float) -> np.ndarray:
        """One BGR frame from the open capture.

        Raises:
            _Stall: No frame within ``timeout_s``, or ``max_consecutive_failures`` failed reads in a row.
        """
        assert self._executor is not None and self._cap is not None
        failures = 0
        while True:
            # Reuse a read still pending from a previous timeout rather than queueing a second one behind a hung
            # driver call.
            if self._pending is None:
                self._pending = self._executor.submit(self._cap.read)
            try:
                ok, bgr = self._pending.result(timeout=timeout_s)
            except FutureTimeoutError:
                raise _Stall(f"delivered no frame within {timeout_s:.1f} s") from None
            finally:
                if self._pending is not None and self._pending.done():
                    self._pending = None
            if ok and bgr is not None:
                return bgr
            failures += 1
            if failures >= self._max_failures:
                raise _Stall(f"failed {failures} consecutive reads (disconnected?)")

    def _frame(self, bgr: np.ndarray, started: float) -> Frame:
        timestamp = self._clock()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        size = (int(rgb.shape[1]), int(rgb.shape[0]))
        if self._size is not None and size != self._size:
            logger.warning("camera index %d now delivers %dx%d (was %dx%d)", self.index, *size, *self._size)
            self._size = size
        frame = Frame(self._next_index, timestamp, rgb, decode_ms=(time.perf_counter() - started) * 1e3)
        self._next_index += 1
        return frame

    def _reconnect(self, reason: str, attempts_used: int) -> int:
        """Releases the stalled device and reopens it with back-off; returns the attempts used so far.

        The budget of ``reconnect_attempts`` counts every reopen since the last delivered frame, so a device that
        reopens but never delivers still ends.

        Raises:
            SourceError: When the attempts are used up (or reconnecting is off), naming the index and the attempts.
        """
        if self._reconnect_attempts == 0:
            raise SourceError(f"camera index {self.index} {reason}")
        if attempts_used == 0:
            logger.warning(
                "camera index %d %s; reconnecting (up to %d attempts)", self.index, reason, self._reconnect_attempts
            )
        self._release_capture()
        last_error = reason
        while attempts_used < self._reconnect_attempts:
            delay = min(self._backoff_s * 2**attempts_used, self._backoff_max_s)
            attempts_used += 1
            time.sleep(delay)
            try:
                self._cap = self._open_device()
            except SourceError as exc:
                last_error = str(exc)
                logger.warning(
                    "camera index %d: reconnect attempt %d/%d failed after %.1f s back-off: %s",
                    self.index,
                    attempts_used,
                    self._reconnect_attempts,
                    delay,
                    exc,
                )
                continue
            self.reconnects += 1
            logger.warning(
                "camera index %d: reopened on attempt %d/%d (after %.1f s back-off)",
                self.index,
                attempts_used,
                self._reconnect_attempts,
                delay,
            )
            return attempts_used
        raise SourceError(
            f"camera index {self.index} {reason} and did not come back after {self._reconnect_attempts} reconnect "
            f"attempts (last: {last_error})"
        )

    # ------------------------------------------------------------------ closing

    def _release_capture(self) -> None:
        if self._cap is not None:
            if self._pending is None or self._pending.done():
                self._cap.release()
            else:
                # Releasing while the driver is inside read() can crash some backends; leave it to the pending
                # call's thread to finish.
                logger.warning("camera index %d: a read is still pending; release deferred", self.index)
                cap = self._cap
                self._pending.add_done_callback(lambda _f: cap.release())
            self._cap = None
        self._pending = None
        self._shutdown_executor()

    def _close(self) -> None:
        self._release_capture()

    def _shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
