"""Text-to-speech engines and audio players for spoken feedback (used by the speaker thread, runtime/speech.py).

* engines turn text into mono 16-bit PCM, streamed in chunks: :class:`EspeakEngine` runs ``espeak-ng --stdout``
  (the Debian package; offline formant synthesis, ~13 ms to the first audio on a 2-core machine), chosen by
  ``speech.engine`` through :data:`ENGINES`;
* players are commands that read raw PCM on stdin (``aplay`` for ALSA, ``pacat`` for a PulseAudio/PipeWire server),
  chosen by ``speech.player``; :func:`select_player` says why none can play when there is no audio device.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import threading
import wave
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from runtime.config import SpeechConfig

logger = logging.getLogger(__name__)

#: Seconds an engine subprocess may take for one utterance before it counts as hung.
SYNTH_TIMEOUT_S = 30.0
_READ_BYTES = 4096


class SpeechError(RuntimeError):
    """The speech engine or player is missing or unusable; the message says what to install or set."""


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
