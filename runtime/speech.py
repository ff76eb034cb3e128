"""Spoken feedback: an offline text-to-speech engine driven by a speaker thread that never blocks inference.

``Speaker`` subscribes to the event bus. A finished, not suppressed ``FeedbackFinished`` is handed to its thread
through a bounded queue and returns at once; the thread synthesises the text with the engine (``espeak-ng``, the
Debian package, run as a subprocess with ``--stdout``), streams the PCM to a player (``aplay`` for ALSA, ``pacat`` for a
PulseAudio/PipeWire server) as it arrives, optionally keeps a WAV file, and publishes one ``FeedbackSpoken`` event
per feedback with the measured time from the finished text to its first audio samples.

Queue policy: an utterance is never cut off. While one plays, at most ``speech.max_pending`` wait; a newer feedback
replaces the oldest waiting one, which is reported ``superseded`` (a correction about a rep that is over is worse than
silence). Without an audio device the speaker still synthesises, times and (with ``wav_dir``) keeps every utterance,
and waits out its duration as if it played, so the queue behaves as it would with speakers.

``python -m runtime.speech "Keep your knees out"`` speaks (or writes, with ``--wav``) one text and prints its timing.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import wave
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from runtime.config import SpeechConfig
from runtime.events import Event, FeedbackFinished, FeedbackSpoken
from runtime.stats import Reservoir

logger = logging.getLogger(__name__)

#: Seconds an engine subprocess may take for one utterance before it counts as hung.
SYNTH_TIMEOUT_S = 30.0
_READ_BYTES = 4096


class SpeechError(RuntimeError):
    """The speech engine or player is missing or unusable; the message says what to install or set."""


# --------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class Audio:
    """Mono 16-bit PCM.

    Attributes:
        pcm: Little-endian int16 samples.
        sample_rate: Samples per second.
    """

    pcm: bytes
    sample_rate: int

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.pcm) / 2 / self.sample_rate

    def rms(self) -> float:
        """Root-mean-square amplitude on the int16 scale (0 for silence; speech is in the thousands)."""
        samples = np.frombuffer(self.pcm[: len(self.pcm) // 2 * 2], dtype="<i2").astype(np.float64)
        return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0

    def write_wav(self, path: str | Path) -> Path:
        """Writes a standard WAV file (parents created); returns its path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(out), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.sample_rate)
            wav.writeframes(self.pcm)
        return out


def read_wav(path: str | Path) -> Audio:
    """Reads a mono 16-bit WAV file.

    Raises:
        SpeechError: If it is not mono 16-bit PCM.
    """
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise SpeechError(f"{path}: expected mono 16-bit PCM, got {wav.getnchannels()} channels of "
                              f"{8 * wav.getsampwidth()} bits")
        return Audio(wav.readframes(wav.getnframes()), wav.getframerate())


def parse_wav_header(header: bytes) -> int:
    """The sample rate of a streamed WAV header (the 44 bytes ``espeak-ng --stdout`` writes first).

    Raises:
        SpeechError: If it is not a mono 16-bit PCM WAV header.
    """
    if len(header) < 44 or header[:4] != b"RIFF" or header[8:12] != b"WAVE" or header[12:16] != b"fmt ":
        raise SpeechError(f"the engine did not write a WAV header (got {header[:16]!r})")
    fmt, channels, rate, _byte_rate, _align, bits = struct.unpack("<HHIIHH", header[20:36])
    if fmt != 1 or channels != 1 or bits != 16 or header[36:40] != b"data":
        raise SpeechError(f"expected mono 16-bit PCM from the engine, got format {fmt}, {channels} ch, {bits} bit")
    return int(rate)


# --------------------------------------------------------------------------- engines


class SpeechEngine(ABC):
    """Text to mono 16-bit PCM, streamed in chunks as it is synthesised."""

    name: str = "engine"

    @abstractmethod
    def check(self) -> None:
        """Raises :class:`SpeechError` naming what is missing when the engine cannot speak."""

    @abstractmethod
    def stream(self, text: str) -> Iterator[tuple[bytes, int]]:
        """Yields ``(pcm_chunk, sample_rate)`` as the engine produces them.

        Raises:
            SpeechError: If the engine fails.
        """

    def synthesize(self, text: str) -> Audio:
        """The whole utterance.

        Raises:
            SpeechError: If the engine fails or produces no audio.
        """
        chunks, rate = [], 0
        for chunk, rate in self.stream(text):
            chunks.append(chunk)
        if not chunks:
            raise SpeechError(f"{self.name} produced no audio for {text!r}")
        return Audio(b"".join(chunks), rate)


