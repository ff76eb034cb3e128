"""FrameRingBuffer and CaptureThread."""

from __future__ import annotations

import threading

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
