"""Bounded, thread-safe frame buffer and the capture thread that fills it.

Two modes (the engine picks one, see :class:`~runtime.engine.StreamingEngine`):

* **overwrite** (live cameras, and files paced like one under latest-wins): :meth:`FrameRingBuffer.push` never
  blocks; when full it overwrites the oldest frame and counts it as lost (:attr:`FrameRingBuffer.lost_until` says
  up to which timestamp frames were lost, so a window that lost frames is never decided from the rest);
* **backpressure** (files and synthetic streams processed offline): :meth:`FrameRingBuffer.push` waits once the
  buffered frames reach the end of the window after the one the consumer needs next (:meth:`FrameRingBuffer.retain`),
  so the capture decodes one window ahead of inference and no further (the buffer then holds about
  ``window_s + stride`` seconds of frames, whatever its capacity); a full buffer first releases frames older than
  the needed window, and otherwise waits too, so nothing the consumer needs is ever overwritten.

The consumer reads time ranges with :meth:`FrameRingBuffer.frames_in` when a window is complete.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from runtime.frames import Frame
from runtime.sources import FrameSource, SourceError, StreamEnd

logger = logging.getLogger(__name__)

# How long a blocked push sleeps before re-checking the consumer's progress (it is also woken by every change).
_PUSH_WAIT_S = 0.1


class FrameRingBuffer:
    """A fixed-capacity FIFO of frames ordered by timestamp.

    All methods are safe to call from several threads.

    Args:
        capacity: Maximum number of frames held; must be >= 1.
        backpressure: Make :meth:`push` wait for the consumer instead of overwriting frames it still needs.

    Raises:
        ValueError: If ``capacity`` is < 1.
    """

    def __init__(self, capacity: int, backpressure: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"capacity = {capacity}: must be >= 1")
        self.capacity = capacity
        self.backpressure = backpressure
        self._frames: deque[Frame] = deque(maxlen=capacity)
        self._cond = threading.Condition()
        self._closed = False
        self._pushed = 0
        self._overwritten = 0
        self._released = 0
        self._lost_until: float | None = None
        self._keep_from: float | None = None
        self._need_until: float | None = None
        self._ahead_until: float | None = None
        self._release_before: float | None = None
        self._first_timestamp: float | None = None
        self._fps = 0.0
        self._warned_overflow = False

    def push(self, frame: Frame) -> bool:
        """Append a frame; when the buffer is full, overwrite the oldest one or (backpressure) wait.

        Under backpressure a full buffer first releases frames older than :meth:`retain`'s ``t_start``; if every
        buffered frame is still needed and the needed window is complete, it waits until the consumer moves on
        (or the buffer closes). If the needed window is longer than the buffer (it can never complete), the
        oldest frame is overwritten after all, counted as lost, with one warning: waiting would deadlock.

        Args:
            frame: The frame; its timestamp must not be older than the newest
                frame already pushed.

        Returns:
            ``True`` if stored, ``False`` if the buffer was closed (frame dropped).

        Raises:
            ValueError: If ``frame.timestamp`` is older than the newest frame.
        """
        with self._cond:
            if self._frames and frame.timestamp < self._frames[-1].timestamp:
                raise ValueError(
                    f"frame {frame.index} timestamp {frame.timestamp:.6f} is older than the newest "
                    f"buffered frame ({self._frames[-1].timestamp:.6f}); timestamps must be non-decreasing"
                )
            if self.backpressure:
                self._make_room()
            if self._closed:
                return False
            if len(self._frames) == self.capacity:
                self._overwritten += 1
                self._lost_until = self._frames[0].timestamp
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

    def _make_room(self) -> None:
        """Backpressure (lock held): wait while the read-ahead is reached; when full, release consumed frames, else
        wait while the consumer has a complete window buffered."""
        while not self._closed:
            release = self._release_before
            while self._frames and release is not None and self._frames[0].timestamp < release:
                self._frames.popleft()  # never needed again: free it now, not only when the buffer is full
                self._released += 1
            if self._frames and self._ahead_until is not None and self._frames[-1].timestamp >= self._ahead_until:
                self._cond.wait(_PUSH_WAIT_S)
                continue
            if len(self._frames) < self.capacity:
                return
            if self._keep_from is not None and self._frames[0].timestamp < self._keep_from:
                self._frames.popleft()
                self._released += 1
                continue
            waiting_for_consumer = self._need_until is None or self._frames[-1].timestamp >= self._need_until
            if not waiting_for_consumer:
                if not self._warned_overflow:
                    logger.warning(
                        "ring buffer of %d frames cannot hold the window up to %.3f s (the source delivers more "
                        "frames per window than capture.ring_buffer_frames): overwriting its oldest frames",
                        self.capacity,
                        self._need_until,
                    )
                    self._warned_overflow = True
                return
            self._cond.wait(_PUSH_WAIT_S)

    def retain(self, t_start: float, t_end: float, *, ahead_until: float | None = None, history_s: float = 0.0) -> None:
        """Tells a backpressure buffer what the consumer needs next: frames from ``t_start`` until ``t_end``.

        Frames older than ``t_start - history_s`` are released at the next push; frames older than ``t_start``
        when room is needed. A push into a full buffer waits while the buffered frames already reach ``t_end`` (the
        consumer will take that window); any push waits while they reach ``ahead_until`` (how far the capture may
        read ahead; ``None``: up to the capacity).
        """
        with self._cond:
            self._keep_from, self._need_until, self._ahead_until = t_start, t_end, ahead_until
            self._release_before = t_start - history_s
            self._cond.notify_all()

    @property
    def lost_until(self) -> float | None:
        """Timestamp of the newest frame ever overwritten before the consumer released it (``None``: none lost)."""
        with self._cond:
            return self._lost_until

    @property
    def released(self) -> int:
        """Frames dropped under backpressure after the consumer no longer needed them (not lost)."""
        with self._cond:
            return self._released

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
        """Number of frames lost because the buffer was full (never counts frames released under backpressure)."""
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
    the consumer by :meth:`check`; one that is not a :class:`SourceError` (an
    OpenCV ``cv2.error``, an ``OSError``, a bad timestamp) is wrapped in one
    naming the source, so every source failure reaches the caller as a
    ``SourceError``. At end of stream :attr:`stream_end` says how it ended
    (set before the buffer closes).

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
        self.stream_end: StreamEnd | None = None
        self.frames_captured = 0
        self._last_timestamp: float | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Read frames until end of stream, :meth:`stop`, or a source error."""
        try:
            if not self.source.is_open:
                self.source.open()
            while not self._stop_event.is_set():
                frame = self.source.read()
                if frame is None:
                    self.stream_end = self._end_of_stream()
                    logger.info("%s: end of stream after %d frames", self.source.description, self.frames_captured)
                    break
                if not self.buffer.push(frame):
                    break  # the consumer closed the buffer
                self.frames_captured += 1
                self._last_timestamp = frame.timestamp
        except SourceError as exc:  # handed to the consumer via check(); not swallowed
            logger.info("capture from %s failed: %s", self.source.description, exc)
            self.error = exc
        except Exception as exc:  # a foreign error of the source's library: still a source failure
            logger.debug("capture from %s raised", self.source.description, exc_info=True)
            wrapped = SourceError(f"{self.source.description} failed: {type(exc).__name__}: {exc}")
            wrapped.__cause__ = exc
            self.error = wrapped
        finally:
            self.buffer.close()
            if self.close_source:
                self.source.close()

    def _end_of_stream(self) -> StreamEnd:
        """The source's :class:`StreamEnd`; for a source that reports none, its last frame plus one frame interval."""
        if self.source.stream_end is not None:
            return self.source.stream_end
        last = self._last_timestamp if self._last_timestamp is not None else 0.0
        end = StreamEnd("end_of_stream", last + 1.0 / self.source.nominal_fps, self.frames_captured)
        logger.info(
            "%s reports no stream end; taking its last frame plus one frame interval (%.3f s)",
            self.source.description,
            end.end_time,
        )
        return end

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
        # Closing first wakes a push waiting under backpressure and the consumer, even if read() is stuck.
        self.request_stop()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        ended = not self.is_alive()
        if not ended:
            logger.warning("capture thread for %s did not stop within %s s", self.source.description, timeout)
        return ended
