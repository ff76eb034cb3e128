"""Bounded, thread-safe frame buffer and the capture thread that fills it.

Capture never waits for inference: :meth:`FrameRingBuffer.push` never blocks
(when full it overwrites the oldest frame and counts it), and the consumer reads
time ranges with :meth:`FrameRingBuffer.frames_in` when a window is complete.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from runtime.frames import Frame
from runtime.sources import FrameSource

logger = logging.getLogger(__name__)


class FrameRingBuffer:
    """A fixed-capacity FIFO of frames ordered by timestamp.

    All methods are safe to call from several threads.

    Args:
        capacity: Maximum number of frames held; must be >= 1.

    Raises:
        ValueError: If ``capacity`` is < 1.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity = {capacity}: must be >= 1")
        self.capacity = capacity
        self._frames: deque[Frame] = deque(maxlen=capacity)
        self._cond = threading.Condition()
        self._closed = False
        self._pushed = 0
        self._overwritten = 0
        self._first_timestamp: float | None = None
        self._fps = 0.0

    def push(self, frame: Frame) -> bool:
        """Append a frame, overwriting the oldest one when the buffer is full.

        Args:
            frame: The frame; its timestamp must not be older than the newest
                frame already pushed.

        Returns:
            ``True`` if stored, ``False`` if the buffer was closed (frame dropped).

        Raises:
            ValueError: If ``frame.timestamp`` is older than the newest frame.
        """
        with self._cond:
            if self._closed:
                return False
            if self._frames and frame.timestamp < self._frames[-1].timestamp:
                raise ValueError(
                    f"frame {frame.index} timestamp {frame.timestamp:.6f} is older than the newest "
                    f"buffered frame ({self._frames[-1].timestamp:.6f}); timestamps must be non-decreasing"
                )
            if len(self._frames) == self.capacity:
                self._overwritten += 1
            if self._first_timestamp is None:
                self._first_timestamp = frame.timestamp
            if self._frames and frame.timestamp > self._frames[-1].timestamp:
                rate = 1.0 / (frame.timestamp - self._frames[-1].timestamp)
                # EMA over ~10 frames: a steady overlay figure that still follows a camera changing its rate
                self._fps = rate if self._fps == 0.0 else 0.9 * self._fps + 0.1 * rate
            self._frames.append(frame)
            self._pushed += 1
            self._cond.notify_all()
            return True

    def frames_in(self, t_start: float, t_end: float) -> list[Frame]:
        """Return buffered frames with ``t_start <= timestamp <= t_end``, oldest first."""
        with self._cond:
            return [f for f in self._frames if t_start <= f.timestamp <= t_end]

    def latest(self) -> Frame | None:
        """The newest buffered frame, or ``None``."""
        with self._cond:
            return self._frames[-1] if self._frames else None

    def fps(self) -> float:
        """Smoothed capture frame rate (exponential average of frame intervals; 0 before two frames)."""
        with self._cond:
            return self._fps

    def snapshot(self) -> list[Frame]:
        """Return all buffered frames, oldest first."""
        with self._cond:
            return list(self._frames)

    @property
    def latest_timestamp(self) -> float | None:
        """Timestamp of the newest buffered frame, or ``None`` if empty."""
        with self._cond:
            return self._frames[-1].timestamp if self._frames else None

    @property
    def first_timestamp(self) -> float | None:
        """Timestamp of the first frame ever pushed (the stream origin), or ``None``."""
        with self._cond:
            return self._first_timestamp

    @property
    def oldest_timestamp(self) -> float | None:
        """Timestamp of the oldest buffered frame, or ``None`` if empty."""
        with self._cond:
            return self._frames[0].timestamp if self._frames else None

    @property
    def overwritten(self) -> int:
        """Number of frames discarded because the buffer was full."""
        with self._cond:
            return self._overwritten

    @property
    def pushed(self) -> int:
        """Number of frames stored since creation."""
        with self._cond:
            return self._pushed

    def wait_for(self, timestamp: float, timeout: float | None = None) -> bool:
        """Block until a frame with ``timestamp >= timestamp`` is buffered.

        Returns early when the buffer is closed.

        Args:
            timestamp: The stream time to wait for.
            timeout: Longest wait in seconds; ``None`` waits indefinitely.

        Returns:
            ``True`` if such a frame is buffered, ``False`` on timeout or if the
            buffer closed without one.
        """

        def reached() -> bool:
            return bool(self._frames) and self._frames[-1].timestamp >= timestamp

        with self._cond:
            self._cond.wait_for(lambda: reached() or self._closed, timeout=timeout)
            return reached()

    def wait_for_frames(self, timeout: float | None = None) -> bool:
        """Block until at least one frame is buffered or the buffer closes.

        Returns:
            ``True`` if the buffer holds a frame.
        """
        with self._cond:
            self._cond.wait_for(lambda: bool(self._frames) or self._closed, timeout=timeout)
            return bool(self._frames)

    def close(self) -> None:
        """Mark the end of the stream and wake every waiter. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called (no more frames will arrive)."""
        with self._cond:
            return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)


class CaptureThread(threading.Thread):
    """Daemon thread that reads a source into a :class:`FrameRingBuffer`.

    The source is opened by the thread if it is not open yet (open it first to
    get open errors synchronously), and is closed when the thread ends. The
    buffer is closed at end of stream, on error and on :meth:`stop`, so a
    consumer blocked in :meth:`FrameRingBuffer.wait_for` always wakes up. An
    exception raised by the source is stored in :attr:`error` and re-raised in
    the consumer by :meth:`check`.

    Args:
        source: The frame source.
        buffer: The buffer to fill.
        close_source: Close the source when the thread ends.
    """

    def __init__(self, source: FrameSource, buffer: FrameRingBuffer, close_source: bool = True) -> None:
        super().__init__(name=f"capture[{source.description}]", daemon=True)
        self.source = source
        self.buffer = buffer
        self.close_source = close_source
        self.error: BaseException | None = None
        self.frames_captured = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Read frames until end of stream, :meth:`stop`, or a source error."""
        try:
            if not self.source.is_open:
                self.source.open()
            while not self._stop_event.is_set():
                frame = self.source.read()
                if frame is None:
                    logger.info("%s: end of stream after %d frames", self.source.description, self.frames_captured)
                    break
                if not self.buffer.push(frame):
                    break  # the consumer closed the buffer
                self.frames_captured += 1
        except Exception as exc:  # handed to the consumer via check(); not swallowed
            logger.error("capture from %s failed: %s", self.source.description, exc)
            self.error = exc
        finally:
            self.buffer.close()
            if self.close_source:
                self.source.close()

    def check(self) -> None:
        """Re-raise the source's exception in the calling thread, if there was one.

        Raises:
            Exception: Whatever the source raised (typically ``SourceError``).
        """
        if self.error is not None:
            raise self.error

    def request_stop(self) -> None:
        """Asks the thread to finish without waiting (safe from any thread, including a consumer's)."""
        self._stop_event.set()
        self.buffer.close()

    def stop(self, timeout: float | None = 2.0) -> bool:
        """Ask the thread to finish and wait for it.

        Args:
            timeout: Longest wait in seconds for the thread to end.

        Returns:
            ``True`` if the thread has ended.
        """
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        ended = not self.is_alive()
        if not ended:
            logger.warning("capture thread for %s did not stop within %s s", self.source.description, timeout)
        # Wake the consumer even if the source is stuck inside read().
        self.buffer.close()
        return ended
