"""Frame sources: camera, video file and a deterministic synthetic scene.

Every source implements :class:`FrameSource` and yields RGB :class:`Frame`
objects with capture timestamps. Failures (missing camera, unreadable file, a
camera that stops delivering) raise :class:`SourceError` with a message naming
the device or path; no call blocks for longer than its configured timeout.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from runtime.frames import Frame

logger = logging.getLogger(__name__)

#: Frame rate assumed when a video file reports none (some containers do not).
FALLBACK_FPS = 30.0


class SourceError(RuntimeError):
    """A frame source could not be opened or stopped delivering frames."""


class FrameSource(ABC):
    """A stream of RGB frames with capture timestamps.

    Use as a context manager (``with source: ...``) or call :meth:`open` and
    :meth:`close` explicitly. :meth:`close` is idempotent. Subclasses implement
    ``_open``, ``_read`` and ``_close``; the base class enforces the open state.
    """

    def __init__(self) -> None:
        self._is_open = False

    @property
    @abstractmethod
    def nominal_fps(self) -> float:
        """The frame rate the source advertises, in frames per second."""

    @property
    def description(self) -> str:
        """A short human-readable name used in log and error messages."""
        return type(self).__name__

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` succeeded and :meth:`close` has not run."""
        return self._is_open

    def open(self) -> None:
        """Open the underlying device or file.

        Raises:
            SourceError: If the source cannot be opened.
        """
        if self._is_open:
            return
        self._open()
        self._is_open = True
        logger.info("opened %s (nominal %.2f fps)", self.description, self.nominal_fps)

    def read(self) -> Frame | None:
        """Return the next frame, or ``None`` at the end of the stream.

        Raises:
            SourceError: If the source is not open or fails to deliver a frame.
        """
        if not self._is_open:
            raise SourceError(f"{self.description} is not open; call open() or use it as a context manager")
        return self._read()

    def close(self) -> None:
        """Release the underlying device or file. Safe to call repeatedly."""
        if not self._is_open:
            return
        self._is_open = False
        self._close()
        logger.info("closed %s", self.description)

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames until the end of the stream (the source must be open)."""
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _read(self) -> Frame | None: ...

    @abstractmethod
    def _close(self) -> None: ...


class _Pacer:
    """Sleeps so that frames are released no earlier than their timestamps.

    The clock starts at the first frame. A consumer that falls behind is not
    made to catch up: late frames are released immediately.
    """

    def __init__(self) -> None:
        self._wall_origin: float | None = None

    def wait_until(self, stream_ts: float) -> None:
        """Block until ``stream_ts`` seconds of stream time have elapsed."""
        now = time.monotonic()
        if self._wall_origin is None:
            self._wall_origin = now - stream_ts
            return
        delay = self._wall_origin + stream_ts - now
        if delay > 0:
            time.sleep(delay)


# --------------------------------------------------------------------------- camera


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


# --------------------------------------------------------------------------- video file


class VideoFileSource(FrameSource):
    """Frames decoded from a video file.

    Timestamps are ``index / fps`` using the file's own frame rate, so they are
    identical whether the file is paced or not.

    Args:
        path: The video file.
        paced: If true, frames are released at the file's frame rate (like a
            live camera); if false, as fast as they decode (benchmarks).
    """

    def __init__(self, path: str | Path, paced: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.paced = paced
        self._cap: Any = None
        self._fps = 0.0
        self._next_index = 0
        self._pacer = _Pacer()

    @property
    def description(self) -> str:
        return f"video file {self.path}"

    @property
    def nominal_fps(self) -> float:
        """The file's frame rate (``FALLBACK_FPS`` if it reports none)."""
        return self._fps if self._fps > 0 else FALLBACK_FPS

    @property
    def frame_count(self) -> int | None:
        """The container's frame count, if it reports one (may be approximate)."""
        if self._cap is None:
            return None
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return count if count > 0 else None

    def _open(self) -> None:
        if not self.path.exists():
            raise SourceError(f"video file not found: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"video path is not a file: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"video file could not be opened (unreadable or unsupported format): {self.path}")
        reported = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if math.isfinite(reported) and reported > 0:
            self._fps = reported
        else:
            logger.warning("%s reports no frame rate; assuming %.1f fps", self.path, FALLBACK_FPS)
            self._fps = FALLBACK_FPS
        self._cap = cap
        self._next_index = 0
        self._pacer = _Pacer()

    def _read(self) -> Frame | None:
        started = time.perf_counter()
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self._next_index == 0:
                # An opened container with no decodable frame is a broken file,
                # not an empty stream.
                raise SourceError(f"video file has no decodable frames: {self.path}")
            return None
        timestamp = self._next_index / self._fps
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        decode_ms = (time.perf_counter() - started) * 1e3  # measured before pacing sleeps
        if self.paced:
            self._pacer.wait_until(timestamp)
        frame = Frame(self._next_index, timestamp, rgb, decode_ms=decode_ms)
        self._next_index += 1
        return frame

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --------------------------------------------------------------------------- synthetic


