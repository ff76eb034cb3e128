"""Typed events of the streaming runtime, an in-process bus and a JSONL logger.

The inference worker publishes events; the UI, the JSONL logger and the
benchmarks subscribe. Every event is a frozen dataclass with a ``type`` string
and a JSON-ready :meth:`to_dict`; :func:`event_from_dict` reverses it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TextIO

logger = logging.getLogger(__name__)

#: Why the decoder context was cleared (everything after the fixed system prefix dropped).
CONTEXT_CLEAR_REASONS = ("feedback", "timeout", "reset")

#: Why the oldest window was evicted from the decoder context.
EVICTION_REASONS = ("max_windows", "max_tokens")

#: Why a window was never decided (``WindowSkipped.reason``):
#:
#: * ``behind``: latest-wins, a newer window was complete when the worker got to it;
#: * ``overwritten``: some of its frames left the ring buffer before it was processed;
#: * ``no_frames``: the source delivered no frame inside it (a stall);
#: * ``short_tail``: the stream time after the last window at the end of a file is shorter than
#:   ``window.min_tail_s``;
#: * ``stopped``: the run was stopped (Ctrl-C, SIGTERM, ``--duration``, ``q``) before it was processed;
#: * ``source_error``: the source failed before the window was complete;
#: * ``error``: processing it raised (the run ends with that error);
#: * ``abandoned``: a second Ctrl-C / SIGTERM abandoned it while it was being processed.
SKIP_REASONS = ("behind", "overwritten", "no_frames", "short_tail", "stopped", "source_error", "error", "abandoned")


@dataclass(frozen=True)
class Event:
    """Base class; subclasses set ``TYPE`` and get a matching ``type`` field."""

    TYPE: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict whose first key is ``type``."""
        return {"type": self.TYPE, **dataclasses.asdict(self)}

    @property
    def type(self) -> str:
        """The event's type string (e.g. ``"window_decided"``)."""
        return self.TYPE


@dataclass(frozen=True)
class WindowDecided(Event):
    """An action was decided for a window.

    Attributes:
        window_index: The window.
        t_start: Window start (stream seconds).
        t_end: Window end (stream seconds).
        action: The gated action carried out.
        confidence: The policy's confidence.
        raw_action: The policy's action before the gate.
        latency_ms: Per-stage latency in milliseconds, keyed by
            ``runtime.stats.STAGES`` (``frame_decode`` ... ``total``).
        skipped_total: Windows skipped so far in the stream.
        cache_hit_rate: Feature-cache hit rate so far.
        kv_bytes: Size of the decoder KV context in bytes.
        gate_reason: Why the gate downgraded the action, if it did.
        lag_s: Stream time from the window's end to the decision (newest
            captured timestamp minus ``t_end``); how far behind live it is.
        context_tokens: Decoder context length after appending the window.
        context_windows: Windows held in the context after appending it.
        action_logits: Decoder logits of ``<next>``, ``<feedback>``,
            ``<correct>`` at the action position, when the backend has the
            action tokens.
        final: The end-of-stream window of a file: it ends at the stream's end and starts ``window_s`` before it
            (so it is off the stride grid), or at the stream's start when the stream is shorter than one window.
    """

    TYPE: ClassVar[str] = "window_decided"
    window_index: int
    t_start: float
    t_end: float
    action: str
    confidence: float
    raw_action: str
    latency_ms: dict[str, float] = field(default_factory=dict)
    skipped_total: int = 0
    cache_hit_rate: float = 0.0
    kv_bytes: int = 0
    gate_reason: str | None = None
    lag_s: float = 0.0
    context_tokens: int = 0
    context_windows: int = 0
    action_logits: list[float] | None = None
    final: bool = False


@dataclass(frozen=True)
class FeedbackStarted(Event):
    """Feedback generation began for a window at stream time ``t``."""

    TYPE: ClassVar[str] = "feedback_started"
    window_index: int
    t: float


@dataclass(frozen=True)
class FeedbackToken(Event):
    """One streamed piece of feedback text (``index`` counts from 0)."""

    TYPE: ClassVar[str] = "feedback_token"
    window_index: int
    token_text: str
    index: int


@dataclass(frozen=True)
class FeedbackFinished(Event):
    """Feedback generation ended.

    Attributes:
        window_index: The window.
        text: The full generated text.
        n_tokens: Tokens generated.
        ttft_ms: Time to first token in milliseconds.
        tokens_per_s: Decoding speed after the first token.
        suppressed: Whether the gate suppressed it as a repeat.
    """

    TYPE: ClassVar[str] = "feedback_finished"
    window_index: int
    text: str
    n_tokens: int
    ttft_ms: float
    tokens_per_s: float
    suppressed: bool = False


@dataclass(frozen=True)
class WindowSkipped(Event):
    """A window of the stream was never decided.

    Attributes:
        window_index: The window.
        reason: One of :data:`SKIP_REASONS`.
        detail: What exactly happened, for a person (empty when the reason says it all).
    """

    TYPE: ClassVar[str] = "window_skipped"
    window_index: int
    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in SKIP_REASONS:
            raise ValueError(f"WindowSkipped reason {self.reason!r} is not one of {SKIP_REASONS}")


