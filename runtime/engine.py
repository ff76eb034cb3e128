"""``StreamingEngine``: capture thread -> ring buffer -> inference worker running the :class:`StreamSession`.

Threads:

* **capture** (:class:`~runtime.ring_buffer.CaptureThread`): reads the source into the bounded
  :class:`~runtime.ring_buffer.FrameRingBuffer`. It never waits for inference (a full buffer overwrites its oldest
  frame).
* **inference worker** (one thread): polls the :class:`~runtime.windowing.WindowScheduler` (latest-wins: stale
  complete windows are reported as ``WindowSkipped``) and hands each window to :meth:`StreamSession.step`. The
  stages share one model and, on CPU, the same cores, so they run sequentially on this thread; overlapping them would
  only make them contend (see docs/design.md, "Batching and threads").

Errors in either thread stop both and are re-raised by :meth:`StreamingEngine.run` / :meth:`StreamingEngine.join`.
This module holds lifecycle only; the per-window algorithm is the session's.
"""

from __future__ import annotations

import logging
import threading
import time

from runtime.backends.base import ModelBackend
from runtime.config import StreamingConfig
from runtime.events import EventBus, WindowDecided
from runtime.frames import Frame
from runtime.ring_buffer import CaptureThread, FrameRingBuffer
from runtime.session import StreamSession
from runtime.sources import FrameSource
from runtime.stages import TokenizerLike
from runtime.stats import RunSummary
from runtime.windowing import Window, WindowScheduler

logger = logging.getLogger(__name__)

# How long blocking waits last before re-checking stop/errors; short enough for a responsive Ctrl-C.
_POLL_S = 0.1


