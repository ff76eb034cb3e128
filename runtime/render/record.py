"""The run as the renderers see it: events stamped with stream time, and when each one is shown.

:class:`RunRecorder` subscribes to the event bus and stamps every event with the stream clock (seconds of stream
captured so far, since the first frame) and the wall clock. :meth:`RunRecorder.record` turns the stamps into a
:class:`RunRecord`: per-window decisions, feedback spans, utterances and context events on one time axis, plus the
schedule the annotated video folds into its overlay.

When an event is shown (``RunRecord.timing``):

* ``live`` (paced runs: files and the synthetic scene released in real time): at the stream time it was published,
  i.e. what a person watching live saw, processing latency and queueing included;
* ``window_end`` (unpaced runs, where the capture races ahead of inference and "live" means nothing): each
  decision at its window's end, and the feedback and speech that follow it offset by the wall time they took.

Memory is a few hundred bytes per window (tokens of at most ``generation.max_new_tokens`` per feedback).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.events import (
    ContextCleared,
    ContextEvicted,
    Event,
    FeedbackFinished,
    FeedbackSpoken,
    FeedbackStarted,
    FeedbackToken,
    WindowDecided,
    WindowSkipped,
)
from runtime.render.canvas import softmax

TIMINGS = ("live", "window_end")


@dataclass(frozen=True)
class RunInfo:
    """What the pictures say about the run in their titles.

    Attributes:
        source: The source's description (file name, ``synthetic``, camera).
        backend: ``name/precision/device``.
        policy: The policy name (``model`` shows probabilities; rule policies show their decisions).
        random_weights: Label everything as meaningless output.
        window_s: Window length.
        stride_s: Window stride.
        paced: Frames were released in real time (selects ``live`` timing).
        confidence_threshold: The gate's threshold (drawn on the probability panel).
    """

    source: str
    backend: str
    policy: str
    random_weights: bool
    window_s: float
    stride_s: float
    paced: bool
    confidence_threshold: float = 0.5


@dataclass(frozen=True)
class Stamped:
    """One event with the stream time (``None`` before the first frame) and wall time it was published at."""

    event: Event
    stream_t: float | None
    wall: float


@dataclass
class WindowView:
    """One decided window, times relative to the first frame."""

    index: int
    t_start: float
    t_end: float
    shown_t: float
    action: str
    raw_action: str
    confidence: float
    gate_reason: str | None
    probs: list[float] | None
    latency_ms: dict[str, float]
    feedback_ms: float = 0.0


@dataclass
class FeedbackView:
    """One generated feedback: its text and when it was shown, token by token."""

    window_index: int
    start_t: float
    end_t: float | None = None
    text: str = ""
    suppressed: bool = False
    n_tokens: int = 0
    number: int = 0


@dataclass
class SpeechView:
    """One utterance (or why there was none)."""

    window_index: int
    status: str
    start_t: float | None
    duration_s: float
    latency_ms: float | None
    text: str


@dataclass
class RunRecord:
    """Everything the timeline and the annotated video draw.

    Attributes:
        info: Titles.
        timing: ``live`` or ``window_end`` (see the module docstring).
        windows: Decided windows in order.
        skips: ``(window_index, reason, t_end)`` of skipped windows.
        feedbacks: Feedback spans, numbered from 1.
        speech: Utterances.
        context: ``(t, "cleared"|"evicted", reason)``.
        schedule: ``(display_t, event)`` sorted by time: what the overlay folds.
        end_t: Stream time covered (last captured frame).
    """

    info: RunInfo
    timing: str
    windows: list[WindowView] = field(default_factory=list)
    skips: list[tuple[int, str, float]] = field(default_factory=list)
    feedbacks: list[FeedbackView] = field(default_factory=list)
    speech: list[SpeechView] = field(default_factory=list)
    context: list[tuple[float, str, str]] = field(default_factory=list)
    schedule: list[tuple[float, Event]] = field(default_factory=list)
    end_t: float = 0.0

    @property
    def last_t(self) -> float:
        """The latest time any event is shown at, or the end of the stream (the end of the pictures)."""
        return max([self.end_t] + [t for t, _ in self.schedule])


class RunRecorder:
    """Event-bus subscriber keeping every event with its stream and wall time (thread-safe).

    Args:
        info: The run's titles.
        clock: Stream seconds captured so far, since the first frame (``None`` before it).
    """

    def __init__(self, info: RunInfo, clock: Callable[[], float | None]) -> None:
        self.info, self.clock = info, clock
        self.stamped: list[Stamped] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        """Keeps ``event`` (feedback tokens too: the video shows the text as it streamed)."""
        stamp = Stamped(event, self.clock(), time.perf_counter())
        with self._lock:
            self.stamped.append(stamp)

    def record(self, origin: float | None, end_t: float | None = None) -> RunRecord:
        """The record so far.

        Args:
            origin: Timestamp of the stream's first frame (window times are absolute; ``None``: 0).
            end_t: Stream time covered; default the last stamp.
        """
        with self._lock:
            stamped = list(self.stamped)
        return build_record(self.info, stamped, origin or 0.0, end_t)


def build_record(info: RunInfo, stamped: list[Stamped], origin: float, end_t: float | None = None) -> RunRecord:
    """Places every stamped event on the display time axis (see the module docstring)."""
    timing = "live" if info.paced else "window_end"
    rec = RunRecord(info, timing)
    anchors: dict[int, tuple[float, float]] = {}  # window -> (display t, wall) of its decision
    finished_at: dict[int, tuple[float, float]] = {}  # window -> (display t, wall) of its finished text
    windows: dict[int, WindowView] = {}
    open_feedback: dict[int, FeedbackView] = {}
    last_t = 0.0
    for s in stamped:
        e, live_t = s.event, s.stream_t if s.stream_t is not None else last_t
        t = live_t
        if isinstance(e, WindowDecided):
            t_end = e.t_end - origin
            t = live_t if timing == "live" else t_end
            anchors[e.window_index] = (t, s.wall)
            view = WindowView(e.window_index, e.t_start - origin, t_end, t, e.action, e.raw_action, e.confidence,
                              e.gate_reason, softmax(e.action_logits), dict(e.latency_ms))
            windows[e.window_index] = view
            rec.windows.append(view)
        elif isinstance(e, WindowSkipped):
            t_end = e.window_index * info.stride_s + info.window_s
            t = live_t if timing == "live" else t_end
            rec.skips.append((e.window_index, e.reason, t_end))
        elif isinstance(e, (FeedbackStarted, FeedbackToken, FeedbackFinished)):
            if timing == "window_end" and e.window_index in anchors:
                at, wall = anchors[e.window_index]
                t = at + (s.wall - wall)
            if isinstance(e, FeedbackStarted):
                fb = FeedbackView(e.window_index, t, number=len(rec.feedbacks) + 1)
                open_feedback[e.window_index] = fb
                rec.feedbacks.append(fb)
            elif isinstance(e, FeedbackFinished):
                fb = open_feedback.pop(e.window_index, None) or FeedbackView(e.window_index, t,
                                                                             number=len(rec.feedbacks) + 1)
                if fb not in rec.feedbacks:
                    rec.feedbacks.append(fb)
                fb.end_t, fb.text, fb.suppressed, fb.n_tokens = t, e.text, e.suppressed, e.n_tokens
                finished_at[e.window_index] = (t, s.wall)
        elif isinstance(e, FeedbackSpoken):
            start = None
            if e.status == "spoken":
                if timing == "live":
                    start = e.audio_start_t if e.audio_start_t is not None else live_t
                elif e.window_index in finished_at:
                    start = finished_at[e.window_index][0] + (e.audio_start_ms or 0.0) / 1e3
                else:
                    start = last_t
                t = start
            elif timing == "window_end":
                t = last_t
            rec.speech.append(SpeechView(e.window_index, e.status, start, e.audio_s, e.audio_start_ms, e.text))
        elif isinstance(e, (ContextCleared, ContextEvicted)):
            t = live_t if timing == "live" else last_t
            rec.context.append((t, "cleared" if isinstance(e, ContextCleared) else "evicted", e.reason))
        rec.schedule.append((t, e))
        last_t = max(last_t, t)
    # Generation time per window from the wall clock (the same in both timings).
    starts = {s.event.window_index: s.wall for s in stamped if isinstance(s.event, FeedbackStarted)}
    for index, (_, wall) in finished_at.items():
        if index in windows and index in starts:
            windows[index].feedback_ms = (wall - starts[index]) * 1e3
    rec.schedule.sort(key=lambda item: item[0])
    captured = [s.stream_t for s in stamped if s.stream_t is not None]
    rec.end_t = end_t if end_t is not None else (max(captured) if captured else 0.0)
    return rec
