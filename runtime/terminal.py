"""What a person reads in the terminal: one line per decision, feedback, skip and utterance, then the summary.

    [00:03.5] <next>     1.00  every_n · window 1186 ms
    [00:05.0] <feedback> 0.82 "Keep your knees out" · 9 tokens, first token 40 ms, window 1203 ms
    [00:06.5] <next>     0.71  gate: interval (was <feedback>) · window 1190 ms
    [00:07.1] spoken "Keep your knees out" · audio 14 ms after the text (none)
    [00:08.0] skipped window 5 (behind)

The time in brackets is the window's end in stream time (since the first frame); a spoken line shows when its audio
started. Lines are written whole, under a lock (the speaker thread publishes too). Machines read JSONL instead
(``--jsonl`` / ``--events FILE``, :class:`runtime.events.JsonlEventWriter`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from engine_format.vocab import FEEDBACK
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
from runtime.stats import RunSummary

#: Longest feedback text printed on one line (the JSONL has all of it).
MAX_TEXT = 160
#: Events with no line of their own: their content shows in other lines (tokens) or only matters to machines.
QUIET = (FeedbackStarted, FeedbackToken, ContextCleared, ContextEvicted)


def format_time(seconds: float) -> str:
    """``mm:ss.s`` (``h:mm:ss.s`` from an hour on); negative values print as 0."""
    tenths = max(0, round(seconds * 10))
    hours, rest = divmod(tenths, 36000)
    minutes, rest = divmod(rest, 600)
    text = f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"
    return f"{hours}:{text}" if hours else text


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """One line of ``text``: line breaks and other control characters escaped, cut at ``limit`` with an ellipsis."""
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


class TerminalPrinter:
    """Event-bus subscriber writing the readable lines.

    Args:
        stream: Where lines go (stdout).
        policy: The policy's name (shown on non-feedback lines).
        stride_s: Window stride, to place skipped windows in time.
        window_s: Window length.
        origin: Stream time of the first frame (windows carry absolute times; cameras start far from 0).
    """

    def __init__(
        self,
        stream: TextIO,
        policy: str,
        stride_s: float,
        window_s: float,
        origin: Callable[[], float | None] = lambda: 0.0,
    ) -> None:
        self.stream, self.policy, self.stride_s, self.window_s, self.origin = stream, policy, stride_s, window_s, origin
        self._lock = threading.Lock()
        self._pending: WindowDecided | None = None  # a <feedback> decision waiting for its text

    def _rel(self, t: float) -> float:
        return t - (self.origin() or 0.0)

    def _write(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def __call__(self, event: Event) -> None:
        """Writes the line for ``event`` (decisions with ``<feedback>`` wait for their text)."""
        if isinstance(event, WindowDecided):
            if event.action == FEEDBACK:
                self._pending = event
            else:
                self._write(self.decision_line(event))
        elif isinstance(event, FeedbackFinished):
            decided, self._pending = self._pending, None
            self._write(self.feedback_line(decided, event))
        elif isinstance(event, WindowSkipped):
            t_end = event.window_index * self.stride_s + self.window_s
            self._write(f"[{format_time(t_end)}] skipped window {event.window_index} ({event.reason})")
        elif isinstance(event, FeedbackSpoken):
            self._write(self.speech_line(event))
        elif not isinstance(event, QUIET):
            # An event this printer has no line for (e.g. a warning added later) is still shown, never dropped.
            fields = ", ".join(f"{k}={v}" for k, v in event.to_dict().items() if k != "type")
            self._write(f"[{event.type}] {printable(fields)}")

    def decision_line(self, e: WindowDecided) -> str:
        """``[t] <next>     0.50  every_n · window 812 ms`` (or the gate's reason instead of the policy)."""
        why = f"gate: {e.gate_reason} (was {e.raw_action})" if e.gate_reason else self.policy
        return f"[{format_time(self._rel(e.t_end))}] {e.action:<10} {e.confidence:.2f}  {why} · window " \
               f"{e.latency_ms.get('total', 0.0):.0f} ms"

    def feedback_line(self, decided: WindowDecided | None, f: FeedbackFinished) -> str:
        """``[t] <feedback> 0.82 "text" · n tokens, first token x ms, window y ms``."""
        when = format_time(self._rel(decided.t_end)) if decided is not None else f"window {f.window_index}"
        conf = f"{decided.confidence:.2f}" if decided is not None else "-"
        tail = f"{f.n_tokens} tokens, first token {f.ttft_ms:.0f} ms"
        if decided is not None:
            tail += f", window {decided.latency_ms.get('total', 0.0):.0f} ms"
        repeat = " (repeat: not spoken)" if f.suppressed else ""
        return f'[{when}] {FEEDBACK} {conf} "{printable(f.text)}"{repeat} · {tail}'

    def speech_line(self, s: FeedbackSpoken) -> str:
        """One line per utterance: spoken with its latency, superseded, empty or failed with the reason."""
        if s.status == "spoken":
            when = format_time(s.audio_start_t) if s.audio_start_t is not None else f"window {s.window_index}"
            wav = f", {s.wav}" if s.wav else ""
            return (f'[{when}] spoken "{printable(s.text, 60)}" · audio {s.audio_start_ms or 0.0:.0f} ms after the '
                    f"text, {s.audio_s:.1f} s ({s.output}{wav})")
        if s.status == "superseded":
            return f'[window {s.window_index}] not spoken, superseded by a newer feedback: "{printable(s.text, 60)}"'
        if s.status == "empty":
            return f"[window {s.window_index}] not spoken: the feedback text is empty"
        return f"[window {s.window_index}] speech failed: {s.error}"


def run_end_lines(summary: RunSummary, speech: dict[str, Any] | None, files: Sequence[tuple[str, str]]) -> list[str]:
    """The closing lines: the summary headline, speech figures, the random-weights warning, the files written.

    Args:
        summary: The run summary.
        speech: ``SpeechStats.to_dict()`` when speech was on.
        files: ``(path, what it is)`` per file written.
    """
    lines = [
        f"done ({summary.ended_by}): {summary.windows_processed} windows decided, {summary.windows_skipped} skipped, "
        f"{summary.feedbacks} feedbacks ({summary.feedbacks_suppressed} repeats not spoken) over "
        f"{summary.stream_s:.1f} s of stream in {summary.wall_s:.1f} s",
        summary.headline(),
    ]
    if speech is not None:
        start = speech["audio_start_ms"]
        timing = f"; text to first audio p50 {start['p50']:.0f} ms, p95 {start['p95']:.0f} ms" if start["n"] else ""
        lines.append(f"speech: {speech['spoken']} spoken, {speech['superseded']} superseded, {speech['empty']} "
                     f"empty, {speech['failed']} failed{timing}")
    if summary.random_weights:
        lines.append("RANDOM WEIGHTS: the actions and the text above are meaningless (synthetic checkpoint)")
    lines += [f"wrote {path}  ({what})" for path, what in files]
    return lines
