"""Spoken feedback: an offline text-to-speech engine driven by a speaker thread that never blocks inference.

``Speaker`` subscribes to the event bus. A finished, not suppressed ``FeedbackFinished`` is handed to its thread
through a bounded queue and returns at once; the thread synthesises the text with the engine (``espeak-ng``, see
:mod:`runtime.tts`), streams the PCM to a player (``aplay`` for ALSA, ``pacat`` for a PulseAudio/PipeWire server) as
it arrives, optionally keeps a WAV file, and publishes one ``FeedbackSpoken`` event
per feedback with the measured time from the finished text to its first audio samples.

Queue policy: an utterance is never cut off. While one plays, at most ``speech.max_pending`` wait; a newer feedback
replaces the oldest waiting one, which is reported ``superseded`` (a correction about a rep that is over is worse than
silence). Without an audio device the speaker still synthesises, times and (with ``wav_dir``) keeps every utterance,
and waits out its duration as if it played, so the queue behaves as it would with speakers (the end of a run does
not wait for that).

``python -m runtime.speech "Keep your knees out"`` speaks (or writes, with ``--wav``) one text and prints its timing.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.config import SpeechConfig
from runtime.events import Event, FeedbackFinished, FeedbackSpoken
from runtime.stats import Reservoir
from runtime.tts import ENGINES, Audio, EspeakEngine, Player, SpeechEngine, SpeechError, select_player

logger = logging.getLogger(__name__)

__all__ = ["Speaker", "SpeechError", "SpeechStats", "build_speaker", "main"]


# --------------------------------------------------------------------------- the speaker thread


@dataclass
class _Item:
    window_index: int
    text: str
    submitted: float


@dataclass
class SpeechStats:
    """What the speaker did: counts by status and the text-to-audio latency."""

    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    audio_start: Reservoir = field(default_factory=Reservoir)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"spoken": n, ..., "audio_start_ms": {"p50", "p95", "n"}}``."""
        out: dict[str, Any] = {s: self.statuses.get(s, 0) for s in ("spoken", "superseded", "empty", "failed")}
        out["audio_start_ms"] = self.audio_start.percentiles()
        return out


