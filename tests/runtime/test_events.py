"""Typed events, EventBus and the JSONL writer."""

from __future__ import annotations

import io
import json

import pytest

from runtime.events import (
    ContextCleared,
    Event,
    EventBus,
    FeedbackFinished,
    FeedbackStarted,
    FeedbackToken,
    JsonlEventWriter,
    SourceTruncated,
    WindowDecided,
    WindowSkipped,
    event_from_dict,
    read_jsonl_events,
)

EVENTS: list[Event] = [
    WindowDecided(3, 4.5, 6.5, "<feedback>", 0.8, "<feedback>", {"encode": 12.5, "decode": 30.0}, 2, 0.25, 1024),
    FeedbackStarted(3, 6.5),
    FeedbackToken(3, " Keep", 0),
    FeedbackFinished(3, "Keep your back straight.", 6, 120.0, 35.5, suppressed=False),
    WindowSkipped(4, "behind"),
    ContextCleared("feedback", window_index=3),
    WindowSkipped(5, "short_tail", "the last 0.100 s (< window.min_tail_s) after the last window"),
    SourceTruncated(2.333, 70, 145, "decoded 70 of the 145 frames clip.mp4 announces"),
    WindowDecided(6, 2.8, 4.8, "<next>", 0.9, "<next>", final=True),
]


def test_type_strings_and_to_dict() -> None:
    assert [e.type for e in EVENTS] == [
        "window_decided",
        "feedback_started",
        "feedback_token",
        "feedback_finished",
        "window_skipped",
        "context_cleared",
        "window_skipped",
        "source_truncated",
        "window_decided",
    ]
    d = EVENTS[0].to_dict()
    assert list(d)[0] == "type" and d["latency_ms"] == {"encode": 12.5, "decode": 30.0} and d["kv_bytes"] == 1024


def test_jsonl_round_trip() -> None:
    stream = io.StringIO()
    bus = EventBus()
    writer = JsonlEventWriter(stream)
    bus.subscribe(writer)
    for event in EVENTS:
        bus.publish(event)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(EVENTS) == writer.written
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert read_jsonl_events(lines) == EVENTS


def test_bus_delivers_in_order_and_unsubscribes() -> None:
    bus = EventBus()
    got: list[str] = []
    unsubscribe = bus.subscribe(lambda e: got.append(e.type))
    bus.publish(FeedbackStarted(0, 1.0))
    unsubscribe()
    bus.publish(FeedbackStarted(1, 2.0))
    assert got == ["feedback_started"]


def test_bus_propagates_subscriber_errors() -> None:
    bus = EventBus()

    def broken(event: Event) -> None:
        raise RuntimeError("ui crashed")

    bus.subscribe(broken)
    with pytest.raises(RuntimeError, match="ui crashed"):
        bus.publish(WindowSkipped(1, "behind"))


def test_invalid_events_are_errors() -> None:
    with pytest.raises(ValueError, match="reason 'bored'"):
        ContextCleared("bored")
    with pytest.raises(ValueError, match=r"WindowSkipped reason 'lost' is not one of \('behind'"):
        WindowSkipped(1, "lost")
    with pytest.raises(ValueError, match="unknown event type 'nope'"):
        event_from_dict({"type": "nope"})
    with pytest.raises(ValueError, match="line 2: invalid event"):
        read_jsonl_events(['{"type": "window_skipped", "window_index": 1, "reason": "behind"}', "{not json"])