class SyntheticSource(FrameSource):
    """A deterministic stick figure doing squats, for tests and demos.

    The scene repeats every :attr:`CYCLE_S` seconds: the figure stands still for
    :attr:`STILL_S` seconds, then does squat reps of :attr:`REP_S` seconds each
    for the rest of the cycle. A static seeded background texture and a small
    seeded per-frame sensor noise make frames realistic but reproducible: the
    same arguments always give bit-identical frames.

    Args:
        fps: Frame rate; timestamps are ``index / fps``.
        duration_s: Stream length in seconds (``round(duration_s * fps)`` frames).
        size: Frame size as ``(height, width)``.
        seed: Seed for the background texture and the sensor noise.
        paced: Release frames in real time (``True``) or as fast as possible.
        noise_std: Standard deviation of the per-frame sensor noise (0-255 scale).
    """

    CYCLE_S = 8.0
    STILL_S = 3.0
    REP_S = 1.25

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
        if len(size) != 2 or size[0] < 32 or size[1] < 32:
            raise ValueError(f"size = {size}: must be (height, width) with both >= 32")
        if noise_std < 0:
            raise ValueError(f"noise_std = {noise_std}: must be >= 0")
        self.fps = float(fps)
        self.duration_s = float(duration_s)
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.paced = paced
        self.noise_std = noise_std
        self.frame_count = max(1, round(self.duration_s * self.fps))
        self._background = self._make_background()
        self._next_index = 0
        self._pacer = _Pacer()
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return f"synthetic source (seed {self.seed}, {self.duration_s:g} s at {self.fps:g} fps)"

    @property
    def nominal_fps(self) -> float:
        return self.fps

    @classmethod
    def squat_depth(cls, t: float) -> float:
        """Squat depth in ``[0, 1]`` at stream time ``t`` (0 = standing)."""
        phase = t % cls.CYCLE_S
        if phase < cls.STILL_S:
            return 0.0
        return 0.5 * (1.0 - math.cos(2.0 * math.pi * (phase - cls.STILL_S) / cls.REP_S))

    @classmethod
    def is_moving(cls, t: float) -> bool:
        """Whether the figure is in a rep phase (not standing still) at time ``t``."""
        return (t % cls.CYCLE_S) >= cls.STILL_S

    def render(self, index: int) -> np.ndarray:
        """Render frame ``index`` as an RGB ``uint8`` array, without pacing."""
        t = index / self.fps
        image = self._background.copy()
        self._draw_figure(image, self.squat_depth(t))
        if self.noise_std > 0:
            rng = np.random.default_rng((self.seed, index))
            noise = rng.normal(0.0, self.noise_std, size=image.shape)
            image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        return image

    def _open(self) -> None:
        self._next_index = 0
        self._pacer = _Pacer()

    def _read(self) -> Frame | None:
        with self._lock:
            index = self._next_index
            if index >= self.frame_count:
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

    def _make_background(self) -> np.ndarray:
        height, width = self.size
        rng = np.random.default_rng(self.seed)
        # Low-resolution noise upsampled to a smooth "wall" texture.
        coarse = rng.uniform(70, 120, size=(8, 10, 3)).astype(np.float32)
        wall = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        floor_y = int(0.9 * height)
        wall[floor_y:] = (95, 80, 60)
        return np.clip(wall, 0, 255).astype(np.uint8)

    def _draw_figure(self, image: np.ndarray, depth: float) -> None:
        height, width = self.size
        cx = width / 2.0
        thick = max(2, height // 40)
        foot = (cx, 0.9 * height)
        hip = (cx - 0.10 * width * depth, (0.56 + 0.16 * depth) * height)
        knee = (cx + 0.10 * width * depth, (0.73 + 0.03 * depth) * height)
        torso = 0.24 * height
        lean = 0.5 * depth  # radians of forward lean at the bottom of a squat
        shoulder = (hip[0] + torso * math.sin(lean), hip[1] - torso * math.cos(lean))
        hand = (shoulder[0] + 0.16 * width * (0.3 + 0.7 * depth), shoulder[1] + 0.10 * height * (1.0 - depth))
        head = (shoulder[0] + 0.02 * width * depth, shoulder[1] - 0.07 * height)

        def pt(p: tuple[float, float]) -> tuple[int, int]:
            return int(round(p[0])), int(round(p[1]))

        leg_colour, body_colour, skin = (40, 60, 160), (200, 60, 50), (230, 190, 160)
        cv2.line(image, pt(foot), pt(knee), leg_colour, thick, cv2.LINE_AA)
        cv2.line(image, pt(knee), pt(hip), leg_colour, thick, cv2.LINE_AA)
        cv2.line(image, pt(hip), pt(shoulder), body_colour, thick + 2, cv2.LINE_AA)
        cv2.line(image, pt(shoulder), pt(hand), skin, thick, cv2.LINE_AA)
        cv2.circle(image, pt(head), max(4, int(0.05 * height)), skin, -1, cv2.LINE_AA)
        # A weight plate held in the hands moves with the arms.
        cv2.circle(image, pt(hand), max(3, int(0.03 * height)), (30, 30, 30), -1, cv2.LINE_AA)


# --------------------------------------------------------------------------- helpers


def write_sample_video(
    path: str | Path,
    fps: float = 30.0,
    duration_s: float = 8.0,
    size: tuple[int, int] = (240, 320),
    seed: int = 0,
) -> Path:
    """Write the synthetic exercise scene to an ``.mp4`` (mp4v) file.

    Args:
        path: Output file; parent directories are created.
        fps: Frame rate of the written video.
        duration_s: Length in seconds.
        size: Frame size as ``(height, width)``.
        seed: Seed passed to :class:`SyntheticSource`.

    Returns:
        The path written.

    Raises:
        SourceError: If OpenCV cannot create the video writer.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]  # missing from OpenCV's stubs
    writer = cv2.VideoWriter(str(out), fourcc, float(fps), (width, height))
    if not writer.isOpened():
        raise SourceError(f"could not create video writer for {out} (mp4v codec unavailable or path not writable)")
    try:
        with SyntheticSource(fps=fps, duration_s=duration_s, size=size, seed=seed) as source:
            for frame in source:
                writer.write(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    logger.info("wrote sample video %s (%g s at %g fps, %dx%d)", out, duration_s, fps, width, height)
    return out


def open_source(spec: str, paced: bool = True) -> FrameSource:
    """Build (without opening) the source named by a ``--source`` value.

    Args:
        spec: A non-negative integer for a camera index, ``"synthetic"`` for the
            synthetic scene, otherwise a video file path.
        paced: Real-time pacing for file and synthetic sources (cameras are
            always real time).

    Returns:
        An unopened :class:`FrameSource`.

    Raises:
        SourceError: If ``spec`` is empty or a negative camera index.
    """
    text = spec.strip()
    if not text:
        raise SourceError("--source is empty: expected a camera index, 'synthetic' or a video file path")
    if text.lstrip("-").isdigit():
        return CameraSource(int(text))
    if text.lower() == "synthetic":
        return SyntheticSource(paced=paced)
    return VideoFileSource(text, paced=paced)
