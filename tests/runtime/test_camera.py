"""CameraSource with fake captures: measured delivery, stalls, reconnect with back-off, missing devices, camera.* keys.

Run: ``.venv/bin/python -m pytest -q tests/runtime/test_camera.py``. A fake clock advances with the fake capture, so
measured rates and stall gaps are exact and nothing depends on the machine's speed.
"""

from __future__ import annotations

import logging
import re
import sys
import threading

import numpy as np
import pytest

from runtime.config import CameraConfig, ConfigError, config_from_dict
from runtime.sources import CameraSource, SourceError, source_from_spec


class FakeClock:
    """A clock the fake capture advances."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeCapture:
    """Mimics cv2.VideoCapture: a claimed mode, a delivered rate and size, then optional failures or a hang.

    Args:
        clock: Advanced by ``1 / fps`` per delivered frame.
        fps: Delivered frame rate.
        size: Delivered ``(width, height)``.
        good_reads: Frames delivered before it starts failing (``None``: never fails).
        fail_reads: Failed reads after the good ones before it recovers (``None``: fails for ever).
        hang: If set, reads after the good ones block until this event is set.
        opened: What ``isOpened`` answers.
    """

    def __init__(
        self,
        clock: FakeClock,
        fps: float = 25.0,
        size: tuple[int, int] = (64, 48),
        good_reads: int | None = None,
        fail_reads: int | None = None,
        hang: threading.Event | None = None,
        opened: bool = True,
    ) -> None:
        self.clock, self.fps, self.size = clock, fps, size
        self.good_reads, self.fail_reads, self.hang, self.opened = good_reads, fail_reads, hang, opened
        self.reads = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def get(self, prop: int) -> float:
        import cv2

        claimed = {cv2.CAP_PROP_FPS: 30.0, cv2.CAP_PROP_FRAME_WIDTH: 1280.0, cv2.CAP_PROP_FRAME_HEIGHT: 720.0}
        return claimed.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reads += 1
        if self.good_reads is not None and self.reads > self.good_reads:
            if self.hang is not None:
                self.hang.wait(timeout=5)
                return False, None
            if self.fail_reads is None or self.reads <= self.good_reads + self.fail_reads:
                return False, None
        self.clock.now += 1.0 / self.fps
        bgr = np.zeros((self.size[1], self.size[0], 3), np.uint8)
        bgr[..., 0] = 255  # blue in BGR
        return True, bgr

    def release(self) -> None:
        self.released = True


def _factory(*captures: FakeCapture):  # noqa: ANN202 - a capture factory
    """A capture factory handing out ``captures`` in order (the last one again when they run out)."""
    queue = list(captures)

    def make(_index: int) -> FakeCapture:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return make


def test_reports_the_rate_and_size_it_delivers_not_the_drivers_claim() -> None:
    """The driver claims 1280x720 at 30 fps; the camera delivers 64x48 at 15 fps, and that is what is reported."""
    clock = FakeClock()
    cam = CameraSource(0, probe_frames=10, capture_factory=_factory(FakeCapture(clock, fps=15.0)), clock=clock)
    with cam:
        assert cam.nominal_fps == pytest.approx(15.0)
        assert cam.reported_size == (64, 48) and cam.driver_fps == 30.0
        frame = cam.read()
    assert frame is not None and frame.index == 0 and frame.image.shape == (48, 64, 3)


def test_converts_bgr_and_tolerates_transient_failures() -> None:
    """Frames arrive in RGB order; a few failed reads below the limit are absorbed."""
    clock = FakeClock()
    fake = FakeCapture(clock, good_reads=10, fail_reads=2)
    with CameraSource(0, max_consecutive_failures=5, capture_factory=_factory(fake), clock=clock) as cam:
        frame = cam.read()
    assert frame is not None and frame.image[0, 0].tolist() == [0, 0, 255]  # blue in RGB
    assert fake.released


def test_consecutive_failures_without_reconnect_raise() -> None:
    """With reconnecting off, ``max_consecutive_failures`` failed reads end the stream with the index named."""
    clock = FakeClock()
    fake = FakeCapture(clock, good_reads=10)
    with CameraSource(3, max_consecutive_failures=4, capture_factory=_factory(fake), clock=clock) as cam:
        with pytest.raises(SourceError, match="camera index 3 failed 4 consecutive reads"):
            cam.read()


def test_read_timeout_does_not_hang() -> None:
    """A driver read that blocks is abandoned after ``read_timeout_s``."""
    clock = FakeClock()
    release = threading.Event()
    fake = FakeCapture(clock, good_reads=10, hang=release)
    cam = CameraSource(1, read_timeout_s=0.05, capture_factory=_factory(fake), clock=clock)
    cam.open()
    try:
        with pytest.raises(SourceError, match="camera index 1 delivered no frame within 0.1 s"):
            cam.read()
    finally:
        cam.close()
        release.set()


def test_reconnects_after_a_stall_and_the_gap_shows_in_stream_time(caplog: pytest.LogCaptureFixture) -> None:
    """A stalled camera is released and reopened; frames resume, indices continue, the stall is a timestamp gap."""
    clock = FakeClock()
    stalled = FakeCapture(clock, good_reads=12)
    revived = FakeCapture(clock)

    def factory(index: int) -> FakeCapture:
        if factory.calls:  # type: ignore[attr-defined]
            clock.now += 40.0  # the camera was away for 40 s: longer than context.timeout_s (30 s)
        factory.calls += 1  # type: ignore[attr-defined]
        return stalled if factory.calls == 1 else revived  # type: ignore[attr-defined]

    factory.calls = 0  # type: ignore[attr-defined]
    cam = CameraSource(
        2, max_consecutive_failures=3, reconnect_attempts=3, reconnect_backoff_s=0.0, capture_factory=factory,
        clock=clock,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="runtime.sources.camera"), cam:
        frames = [cam.read() for _ in range(4)]
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == [0, 1, 2, 3]  # type: ignore[union-attr]
    gaps = np.diff([f.timestamp for f in frames])  # type: ignore[union-attr]
    assert gaps[1] > 30.0 and gaps[0] < 1.0 and gaps[2] < 1.0
    assert cam.reconnects == 1 and stalled.released
    assert "reconnecting (up to 3 attempts)" in caplog.text and "reopened on attempt 1/3" in caplog.text


def test_camera_that_never_comes_back_names_index_and_attempts(caplog: pytest.LogCaptureFixture) -> None:
    """Every reopen fails: after ``reconnect_attempts`` logged attempts, a SourceError names index and attempts."""
    clock = FakeClock()
    first = FakeCapture(clock, good_reads=10)
    gone = FakeCapture(clock, opened=False)
    cam = CameraSource(
        4, max_consecutive_failures=2, reconnect_attempts=3, reconnect_backoff_s=0.0,
        capture_factory=_factory(first, gone), clock=clock,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="runtime.sources.camera"), cam:
        with pytest.raises(SourceError, match="camera index 4 failed 2 consecutive reads .* did not come back after 3"):
            cam.read()
    assert caplog.text.count("reconnect attempt") == 3


def test_reopened_camera_that_never_delivers_still_ends() -> None:
    """Reopens that succeed but deliver nothing use up the same attempt budget instead of looping for ever."""
    clock = FakeClock()
    first = FakeCapture(clock, good_reads=10)
    mute = FakeCapture(clock, good_reads=0)
    cam = CameraSource(
        5, max_consecutive_failures=2, reconnect_attempts=2, reconnect_backoff_s=0.0,
        capture_factory=_factory(first, mute), clock=clock,
    )  # fmt: skip
    with cam, pytest.raises(SourceError, match="camera index 5 .* did not come back after 2 reconnect attempts"):
        cam.read()
    assert cam.reconnects == 2


def test_missing_camera_names_the_index() -> None:
    """Index 99 does not exist: the error names it (and on Linux the missing /dev node)."""
    with pytest.raises(SourceError, match="camera index 99 could not be opened") as caught:
        CameraSource(99, open_timeout_s=5.0).open()
    if sys.platform.startswith("linux"):
        assert "/dev/video99 does not exist" in str(caught.value)


def test_source_from_spec_applies_the_camera_keys() -> None:
    """``--source N`` builds the camera with the configured timeouts, reconnect budget and requested mode."""
    cfg = CameraConfig(width=640, height=480, read_timeout_s=0.5, reconnect_attempts=7, reconnect_backoff_s=0.25)
    cam = source_from_spec("1", camera=cfg)
    assert isinstance(cam, CameraSource) and cam.index == 1
    assert (cam._width, cam._height, cam._requested_fps) == (640, 480, None)
    assert (cam._read_timeout_s, cam._reconnect_attempts, cam._backoff_s) == (0.5, 7, 0.25)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"read_timeout_s": 0}, "camera.read_timeout_s = 0.0: must be > 0 and <= 60"),
        ({"reconnect_attempts": -1}, "camera.reconnect_attempts = -1: must be in [0, 1000]"),
        ({"reconnect_backoff_s": 2.0, "reconnect_backoff_max_s": 1.0}, "camera.reconnect_backoff_max_s = 1.0"),
        ({"width": 8}, "camera.width = 8: must be 0 (driver default) or in [16, 8192]"),
        ({"retries": 3}, "camera.retries: unknown key"),
    ],
)
def test_bad_camera_keys_name_the_key(section: dict, message: str) -> None:
    """Each camera.* key is range-checked; the error names the dotted key."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"camera": section})