@dataclass(frozen=True)
class SourceTruncated(Event):
    """The source ended early: a cut or corrupt file (a warning; the frames before the cut are still decided).

    Attributes:
        end_time: Stream time the delivered frames cover up to.
        frames_read: Frames delivered.
        frames_expected: Frames the container announced, if it did.
        message: The source's explanation.
    """

    TYPE: ClassVar[str] = "source_truncated"
    end_time: float
    frames_read: int
    frames_expected: int | None
    message: str


@dataclass(frozen=True)
class ContextCleared(Event):
    """The decoder context was cleared; ``reason`` is one of CONTEXT_CLEAR_REASONS."""

    TYPE: ClassVar[str] = "context_cleared"
    reason: str
    window_index: int | None = None

    def __post_init__(self) -> None:
        if self.reason not in CONTEXT_CLEAR_REASONS:
            raise ValueError(f"ContextCleared reason {self.reason!r} is not one of {CONTEXT_CLEAR_REASONS}")


@dataclass(frozen=True)
class ContextEvicted(Event):
    """The oldest window left the decoder context to keep it within its limits.

    Attributes:
        window_index: The evicted window.
        reason: One of :data:`EVICTION_REASONS`.
        tokens: Context positions it occupied (the later windows moved down by this many).
    """

    TYPE: ClassVar[str] = "context_evicted"
    window_index: int
    reason: str
    tokens: int

    def __post_init__(self) -> None:
        if self.reason not in EVICTION_REASONS:
            raise ValueError(f"ContextEvicted reason {self.reason!r} is not one of {EVICTION_REASONS}")


#: What became of a feedback handed to the speaker (``FeedbackSpoken.status``).
SPEECH_STATUSES = ("spoken", "superseded", "empty", "failed")


@dataclass(frozen=True)
class FeedbackSpoken(Event):
    """The speaker thread is done with one feedback (published from that thread, see runtime/speech.py).

    Attributes:
        window_index: The feedback's window.
        text: The text handed to the speaker.
        status: One of :data:`SPEECH_STATUSES`: ``spoken``; ``superseded`` (a newer feedback replaced it while it
            waited); ``empty`` (nothing to say); ``failed`` (the engine or player failed: ``error`` says how).
        queued_ms: Time the text waited for the speaker (another utterance was playing).
        audio_start_ms: Time from the finished feedback text to its first audio samples going out (queue wait +
            synthesis of the first chunk), ``None`` unless spoken.
        audio_start_t: Stream time (seconds since the stream's first frame) when the audio started, ``None`` unless
            spoken: the delivery time of the feedback.
        audio_s: Length of the synthesised audio in seconds.
        output: Where the audio went: ``player`` name, ``none`` (no audio device: synthesised and timed only).
        wav: The WAV file kept (``speech.wav_dir``), if any.
        error: Why it failed.
    """

    TYPE: ClassVar[str] = "feedback_spoken"
    window_index: int
    text: str
    status: str
    queued_ms: float = 0.0
    audio_start_ms: float | None = None
    audio_start_t: float | None = None
    audio_s: float = 0.0
    output: str = "none"
    wav: str | None = None
    error: str = ""

    def __post_init__(self) -> None:
        if self.status not in SPEECH_STATUSES:
            raise ValueError(f"FeedbackSpoken status {self.status!r} is not one of {SPEECH_STATUSES}")


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        WindowDecided,
        FeedbackStarted,
        FeedbackToken,
        FeedbackFinished,
        WindowSkipped,
        SourceTruncated,
        ContextCleared,
        ContextEvicted,
        FeedbackSpoken,
    )
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from :meth:`Event.to_dict` output (e.g. a JSONL line).

    Raises:
        ValueError: If ``type`` is missing or unknown, or fields do not match.
    """
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}; expected one of {sorted(EVENT_TYPES)}")
    payload = {k: v for k, v in data.items() if k != "type"}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(payload) - names
    if unknown:
        raise ValueError(f"{kind} event has unknown fields {sorted(unknown)}")
    return cls(**payload)


Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous publish/subscribe: :meth:`publish` calls every subscriber in order.

    A subscriber's exception propagates to the publisher (after being logged),
    so a broken UI or logger is noticed instead of silently losing events.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register ``callback``; returns a function that unsubscribes it."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber."""
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                # The publisher reports the error (the CLI in one line); the traceback only at DEBUG.
                logger.debug("event subscriber %r failed on %s", callback, event.type, exc_info=True)
                raise


class JsonlEventWriter:
    """Subscriber that writes one JSON object per event per line.

    Args:
        stream: A text stream opened for writing.
        flush: Flush after every line so ``tail -f`` shows events live.
    """

    def __init__(self, stream: TextIO, flush: bool = True) -> None:
        self.stream = stream
        self.flush = flush
        self._lock = threading.Lock()
        self.written = 0

    def __call__(self, event: Event) -> None:
        """Write ``event`` as one JSON line."""
        line = json.dumps(event.to_dict(), ensure_ascii=False)
        with self._lock:
            self.stream.write(line + "\n")
            if self.flush:
                self.stream.flush()
            self.written += 1


def read_jsonl_events(lines: Iterable[str]) -> list[Event]:
    """Parse JSONL event lines (blank lines ignored) back into events.

    Raises:
        ValueError: Naming the line number of a malformed line.
    """
    events: list[Event] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(event_from_dict(json.loads(line)))
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            raise ValueError(f"line {number}: invalid event: {exc}") from exc
    return events