class StreamingEngine:
    """Runs a frame source through a :class:`StreamSession` and publishes decisions and feedback as events.

    Use :meth:`run` (blocking), or :meth:`start` / :meth:`wait` / :meth:`stop` / :meth:`join` / :meth:`summary` when
    the caller's thread has other work (the webcam window).

    Args:
        config: The streaming configuration.
        backend: The model backend.
        source: The frame source (opened by the capture thread if not open; closed at the end).
        events: The event bus every event is published on (from the inference thread).
        tokenizer: The model's tokenizer.

    Raises:
        ConfigError: If the configuration does not fit the model.
    """

    def __init__(
        self,
        config: StreamingConfig,
        backend: ModelBackend,
        source: FrameSource,
        events: EventBus,
        tokenizer: TokenizerLike,
    ) -> None:
        self.config, self.backend, self.source, self.events = config, backend, source, events
        self.session = StreamSession(config, backend, tokenizer, publish=events.publish)
        self.buffer = FrameRingBuffer(config.capture.ring_buffer_frames)
        self.scheduler = WindowScheduler(config.window.window_s, config.window.overlap_s, config.window.latest_wins)
        self._capture: CaptureThread | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._ended_by = "end_of_stream"
        self._started_at = 0.0
        self._finished_at = 0.0
        self._first_ts: float | None = None

    @property
    def last_decision(self) -> WindowDecided | None:
        """The most recent decision (for a live view)."""
        return self.session.last_decision

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Prefills the system prefix, opens the source and starts the capture and inference threads.

        Raises:
            SourceError: If the source cannot be opened (raised here, not in a thread).
            RuntimeError: If the engine was already started.
        """
        if self._worker is not None:
            raise RuntimeError("StreamingEngine.start called twice; create a new engine per run")
        self.session.start()  # outside any window's latency
        if not self.source.is_open:
            self.source.open()
        self._started_at = time.perf_counter()
        self._capture = CaptureThread(self.source, self.buffer)
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._capture.start()
        self._worker.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the run to end (end of stream, stop or error); returns whether it has."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        """Whether the inference thread has ended."""
        return self._done.is_set()

    def stop(self, reason: str = "stopped") -> None:
        """Asks both threads to finish (the window in progress completes first). Idempotent."""
        if not self._stop.is_set():
            self._ended_by = reason
            self._stop.set()
        if self._capture is not None:
            self._capture.stop()

    def join(self, timeout: float = 30.0) -> None:
        """Waits for both threads after :meth:`stop` and re-raises an error either of them hit.

        Raises:
            RuntimeError: If the inference thread did not end within ``timeout``.
            Exception: The error that ended the worker or the capture.
        """
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                raise RuntimeError(f"inference thread did not stop within {timeout:.0f} s")
        if self._capture is not None:
            self._capture.stop()
        if self._finished_at == 0.0:
            self._finished_at = time.perf_counter()
        if self._error is not None:
            raise self._error
        if self._capture is not None:
            self._capture.check()

    def run(self, duration_s: float | None = None) -> RunSummary:
        """Streams until the source ends, ``duration_s`` of wall time passes, :meth:`stop`, or Ctrl-C.

        Returns:
            The run summary (``ended_by`` says why it ended; Ctrl-C gives ``interrupted``).

        Raises:
            Exception: Any error of the source or the inference stages, after both threads have stopped.
        """
        self.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self.wait(_POLL_S):  # short waits keep the main thread responsive to Ctrl-C
                if deadline is not None and time.monotonic() >= deadline:
                    self.stop("duration")
                    break
        except KeyboardInterrupt:
            logger.info("interrupted: stopping after the window in progress")
            self.stop("interrupted")
        finally:
            if not self._stop.is_set():
                self.stop(self._ended_by)
            self.join()
        return self.summary()

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by join(); never swallowed
            logger.error("inference worker failed: %s", exc)
            self._error = exc
            self._stop.set()
            if self._capture is not None:
                self._capture.request_stop()
        finally:
            self._finished_at = time.perf_counter()
            self._done.set()

    def _loop(self) -> None:
        assert self._capture is not None
        while not self._stop.is_set():
            if self.buffer.wait_for_frames(_POLL_S):
                break
            self._capture.check()
            if self.buffer.closed:
                self._capture.check()
                logger.warning("the source ended before delivering a frame")
                return
        else:
            return
        first = self.buffer.first_timestamp  # not the oldest buffered: that one moves when the buffer overwrites
        assert first is not None
        self._first_ts = first
        self.scheduler.set_origin(first)
        while not self._stop.is_set():
            self._capture.check()
            closed = self.buffer.closed  # read before polling: a window completed before the close is still seen
            latest = self.buffer.latest_timestamp
            result = self.scheduler.poll(latest) if latest is not None else None
            if result is not None:
                for stale in result.skipped:
                    self.session.skip(stale, "behind")
                if result.window is not None:
                    self._process(result.window)
                    continue
            if closed:
                self._capture.check()
                return
            self.buffer.wait_for(self.scheduler.window(self.scheduler.next_index).t_end, timeout=_POLL_S)

    def _process(self, window: Window) -> None:
        frames = self.buffer.frames_in(window.t_start, window.t_end)
        if not frames:
            logger.warning("window %d: its frames left the ring buffer before processing", window.index)
            self.session.skip(window, "overwritten")
            return
        self.session.step(window, frames, self.buffer.latest_timestamp)

    # ------------------------------------------------------------------ results
    def latest_frame(self) -> Frame | None:
        """The newest captured frame (for a live view), or ``None``."""
        return self.buffer.latest()

    def capture_fps(self) -> float:
        """Smoothed capture frame rate (0 before two frames)."""
        return self.buffer.fps()

    def summary(self) -> RunSummary:
        """The run's statistics so far."""
        end = self._finished_at or time.perf_counter()
        latest = self.buffer.latest_timestamp
        return self.session.summary(
            ended_by=self._ended_by,
            wall_s=(end - self._started_at) if self._started_at else 0.0,
            stream_s=(latest - self._first_ts) if latest is not None and self._first_ts is not None else 0.0,
            frames_captured=self._capture.frames_captured if self._capture is not None else 0,
            frames_overwritten=self.buffer.overwritten,
        )