def test_stall_and_reconnect_through_the_engine_clears_the_context_on_timeout() -> None:
    """A 40 s outage survived by reconnecting: the first window after it clears the context (``context.timeout_s``)."""
    import time

    from runtime.config import apply_overrides
    from runtime.engine import StreamingEngine
    from runtime.events import ContextCleared, Event, EventBus, WindowDecided
    from tests.runtime.fakes import CharTokenizer, FakeBackend

    clock = FakeClock()
    hold = threading.Event()  # the revived camera delivers 4 s, then blocks until the test is done
    captures = [FakeCapture(clock, good_reads=110), FakeCapture(clock, good_reads=100, hang=hold)]

    def factory(index: int) -> FakeCapture:
        if len(captures) == 1:
            clock.now += 40.0  # the outage: longer than context.timeout_s (30 s)
        return captures.pop(0) if len(captures) > 1 else captures[0]

    cam = CameraSource(0, max_consecutive_failures=2, read_timeout_s=10.0, reconnect_attempts=1,
                       reconnect_backoff_s=0.0, capture_factory=factory, clock=clock)  # fmt: skip
    cfg = apply_overrides(config_from_dict({}), {
        "capture.ring_buffer_frames": 512, "window.latest_wins": False, "policy.every_n.n": 1000,
    })  # fmt: skip
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    engine = StreamingEngine(cfg, FakeBackend(), cam, bus, CharTokenizer())
    engine.start()
    outage_end = 100.0 + 110 / 25 + 40.0
    deadline = time.monotonic() + 60
    try:
        while not any(isinstance(e, WindowDecided) and e.t_start > outage_end for e in list(events)):
            assert time.monotonic() < deadline and not engine.done, "no window after the outage was decided"
            time.sleep(0.05)
    finally:
        hold.set()  # the revived camera now fails too, and with the one attempt used up the run ends
        engine.stop()
    with pytest.raises(SourceError, match="did not come back after 1 reconnect attempts"):
        engine.join()
    clears = [e for e in events if isinstance(e, ContextCleared)]
    assert cam.reconnects == 2  # after the outage, and the last reopen that never delivered
    assert [e.reason for e in clears] == ["timeout"]
