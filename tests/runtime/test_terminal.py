"""The readable terminal lines (``runtime.terminal``): the format a person reads, one line per event.

``pytest tests/runtime/test_terminal.py``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import ClassVar

import pytest

from runtime.events import Event, FeedbackFinished, FeedbackSpoken, FeedbackStarted, FeedbackToken, WindowDecided
from runtime.events import WindowSkipped
from runtime.terminal import TerminalPrinter, format_time, printable


@pytest.mark.parametrize(("seconds", "text"), [(0.0, "00:00.0"), (6.04, "00:06.0"), (75.25, "01:15.2"),
                                               (3725.0, "1:02:05.0"), (-1.0, "00:00.0")])
def test_format_time(seconds: float, text: str) -> None:
    assert format_time(seconds) == text


def test_printable_escapes_line_breaks_and_cuts_long_text() -> None:
    assert printable("a\nb\tc") == "a\\nb\\tc"
    assert printable("x" * 200, limit=10) == "x" * 9 + "…"


@dataclass(frozen=True)
class SourceWarning(Event):
    """A stand-in for an event type the printer has no line for."""

    TYPE: ClassVar[str] = "source_warning"
    message: str


def printer(origin: float = 0.0) -> tuple[TerminalPrinter, io.StringIO]:
    out = io.StringIO()
    return TerminalPrinter(out, "every_n", stride_s=1.5, window_s=2.0, origin=lambda: origin), out


def test_a_feedback_is_one_line_with_its_time_confidence_and_text() -> None:
    """The issue's format: ``[00:06.0] <feedback> 0.82 "Keep your knees out"``, printed once the text is complete."""
    p, out = printer(origin=100.0)
    p(WindowDecided(3, 104.0, 106.0, "<feedback>", 0.82, "<feedback>", latency_ms={"total": 812.0}))
    p(FeedbackStarted(3, 106.0))
    p(FeedbackToken(3, "Keep", 0))
    assert out.getvalue() == ""
    p(FeedbackFinished(3, "Keep your knees out", 5, 41.0, 20.0))
    assert out.getvalue() == ('[00:06.0] <feedback> 0.82 "Keep your knees out" · 5 tokens, first token 41 ms, '
                              "window 812 ms\n")


def test_a_gated_decision_says_why() -> None:
    p, out = printer()
    p(WindowDecided(4, 6.0, 8.0, "<next>", 0.9, "<feedback>", latency_ms={"total": 640.0}, gate_reason="interval"))
    assert out.getvalue() == "[00:08.0] <next>     0.90  gate: interval (was <feedback>) · window 640 ms\n"


def test_a_skipped_window_is_placed_at_its_end() -> None:
    p, out = printer()
    p(WindowSkipped(5, "behind"))
    assert out.getvalue() == "[00:09.5] skipped window 5 (behind)\n"


def test_spoken_and_superseded_feedback_lines() -> None:
    p, out = printer()
    p(FeedbackSpoken(3, "Knees out", "spoken", audio_start_ms=14.2, audio_start_t=6.3, audio_s=1.2, output="alsa"))
    p(FeedbackSpoken(4, "Chest up", "superseded"))
    assert out.getvalue().splitlines() == [
        '[00:06.3] spoken "Knees out" · audio 14 ms after the text, 1.2 s (alsa)',
        '[window 4] not spoken, superseded by a newer feedback: "Chest up"',
    ]


def test_an_event_without_a_line_of_its_own_is_still_printed() -> None:
    """Forward compatibility: a new event type (here a stand-in) is shown with its fields, not dropped."""
    p, out = printer()
    p(SourceWarning("file truncated after 120 frames"))
    assert out.getvalue() == "[source_warning] message=file truncated after 120 frames\n"
