"""``StreamingEngine``: capture thread -> ring buffer -> inference worker running the :class:`StreamSession`.

Threads:

* **capture** (:class:`~runtime.ring_buffer.CaptureThread`): reads the source into the bounded
  :class:`~runtime.ring_buffer.FrameRingBuffer`. A live source never waits for inference (a full buffer overwrites
  its oldest frame). Offline (``window.latest_wins: false``) a file or synthetic source waits instead
  (*backpressure*), so every window is processed and the capture decodes at most one buffer ahead of inference.
* **inference worker** (one thread): polls the :class:`~runtime.windowing.WindowScheduler` (latest-wins: stale
  complete windows are reported as ``WindowSkipped``) and hands each window to :meth:`StreamSession.step`. The
  stages share one model and, on CPU, the same cores, so they run sequentially on this thread; overlapping them would
  only make them contend (see docs/design.md, "Batching and threads").

No window is lost silently: every window of the stream is decided or published as ``WindowSkipped`` with a reason
(``runtime.events.SKIP_REASONS``). At the end of a finite stream the source's
:class:`~runtime.sources.StreamEnd` decides the last (partial) window; a truncated source publishes
``SourceTruncated`` and ends the run as ``source_truncated``. When the source fails, the windows already complete
are still decided before the error is raised; when the run is stopped (Ctrl-C, SIGTERM, ``--duration``) the window in
progress is finished and the complete ones left are reported ``stopped``; a second Ctrl-C / SIGTERM while finishing
abandons the window in progress.

Errors in either thread stop both and are re-raised by :meth:`StreamingEngine.run` / :meth:`StreamingEngine.join`;
:meth:`StreamingEngine.summary` is valid afterwards. This module holds lifecycle only; the per-window algorithm is
the session's.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from runtime.backends.base import ModelBackend
from runtime.config import StreamingConfig, check_ring_buffer
from runtime.events import Event, EventBus, SourceTruncated, WindowDecided, WindowSkipped
from runtime.frames import Frame
from runtime.memory import release_free_heap
from runtime.ring_buffer import CaptureThread, FrameRingBuffer
from runtime.session import StreamSession
from runtime.shutdown import stop_reason
from runtime.sources import CameraSource, FrameSource, StreamEnd
from runtime.stages import TokenizerLike
from runtime.stats import RunSummary
from runtime.windowing import Window, WindowScheduler

logger = logging.getLogger(__name__)

# How long blocking waits last before re-checking stop/errors; short enough for a responsive Ctrl-C.
_POLL_S = 0.1


class StreamingEngine:
    """Runs a frame source through a :class:`StreamSession` and publishes decisions and feedback as events.

    Use :meth:`run` (blocking), or :meth:`start` / :meth:`wait` / :meth:`stop` / :meth:`finish` / :meth:`summary`
    when the caller's thread has other work (the webcam window).

    Args:
        config: The streaming configuration.
        backend: The model backend.
        source: The frame source (opened by :meth:`start` if not open; closed at the end).
        events: The event bus every event is published on (from the inference thread).
        tokenizer: The model's tokenizer.
        live: Whether the source is live (it cannot wait for the worker); default: a :class:`CameraSource` is.
            Offline (``window.latest_wins: false``) a source that is not live gets backpressure.

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
        *,
        live: bool | None = None,
    ) -> None:
        self.config, self.backend, self.source, self.events = config, backend, source, events
        self.session = StreamSession(config, backend, tokenizer, publish=self._publish)
        self.live = isinstance(source, CameraSource) if live is None else live
        self.backpressure = not config.window.latest_wins and not self.live
        self.buffer = FrameRingBuffer(config.capture.ring_buffer_frames, backpressure=self.backpressure)
        w = config.window
        self.scheduler = WindowScheduler(w.window_s, w.overlap_s, w.latest_wins, min_tail_s=w.min_tail_s)
        self._capture: CaptureThread | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._ended_by = "end_of_stream"
        self._started_at = 0.0
        self._finished_at = 0.0
        self._first_ts: float | None = None
        self._end: StreamEnd | None = None
        self._current: Window | None = None  # the window being processed (set by the worker)
        self._window_at_stop: int | None = None
        self._window_at_stop_outcome = ""
        self._warnings: list[str] = []
        # Guards publishing against abandonment: after a second signal the worker's late events are dropped.
        self._publish_lock = threading.Lock()
        self._abandoned = False
        self._late_events = 0
        self._unprocessed_taken = False

    @property
    def last_decision(self) -> WindowDecided | None:
        """The most recent decision (for a live view)."""
        return self.session.last_decision

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Prefills the system prefix, opens the source and starts the capture and inference threads.

        Raises:
            SourceError: If the source cannot be opened (raised here, not in a thread).
            ConfigError: If ``capture.ring_buffer_frames`` cannot hold one window at the source's frame rate.
            RuntimeError: If the engine was already started.
        """
        if self._worker is not None:
            raise RuntimeError("StreamingEngine.start called twice; create a new engine per run")
        self.session.start()  # outside any window's latency
        if not self.source.is_open:
            self.source.open()
        try:
            check_ring_buffer(self.config, self.source.nominal_fps, self.source.description)
        except Exception:
            self.source.close()
            raise
        release_free_heap()  # what model and tokenizer loading freed, before the stream's own peaks
        if self.backpressure:
            logger.info("offline: capture from %s waits for inference (every window processed)",
                        self.source.description)
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
        """Asks both threads to finish; the window in progress completes first (logged). Idempotent.

        Args:
            reason: ``RunSummary.ended_by`` (``stopped``, ``duration``, ``interrupted``, ``terminated``); ignored
                when the run has already ended by itself.
        """
        if not self._stop.is_set():
            if not self._done.is_set():
                self._ended_by = reason
                current = self._current
                if current is not None:
                    self._window_at_stop, self._window_at_stop_outcome = current.index, "finished"
                    logger.warning(
                        "%s: finishing window %d (in progress), then stopping; a second Ctrl-C / SIGTERM abandons it",
                        reason,
                        current.index,
                    )
            self._stop.set()
        if self._capture is not None:
            self._capture.request_stop()  # no wait here: join() waits, so a second signal meets finish()

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

    def finish(self) -> None:
        """Stops the run if it has not ended and waits for it, as long as it takes the window in progress.

        A Ctrl-C / SIGTERM (``KeyboardInterrupt``) during the wait abandons the window in progress instead
        (:meth:`abandon`) and returns at once.

        Raises:
            Exception: The error that ended the worker or the capture (not after abandoning).
        """
        try:
            if not self._stop.is_set():
                self.stop(self._ended_by)
            while not self._done.wait(_POLL_S):  # short waits keep the main thread responsive to signals
                pass
            self.join()
        except KeyboardInterrupt as exc:
            self.abandon(stop_reason(exc))

    def abandon(self, reason: str) -> None:
        """Gives up on the window in progress without waiting (a second signal); the worker's later events are
        dropped, the window is reported ``abandoned`` unless it was already decided, and the complete windows left
        are reported ``stopped``."""
        # The worker may be blocked inside a publish (a stalled reader of stdout): do not wait for it forever.
        locked = self._publish_lock.acquire(timeout=1.0)
        self._abandoned = True
        if locked:
            self._publish_lock.release()
        current = self._current
        logger.warning("%s again: abandoning %s", reason, f"window {current.index}" if current else "the run")
        if current is not None:
            self._window_at_stop, self._window_at_stop_outcome = current.index, "abandoned"
            decided = self.session.last_decision
            if decided is None or decided.window_index != current.index:
                self.session.stats.skipped["abandoned"] += 1
                self.events.publish(WindowSkipped(current.index, "abandoned", f"{reason} while it was processed"))
        self._take_unprocessed("stopped", force=True)
        self._finished_at = time.perf_counter()

    @property
    def threads_alive(self) -> bool:
        """Whether the inference or the capture thread still runs (after :meth:`abandon`, or a source stuck in
        ``read``): the backend and the source must then not be closed under them."""
        return any(t is not None and t.is_alive() for t in (self._worker, self._capture))

    def run(self, duration_s: float | None = None) -> RunSummary:
        """Streams until the source ends, ``duration_s`` of wall time passes, :meth:`stop`, Ctrl-C or SIGTERM.

        Returns:
            The run summary (``ended_by`` says why it ended: ``interrupted`` for Ctrl-C, ``terminated`` for the
            :class:`~runtime.shutdown.Terminated` a SIGTERM handler raises).

        Raises:
            Exception: Any error of the source or the inference stages, after both threads have stopped
                (:meth:`summary` still describes the run).
        """
        self.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self.wait(_POLL_S):  # short waits keep the main thread responsive to Ctrl-C
                if deadline is not None and time.monotonic() >= deadline:
                    self.stop("duration")
                    break
        except KeyboardInterrupt as exc:
            logger.info("%s: stopping after the window in progress", stop_reason(exc))
            try:
                self.stop(stop_reason(exc))
            except KeyboardInterrupt as again:  # a second signal before finish() could see it
                self.abandon(stop_reason(again))
                return self.summary()
        self.finish()
        return self.summary()

    # ------------------------------------------------------------------ worker
    def _publish(self, event: Event) -> None:
        with self._publish_lock:
            if self._abandoned:
                self._late_events += 1
                logger.debug("run abandoned: dropping the late %s event", event.type)
                return
            self.events.publish(event)

    def _work(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by join(); never swallowed
            logger.debug("inference worker failed", exc_info=True)
            self._error = exc
            if self._capture is None or exc is not self._capture.error:
                self._ended_by = "output_closed" if isinstance(exc, BrokenPipeError) else "error"
                self._report_failed_window(exc)
            self._stop.set()
            if self._capture is not None:
                self._capture.request_stop()
        finally:
            self._finished_at = time.perf_counter()
            self._done.set()

    def _report_failed_window(self, exc: BaseException) -> None:
        """Publishes the window whose processing raised as skipped ``error`` (unless it was decided already)."""
        current = self._current
        decided = self.session.last_decision
        already_decided = decided is not None and current is not None and decided.window_index == current.index
        if current is None or isinstance(exc, OSError) or already_decided:
            return  # an OSError is the event output itself failing: publishing more would fail again
        try:
            self.session.skip(current, "error", f"{type(exc).__name__}: {exc}")
        except Exception:  # the run is failing with ``exc`` already; that is the error the caller gets
            logger.debug("could not publish the failed window %d", current.index, exc_info=True)

    def _loop(self) -> None:
        capture = self._capture
        assert capture is not None
        while not self.buffer.wait_for_frames(_POLL_S):
            if self._stop.is_set():
                return
            if self.buffer.closed:
                capture.check()
                logger.warning("%s ended before delivering a frame", self.source.description)
                if capture.stream_end is not None:
                    self._note_end(capture.stream_end)
                return
        first = self.buffer.first_timestamp  # not the oldest buffered: that one moves when the buffer overwrites
        assert first is not None
        self._first_ts = first
        self.scheduler.set_origin(first)
        self._retain_next()
        while True:
            if self._stop.is_set():
                self._take_unprocessed("stopped")
                return
            closed = self.buffer.closed  # read before polling: a window completed before the close is still seen
            latest = self.buffer.latest_timestamp
            assert latest is not None
            end = capture.stream_end if closed and capture.error is None else None
            if end is not None and self._end is None:
                self._note_end(end)
            result = self.scheduler.poll(latest, end.end_time if end is not None else None)
            for stale in result.skipped:
                self.session.skip(stale, "behind")
            if result.window is not None:
                self._process(result.window)
                continue
            if not closed:
                self.buffer.wait_for(self.scheduler.window(self.scheduler.next_index).t_end, timeout=_POLL_S)
                continue
            if self._stop.is_set():
                continue  # closed by stop(): account for the rest above
            if capture.error is not None:
                # The complete windows were decided above; the one the failure cut short is reported, then the error.
                self._ended_by = "source_error"
                self._take_unprocessed("source_error", detail=str(capture.error))
                raise capture.error
            if end is None:
                raise RuntimeError("the capture closed the ring buffer without an error or a stream end")
            tail = self.scheduler.tail_skipped(end.end_time)
            if tail is not None:
                window, length = tail
                self.session.skip(
                    window, "short_tail", f"the last {length:.3f} s (< window.min_tail_s) after the last window"
                )
            return

    def _note_end(self, end: StreamEnd) -> None:
        """Records how a finite stream ended; a truncated one is a warning event and ends the run as such."""
        self._end = end
        if end.reason == "truncated":
            self._ended_by = "source_truncated"
            message = end.message or f"{self.source.description} ended early after {end.frames_read} frames"
            self._warnings.append(f"source truncated: {message}")
            logger.warning("source truncated: %s", message)
            self._publish(SourceTruncated(end.end_time, end.frames_read, end.frames_expected, message))

    def _retain_next(self) -> None:
        """Tells a backpressure buffer which frames the next window needs, and to read one window further ahead."""
        if self.backpressure:
            nxt = self.scheduler.window(self.scheduler.next_index)
            ahead = self.scheduler.window(self.scheduler.next_index + 1)
            # One stride of history: a final window [end - window_s, end] starts less than a stride before nxt.
            self.buffer.retain(nxt.t_start, nxt.t_end, ahead_until=ahead.t_end, history_s=self.scheduler.stride_s)

    def _take_unprocessed(self, reason: str, detail: str = "", force: bool = False) -> None:
        """Reports every window that will now never be processed (once; ``force``: from the main thread)."""
        with self._publish_lock:
            if self._unprocessed_taken or (self._abandoned and not force):
                return
            self._unprocessed_taken = True
        latest = self.buffer.latest_timestamp
        if latest is None or self.scheduler.origin is None:
            return
        for window in self.scheduler.take_unprocessed(latest):
            if force:  # after abandon() the worker's publishing is closed; this thread reports directly
                self.session.stats.skipped[reason] += 1
                self.events.publish(WindowSkipped(window.index, reason, detail))
            else:
                self.session.skip(window, reason, detail)

    def _process(self, window: Window) -> None:
        if window.final:
            # A full buffer may have released frames of the stride before it under backpressure: start where frames
            # exist (in practice the buffer holds that stride and the final window is [end - window_s, end]).
            oldest = self.buffer.oldest_timestamp
            if oldest is not None and oldest > window.t_start:
                window = replace(window, t_start=oldest)
        frames = self.buffer.frames_in(window.t_start, window.t_end)
        lost = self.buffer.lost_until
        self._retain_next()  # the window's frames are copied out: the capture may release what it no longer needs
        if lost is not None and lost >= window.t_start:
            detail = f"frames up to {lost:.3f} s left the ring buffer (capture.ring_buffer_frames) before its turn"
            logger.warning("window %d: %s", window.index, detail)
            self.session.skip(window, "overwritten", detail)
            return
        if not frames:
            detail = f"the source delivered no frame in [{window.t_start:.3f}, {window.t_end:.3f}] s"
            logger.warning("window %d: %s", window.index, detail)
            self.session.skip(window, "no_frames", detail)
            return
        self._current = window
        self.session.step(window, frames, lambda: self.buffer.latest_timestamp)  # read after inference
        self._current = None  # not on an error: _work reports the window that raised

    # ------------------------------------------------------------------ results
    def latest_frame(self) -> Frame | None:
        """The newest captured frame (for a live view), or ``None``."""
        return self.buffer.latest()

    def capture_fps(self) -> float:
        """Smoothed capture frame rate (0 before two frames)."""
        return self.buffer.fps()

    def summary(self) -> RunSummary:
        """The run's statistics so far (valid after an error too)."""
        end = self._finished_at or time.perf_counter()
        latest = self.buffer.latest_timestamp
        covered = self._end.end_time if self._end is not None else latest
        warnings = list(self._warnings)
        if self.buffer.overwritten and self.backpressure:
            warnings.append(f"{self.buffer.overwritten} frames were overwritten in the ring buffer before use")
        return self.session.summary(
            ended_by=self._ended_by,
            wall_s=(end - self._started_at) if self._started_at else 0.0,
            stream_s=(covered - self._first_ts) if covered is not None and self._first_ts is not None else 0.0,
            frames_captured=self._capture.frames_captured if self._capture is not None else 0,
            frames_overwritten=self.buffer.overwritten,
            window_at_stop=self._window_at_stop,
            window_at_stop_outcome=self._window_at_stop_outcome,
            warnings=warnings,
        )