class Speaker:
    """The speaker thread: a bus subscriber that speaks every shown feedback without blocking the publisher.

    Args:
        engine: The TTS engine (already checked).
        player: Where audio goes; ``None`` synthesises and times only.
        publish: Receives the ``FeedbackSpoken`` events (called on the speaker thread).
        clock: Stream seconds now (since the first frame), for ``audio_start_t``; ``None`` leaves it unset.
        wav_dir: Keep each utterance as ``w<window>.wav`` here.
        max_pending: Utterances that may wait while one is spoken (newest wins beyond that).
        realtime: Without a player, wait out each utterance's duration as if it played.
    """

    def __init__(
        self,
        engine: SpeechEngine,
        player: Player | None,
        publish: Callable[[Event], Any],
        clock: Callable[[], float | None] | None = None,
        wav_dir: str | Path | None = None,
        max_pending: int = 1,
        realtime: bool = True,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending = {max_pending}: must be >= 1")
        self.engine, self.player, self.publish, self.clock = engine, player, publish, clock
        self.wav_dir = Path(wav_dir) if wav_dir else None
        self.max_pending, self.realtime = max_pending, realtime
        self.stats = SpeechStats()
        self._pending: collections.deque[_Item] = collections.deque()
        self._superseded: list[tuple[_Item, float]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._wake = threading.Event()  # ends a device-less hold early: set by close() and abort()
        self._busy = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="speaker", daemon=True)

    @property
    def output(self) -> str:
        """The player's name, or ``none``."""
        return self.player.name if self.player is not None else "none"

    def start(self) -> None:
        """Starts the speaker thread."""
        self._thread.start()

    def __call__(self, event: Event) -> None:
        """Bus subscriber: hands each finished, not suppressed feedback to the thread (returns at once)."""
        if isinstance(event, FeedbackFinished) and not event.suppressed:
            self.submit(event.window_index, event.text)

    def submit(self, window_index: int, text: str) -> None:
        """Queues one text; the oldest waiting one is superseded when ``max_pending`` are already waiting."""
        now = time.perf_counter()
        with self._cond:
            self._pending.append(_Item(window_index, text, now))
            while len(self._pending) > self.max_pending:
                self._superseded.append((self._pending.popleft(), now))
            self._cond.notify_all()

    def close(self, drain_timeout_s: float = 15.0) -> None:
        """Lets waiting utterances finish (up to ``drain_timeout_s``), then stops the thread.

        Utterances still waiting when the time is up are reported ``failed`` ("the run ended before it was spoken").
        Without an audio device nothing is playing, so only synthesis is waited for.

        Raises:
            Exception: The error that stopped the speaker thread (a failing event subscriber).
        """
        deadline = time.monotonic() + drain_timeout_s
        self._wake.set()  # nothing is playing without a device: no need to wait out its length
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._pending or self._busy) and self._thread.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        self.abort()
        if self._thread.is_alive():
            self._thread.join(5.0)
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stops what is playing and makes the thread exit (waiting utterances are reported)."""
        self._abort.set()
        self._wake.set()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self.player is not None:
            self.player.abort()
        abort = getattr(self.engine, "abort", None)
        if abort is not None:
            abort()

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._pending or self._superseded or self._closing):
                        self._cond.wait()
                    superseded, self._superseded = self._superseded, []
                    item = None
                    if self._pending and not self._abort.is_set():
                        item = self._pending.popleft()
                        self._busy = True
                    elif self._closing and not superseded:
                        leftover, self._pending = list(self._pending), collections.deque()
                        break
                for old, when in superseded:
                    self._report(FeedbackSpoken(old.window_index, old.text, "superseded",
                                                queued_ms=(when - old.submitted) * 1e3))
                if item is not None:
                    try:
                        self._report(self._speak(item))
                    finally:
                        with self._cond:
                            self._busy = False
                            self._cond.notify_all()
            for old in leftover:
                self._report(FeedbackSpoken(old.window_index, old.text, "failed",
                                            queued_ms=(time.perf_counter() - old.submitted) * 1e3,
                                            error="the run ended before it was spoken"))
        except Exception as exc:  # noqa: BLE001 - a failing subscriber; re-raised by close()
            logger.error("speaker thread failed: %s", exc)
            self._error = exc
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _report(self, event: FeedbackSpoken) -> None:
        self.stats.statuses[event.status] += 1
        if event.audio_start_ms is not None:
            self.stats.audio_start.add(event.audio_start_ms)
        if event.status == "failed":
            logger.warning("speech for window %d failed: %s", event.window_index, event.error)
        self.publish(event)

    def _speak(self, item: _Item) -> FeedbackSpoken:
        started = time.perf_counter()
        queued_ms = (started - item.submitted) * 1e3
        text = item.text.strip()
        if not text:
            return FeedbackSpoken(item.window_index, item.text, "empty", queued_ms=queued_ms)
        chunks: list[bytes] = []
        first: float | None = None
        stream_t: float | None = None
        rate = 0
        try:
            for chunk, rate in self.engine.stream(text):
                if first is None:
                    first = time.perf_counter()
                    stream_t = self.clock() if self.clock is not None else None
                    if self.player is not None:
                        self.player.start(rate)
                if self.player is not None:
                    self.player.write(chunk)
                chunks.append(chunk)
            if first is None:
                raise SpeechError(f"{self.engine.name} produced no audio")
            audio = Audio(b"".join(chunks), rate)
            wav = str(audio.write_wav(self.wav_dir / f"w{item.window_index:05d}.wav")) if self.wav_dir else None
            if self.player is not None:
                self.player.finish()
            elif self.realtime:
                # No device: hold the coach's voice for the utterance's length so the queue behaves the same.
                self._wake.wait(max(0.0, first + audio.duration_s - time.perf_counter()))
        except (SpeechError, OSError) as exc:
            if self.player is not None:
                self.player.abort()
            return FeedbackSpoken(item.window_index, item.text, "failed", queued_ms=queued_ms, output=self.output,
                                  error=str(exc))
        return FeedbackSpoken(
            item.window_index,
            item.text,
            "spoken",
            queued_ms=queued_ms,
            audio_start_ms=(first - item.submitted) * 1e3,
            audio_start_t=stream_t,
            audio_s=audio.duration_s,
            output=self.output,
            wav=wav,
        )


def build_speaker(cfg: SpeechConfig, publish: Callable[[Event], Any],
                  clock: Callable[[], float | None] | None = None) -> tuple[Speaker, str]:
    """The configured engine (checked) and player; returns the speaker and, when nothing can play, why.

    Raises:
        SpeechError: If the engine is missing or a named player cannot play.
    """
    engine = ENGINES[cfg.engine](cfg)
    engine.check()
    player, why = select_player(cfg.player)
    return Speaker(engine, player, publish, clock, cfg.wav_dir or None, cfg.max_pending), why


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runtime.speech TEXT``: speak (or write) a text and print the measured latency.

    Exit codes: 0 done, 2 engine or player missing.
    """
    parser = argparse.ArgumentParser(prog="python -m runtime.speech", description=main.__doc__.splitlines()[0])
    parser.add_argument("text", nargs="+", help="what to say")
    parser.add_argument("--voice", default=SpeechConfig.voice)
    parser.add_argument("--rate", type=int, default=SpeechConfig.rate_wpm, help="words per minute")
    parser.add_argument("--player", default="auto", choices=["auto", "alsa", "pulse", "none"])
    parser.add_argument("--wav", type=Path, default=None, help="also write the audio to this WAV file")
    parser.add_argument("--repeat", type=int, default=5, help="synthesise this many times for the latency")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    text = " ".join(args.text)
    engine = EspeakEngine(args.voice, args.rate)
    try:
        engine.check()
        player, why = select_player(args.player)
    except SpeechError as exc:
        print(f"speech error: {exc}", file=sys.stderr)
        return 2
    firsts, audio = [], None
    for _ in range(max(1, args.repeat)):
        started = time.perf_counter()
        chunks: list[bytes] = []
        rate = 0
        for chunk, rate in engine.stream(text):
            if not chunks:
                firsts.append((time.perf_counter() - started) * 1e3)
            chunks.append(chunk)
        audio = Audio(b"".join(chunks), rate)
    assert audio is not None
    print(f"{engine.name} voice {args.voice} at {args.rate} wpm: {audio.duration_s:.2f} s of audio, RMS "
          f"{audio.rms():.0f}; text to first audio p50 {np.percentile(firsts, 50):.1f} ms, p95 "
          f"{np.percentile(firsts, 95):.1f} ms over {len(firsts)} runs")
    if args.wav is not None:
        print(f"wrote {audio.write_wav(args.wav)}")
    if player is None:
        print(f"not played: {why}")
    else:
        player.start(audio.sample_rate)
        player.write(audio.pcm)
        player.finish()
        print(f"played through {player.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
