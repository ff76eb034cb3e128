"""The frame-source interface: :class:`FrameSource`, :class:`SourceError` and real-time pacing.

Every source yields RGB :class:`~runtime.frames.Frame` objects with capture timestamps. Failures (missing camera,
unreadable file, a camera that stops delivering) raise :class:`SourceError` with a message naming the device or
path; no call blocks for longer than its configured timeout.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from runtime.frames import Frame

logger = logging.getLogger(__name__)

#: Frame rate assumed when a video file reports none (some containers do not).
FALLBACK_FPS = 30.0


@dataclass(frozen=True)
class StreamEnd:
    """How a finite source ended (set on the source when ``read`` returns ``None``).

    Attributes:
        reason: ``end_of_stream`` (every frame the source announced was delivered) or ``truncated`` (it stopped
            early, or packets failed to decode: a cut or corrupt file; every frame that decoded was delivered).
        end_time: Stream time the source covers up to: the last frame's timestamp plus its duration (a file of N
            frames at ``fps`` covers ``N / fps`` seconds, its last frame is stamped ``(N - 1) / fps``).
        frames_read: Frames delivered.
        frames_expected: Frames the container announced, if it did.
        message: Why it counts as truncated (empty otherwise).
        decode_errors: Packets the decoder rejected and skipped (a file with any is ``truncated``).
        corrupt_frames: Frames delivered that the decoder flagged as decoded with concealed errors.
    """

    reason: str
    end_time: float
    frames_read: int
    frames_expected: int | None = None
    message: str = ""
    decode_errors: int = 0
    corrupt_frames: int = 0

    def __post_init__(self) -> None:
        if self.reason not in STREAM_END_REASONS:
            raise ValueError(f"StreamEnd reason {self.reason!r} is not one of {STREAM_END_REASONS}")


#: Why a finite source ended.
STREAM_END_REASONS = ("end_of_stream", "truncated")


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
        self.stream_end: StreamEnd | None = None
        """How the stream ended, once ``read`` has returned ``None`` (``None`` before, and for live sources)."""

    @property
    @abstractmethod
    def nominal_fps(self) -> float:
        """The frame rate the source advertises, in frames per second."""

    @property
    def reported_size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the frames the source actually delivers, once known (``None`` before)."""
        return None

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


class Pacer:
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
