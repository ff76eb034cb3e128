"""FrameRingBuffer and CaptureThread."""

from __future__ import annotations

import threading
import time

import cv2
import pytest

from runtime.frames import Frame
from runtime.ring_buffer import CaptureThread, FrameRingBuffer
from runtime.sources import FrameSource, SourceError, SyntheticSource
from tests.runtime.helpers import make_frame


def test_push_keeps_order_and_reports_timestamps() -> None:
    buf = FrameRingBuffer(8)
    for i in range(5):
        assert buf.push(make_frame(i, i * 0.1))
    assert [f.index for f in buf.snapshot()] == [0, 1, 2, 3, 4]
    assert len(buf) == 5
    assert buf.latest_timestamp == pytest.approx(0.4)
    assert buf.oldest_timestamp == 0.0
    assert buf.overwritten == 0


def test_full_buffer_overwrites_oldest_and_counts() -> None:
    buf = FrameRingBuffer(3)
    for i in range(7):
        buf.push(make_frame(i, float(i)))
    assert len(buf) == 3
    assert [f.index for f in buf.snapshot()] == [4, 5, 6]
    assert buf.overwritten == 4
    assert buf.pushed == 7


def test_frames_in_is_inclusive_time_range() -> None:
    buf = FrameRingBuffer(16)
    for i in range(10):
        buf.push(make_frame(i, i * 0.5))
    assert [f.index for f in buf.frames_in(1.0, 2.5)] == [2, 3, 4, 5]
    assert buf.frames_in(10.0, 11.0) == []


def test_rejects_out_of_order_timestamp() -> None:
    buf = FrameRingBuffer(4)
    buf.push(make_frame(0, 1.0))
    with pytest.raises(ValueError, match="non-decreasing"):
        buf.push(make_frame(1, 0.5))


def test_invalid_capacity() -> None:
    with pytest.raises(ValueError, match="capacity = 0"):
        FrameRingBuffer(0)


def test_wait_for_returns_on_frame_timeout_and_close() -> None:
    buf = FrameRingBuffer(4)
    assert buf.wait_for(1.0, timeout=0.01) is False
    buf.push(make_frame(0, 1.5))
    assert buf.wait_for(1.0, timeout=0.01) is True
    buf.close()
    assert buf.closed
    # Closed without a frame that new: returns immediately with False.
    assert buf.wait_for(5.0, timeout=None) is False
    assert buf.push(make_frame(1, 2.0)) is False
    assert len(buf) == 1


def test_concurrent_producer_consumer_sees_ordered_frames() -> None:
    buf = FrameRingBuffer(32)
    n = 2000
    seen: list[int] = []

    def produce() -> None:
        for i in range(n):
            buf.push(make_frame(i, i / 30.0))
        buf.close()

    def consume() -> None:
        last = -1
        while True:
            got_new = buf.wait_for(last / 30.0 + 1e-9 if last >= 0 else 0.0, timeout=1.0)
            for f in buf.snapshot():
                if f.index > last:
                    seen.append(f.index)
                    last = f.index
            if not got_new and buf.closed:
                return

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == n - 1
    assert len(buf) == 32
    assert buf.pushed == n and buf.overwritten == n - 32


def test_capture_thread_fills_buffer_and_closes_at_end() -> None:
    source = SyntheticSource(fps=10.0, duration_s=1.0, size=(32, 32))
    buf = FrameRingBuffer(64)
    thread = CaptureThread(source, buf)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive()
    thread.check()
    assert buf.closed
    assert thread.frames_captured == 10
    assert [f.index for f in buf.snapshot()] == list(range(10))
    assert not source.is_open