class EspeakEngine(SpeechEngine):
    """``espeak-ng`` (offline formant synthesis; ``apt-get install espeak-ng``) as a subprocess.

    Args:
        voice: Voice name (``espeak-ng --voices``).
        rate_wpm: Words per minute.
        volume: Amplitude 0-200.
        program: The executable.
    """

    name = "espeak-ng"

    def __init__(self, voice: str = "en-us", rate_wpm: int = 165, volume: int = 100, program: str = "espeak-ng"):
        self.voice, self.rate_wpm, self.volume, self.program = voice, rate_wpm, volume, program
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def check(self) -> None:
        if shutil.which(self.program) is None:
            raise SpeechError(
                f"speech.engine espeak-ng: the {self.program!r} program is not installed. Install it (Debian/Ubuntu: "
                "apt-get install espeak-ng; macOS: brew install espeak-ng) or run without --speak"
            )
        audio = self.synthesize("ok")  # an unknown voice fails here, before the model loads
        if audio.rms() == 0.0:
            raise SpeechError(f"espeak-ng voice {self.voice!r} produced silence")

    def stream(self, text: str) -> Iterator[tuple[bytes, int]]:
        argv = [self.program, "--stdout", "-v", self.voice, "-s", str(self.rate_wpm), "-a", str(self.volume)]
        # The text goes on stdin: never parsed as options, whatever it starts with.
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self._lock:
            self._procs.add(proc)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(text.encode("utf-8"))
            proc.stdin.close()
            header = _read_exactly(proc.stdout, 44)
            if len(header) < 44:
                proc.wait(SYNTH_TIMEOUT_S)
                raise SpeechError(f"espeak-ng (voice {self.voice!r}) failed: {_stderr_tail(proc)}")
            rate = parse_wav_header(header)
            while chunk := os.read(proc.stdout.fileno(), _READ_BYTES):
                yield chunk, rate
            if proc.wait(SYNTH_TIMEOUT_S) != 0:
                raise SpeechError(f"espeak-ng exited with {proc.returncode}: {_stderr_tail(proc)}")
        finally:
            with self._lock:
                self._procs.discard(proc)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    def abort(self) -> None:
        """Kills any synthesis in progress (the run is being interrupted)."""
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    data = b""
    while len(data) < n and (chunk := os.read(stream.fileno(), n - len(data))):
        data += chunk
    return data


def _stderr_tail(proc: subprocess.Popen[bytes]) -> str:
    text = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr is not None else ""
    return text.splitlines()[-1] if text else "no message"


#: Engines by ``speech.engine`` name.
ENGINES: dict[str, Callable[[SpeechConfig], SpeechEngine]] = {
    "espeak-ng": lambda cfg: EspeakEngine(cfg.voice, cfg.rate_wpm, cfg.volume),
}


# --------------------------------------------------------------------------- players


class Player:
    """Plays PCM through a command that reads raw mono s16le from stdin (``argv`` gets ``{rate}`` filled in).

    Args:
        name: Reported as ``FeedbackSpoken.output``.
        argv: The command; ``{rate}`` is replaced by the sample rate.
    """

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name, self.argv = name, list(argv)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, sample_rate: int) -> None:
        """Starts the player process.

        Raises:
            SpeechError: If it cannot be started.
        """
        argv = [a.replace("{rate}", str(sample_rate)) for a in self.argv]
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
        except OSError as exc:
            raise SpeechError(f"cannot start the audio player {argv[0]!r}: {exc.strerror or exc}") from exc

    def write(self, pcm: bytes) -> None:
        """Queues samples for playback.

        Raises:
            SpeechError: If the player has exited.
        """
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(pcm)
            self._proc.stdin.flush()
        except BrokenPipeError as exc:
            raise SpeechError(f"audio player {self.name} exited: {self._finish()}") from exc

    def finish(self) -> None:
        """Waits until everything written has played.

        Raises:
            SpeechError: If the player reports an error.
        """
        message = self._finish()
        if message:
            raise SpeechError(f"audio player {self.name} failed: {message}")

    def _finish(self) -> str:
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass  # it already exited; its return code says why
        code = proc.wait()
        err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr is not None else ""
        if proc.stderr is not None:
            proc.stderr.close()
        return "" if code == 0 else (err.splitlines()[-1] if err else f"exit code {code}")

    def abort(self) -> None:
        """Stops playback now."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()


#: Players by ``speech.player`` name: each reads raw mono s16le PCM from stdin.
PLAYER_COMMANDS = {
    "alsa": ["aplay", "-q", "-t", "raw", "-f", "S16_LE", "-c", "1", "-r", "{rate}", "-"],
    "pulse": ["pacat", "--playback", "--raw", "--format=s16le", "--channels=1", "--rate={rate}"],
}


def _alsa_cards() -> list[str]:
    cards = Path("/proc/asound/cards")
    if not cards.is_file():
        return []
    return [line for line in cards.read_text().splitlines() if line.strip()[:1].isdigit()]


def _pulse_server() -> bool:
    if os.environ.get("PULSE_SERVER"):
        return True
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return bool(runtime_dir) and (Path(runtime_dir) / "pulse" / "native").exists()


def player_problem(name: str) -> str:
    """Why player ``name`` (``alsa`` or ``pulse``) cannot play here, or ``""`` when it can."""
    program = PLAYER_COMMANDS[name][0]
    if shutil.which(program) is None:
        package = "alsa-utils" if name == "alsa" else "pulseaudio-utils"
        return f"{program} is not installed (package {package})"
    if name == "alsa" and not _alsa_cards():
        return "ALSA lists no sound card (/proc/asound/cards)"
    if name == "pulse" and not _pulse_server():
        return "no PulseAudio/PipeWire server ($PULSE_SERVER, $XDG_RUNTIME_DIR/pulse/native)"
    return ""


def select_player(name: str) -> tuple[Player | None, str]:
    """The player for ``speech.player``; ``(None, why)`` when audio cannot be played.

    Raises:
        SpeechError: If a named player (not ``auto``) cannot play here.
    """
    if name == "none":
        return None, "speech.player is none"
    if name != "auto":
        problem = player_problem(name)
        if problem:
            raise SpeechError(f"speech.player {name}: {problem}; use speech.player auto or none")
        return Player(name, PLAYER_COMMANDS[name]), ""
    problems = []
    for candidate in ("pulse", "alsa"):
        problem = player_problem(candidate)
        if not problem:
            return Player(candidate, PLAYER_COMMANDS[candidate]), ""
        problems.append(f"{candidate}: {problem}")
    return None, "no audio output (" + "; ".join(problems) + ")"


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
          f"{audio.rms():.0f}; text to first audio p50 {np.percentile(firsts, 50):.1f} ms over {len(firsts)} runs")
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