class _FailingSource(FrameSource):
    """Delivers two frames, then fails like an unplugged camera."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    @property
    def nominal_fps(self) -> float:
        return 30.0

    def _open(self) -> None:
        pass

    def _read(self) -> Frame | None:
        if self.count == 2:
            raise SourceError("camera index 7 failed 30 consecutive reads")
        self.count += 1
        return make_frame(self.count, self.count / 30.0)

    def _close(self) -> None:
        pass


def test_capture_thread_hands_source_error_to_consumer() -> None:
    buf = FrameRingBuffer(8)
    thread = CaptureThread(_FailingSource(), buf)
    thread.start()
    # The consumer wakes because the buffer is closed on error.
    assert buf.wait_for(100.0, timeout=5) is False
    thread.join(timeout=5)
    assert len(buf) == 2
    assert isinstance(thread.error, SourceError)
    with pytest.raises(SourceError, match="camera index 7"):
        thread.check()


def test_capture_thread_stop_ends_endless_paced_stream() -> None:
    source = SyntheticSource(fps=100.0, duration_s=3600.0, size=(32, 32), paced=True)
    buf = FrameRingBuffer(16)
    thread = CaptureThread(source, buf)
    thread.start()
    assert buf.wait_for(0.05, timeout=5)
    assert thread.stop(timeout=5) is True
    assert buf.closed
    thread.check()


def _pushing(buf: FrameRingBuffer, frames: int, fps: float = 10.0) -> threading.Thread:
    thread = threading.Thread(target=lambda: [buf.push(make_frame(i, i / fps)) for i in range(frames)], daemon=True)
    thread.start()
    return thread


def test_backpressure_push_waits_for_the_consumer_instead_of_overwriting() -> None:
    """A full backpressure buffer whose frames the consumer still needs makes the producer wait; nothing is lost."""
    buf = FrameRingBuffer(5, backpressure=True)
    buf.retain(0.0, 0.4)  # the next window is [0, 0.4]: frames 0-4, complete once frame 4 is in
    producer = _pushing(buf, 8)
    assert buf.wait_for(0.4, timeout=5)
    time.sleep(0.2)
    assert producer.is_alive() and len(buf) == 5 and buf.overwritten == 0  # waiting, not overwriting
    buf.retain(0.3, 0.7)  # the consumer took [0, 0.4]: frames before 0.3 may go
    producer.join(timeout=5)
    assert [f.index for f in buf.snapshot()] == [3, 4, 5, 6, 7]
    assert (buf.overwritten, buf.released, buf.lost_until) == (0, 3, None)


def test_backpressure_reads_at_most_to_the_read_ahead_limit() -> None:
    """``ahead_until`` bounds how far the capture runs ahead of the consumer, whatever the capacity."""
    buf = FrameRingBuffer(100, backpressure=True)
    buf.retain(0.0, 0.2, ahead_until=0.5)
    producer = _pushing(buf, 50)
    assert buf.wait_for(0.5, timeout=5)
    time.sleep(0.2)
    assert producer.is_alive() and buf.latest_timestamp == pytest.approx(0.5)
    buf.retain(0.3, 0.5, ahead_until=None, history_s=0.1)
    producer.join(timeout=5)
    assert buf.oldest_timestamp == pytest.approx(0.2)  # released eagerly: before 0.3 - 0.1


def test_backpressure_overwrites_only_when_the_window_cannot_fit() -> None:
    """A window longer than the buffer can never complete: waiting would deadlock, so the oldest frame goes (lost)."""
    buf = FrameRingBuffer(3, backpressure=True)
    buf.retain(0.0, 1.0)
    producer = _pushing(buf, 5)
    producer.join(timeout=5)
    assert not producer.is_alive() and buf.overwritten == 2 and buf.lost_until == pytest.approx(0.1)


def test_overwrite_mode_records_up_to_when_frames_were_lost() -> None:
    buf = FrameRingBuffer(3)
    for i in range(5):
        buf.push(make_frame(i, i / 10))
    assert buf.lost_until == pytest.approx(0.1) and buf.released == 0


def test_close_wakes_a_waiting_push() -> None:
    buf = FrameRingBuffer(2, backpressure=True)
    buf.retain(0.0, 0.1)
    producer = _pushing(buf, 4)
    assert buf.wait_for(0.1, timeout=5)
    buf.close()
    producer.join(timeout=5)
    assert not producer.is_alive() and len(buf) == 2


class _ForeignError(_FailingSource):
    def _read(self) -> Frame | None:
        raise cv2.error("OpenCV(4.10.0) error: (-215:Assertion failed) !_src.empty()")


def test_capture_thread_wraps_a_foreign_exception_in_a_source_error() -> None:
    """A ``cv2.error`` (or any non-SourceError) from the source reaches the consumer as a SourceError naming it."""
    thread = CaptureThread(_ForeignError(), FrameRingBuffer(8))
    thread.start()
    thread.join(timeout=5)
    with pytest.raises(SourceError, match=r"_ForeignError failed: error: OpenCV.*!_src\.empty") as info:
        thread.check()
    assert isinstance(info.value.__cause__, cv2.error)


def test_capture_thread_records_how_the_stream_ended() -> None:
    """``stream_end`` is the source's own; a source that reports none gets its last frame plus one interval."""
    thread = CaptureThread(SyntheticSource(fps=10.0, duration_s=1.0, size=(32, 32)), FrameRingBuffer(64))
    thread.start()
    thread.join(timeout=5)
    end = thread.stream_end
    assert end is not None and (end.reason, end.end_time) == ("end_of_stream", 1.0)

    class Silent(_FailingSource):
        def _read(self) -> Frame | None:
            self.count += 1
            return make_frame(self.count, self.count / 30.0) if self.count <= 3 else None

    thread = CaptureThread(Silent(), FrameRingBuffer(8))
    thread.start()
    thread.join(timeout=5)
    assert thread.stream_end is not None and thread.stream_end.end_time == pytest.approx(4 / 30)
