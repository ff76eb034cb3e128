"""Spoken feedback (``runtime.speech``, ``runtime.tts``): espeak-ng to a non-silent WAV, the speaker thread's queue, players, errors.

``pytest tests/runtime/test_speech.py``. Tests that need espeak-ng skip with the reason where it is missing (the
project's set-up installs it with apt where it can: ``make setup``). No test needs a sound device: players are
commands reading stdin, replaced here by ``sh -c 'cat > FILE'``.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import tts, webcam
from runtime.config import SpeechConfig
from runtime.events import Event, FeedbackFinished, FeedbackSpoken, read_jsonl_events
from runtime.sources import write_sample_video
from runtime.speech import Speaker
from runtime.tts import Audio, EspeakEngine, Player, SpeechEngine, SpeechError, read_wav

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng; make setup installs it where apt is available)",
)
#: RMS on the int16 scale above which a WAV counts as audible (espeak-ng speech is ~2500, silence 0).
AUDIBLE_RMS = 500.0


class FakeEngine(SpeechEngine):
    """Yields 0.1 s of a constant tone per text; can block before its first chunk until released."""

    name = "fake"

    def __init__(self, block: bool = False) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.texts: list[str] = []

    def check(self) -> None:
        return None

    def stream(self, text: str) -> Iterator[tuple[bytes, int]]:
        self.texts.append(text)
        self.started.set()
        self.release.wait(10)
        yield (1000).to_bytes(2, "little", signed=True) * 1600, 16000


def collect() -> tuple[list[FeedbackSpoken], object]:
    events: list[FeedbackSpoken] = []
    return events, lambda e: events.append(e)  # type: ignore[arg-type]


@needs_espeak
def test_espeak_synthesises_an_audible_wav(tmp_path: Path) -> None:
    """espeak-ng to a WAV file: non-silent (RMS above the threshold) and as long as a short sentence."""
    audio = EspeakEngine("en-us", 165).synthesize("Keep your knees out over your toes")
    wav = read_wav(audio.write_wav(tmp_path / "knees.wav"))
    print(f"{wav.duration_s:.2f} s at {wav.sample_rate} Hz, RMS {wav.rms():.0f}")
    assert wav.sample_rate == 22050 and 1.0 < wav.duration_s < 5.0
    assert wav.rms() > AUDIBLE_RMS


@needs_espeak
def test_an_unknown_voice_is_refused_with_the_engine_message() -> None:
    with pytest.raises(SpeechError, match="voice 'xx-nosuch'.*does not exist"):
        EspeakEngine("xx-nosuch").check()


def test_a_missing_engine_says_how_to_install_it() -> None:
    with pytest.raises(SpeechError, match="'no-such-espeak' program is not installed.*apt-get install espeak-ng"):
        EspeakEngine(program="no-such-espeak").check()


def test_submitting_never_waits_for_the_engine() -> None:
    """The publisher (the inference thread) returns while the engine is still busy with the utterance."""
    engine = FakeEngine(block=True)
    events, publish = collect()
    speaker = Speaker(engine, None, publish, realtime=False)  # type: ignore[arg-type]
    speaker.start()
    speaker(FeedbackFinished(1, "Knees out", 3, 10.0, 30.0))
    assert engine.started.wait(5)
    speaker(FeedbackFinished(2, "Chest up", 3, 10.0, 30.0))  # returns although the first is unfinished
    assert events == []
    engine.release.set()
    speaker.close()
    assert [(e.window_index, e.status) for e in events] == [(1, "spoken"), (2, "spoken")]


def test_the_newest_waiting_feedback_wins() -> None:
    """With one utterance playing and max_pending 1, a newer text supersedes the one waiting."""
    engine = FakeEngine(block=True)
    events, publish = collect()
    speaker = Speaker(engine, None, publish, max_pending=1, realtime=False)  # type: ignore[arg-type]
    speaker.start()
    speaker.submit(1, "first")
    assert engine.started.wait(5)
    speaker.submit(2, "second")
    speaker.submit(3, "third")
    engine.release.set()
    speaker.close()
    assert [(e.window_index, e.status) for e in events] == [(1, "spoken"), (2, "superseded"), (3, "spoken")]
    assert engine.texts == ["first", "third"]
    assert speaker.stats.to_dict()["superseded"] == 1


def test_suppressed_repeats_are_not_spoken_and_empty_texts_are_reported() -> None:
    events, publish = collect()
    speaker = Speaker(FakeEngine(), None, publish, realtime=False)  # type: ignore[arg-type]
    speaker.start()
    speaker(FeedbackFinished(1, "Knees out", 3, 10.0, 30.0, suppressed=True))
    speaker(FeedbackFinished(2, "  ", 1, 10.0, 30.0))
    speaker.close()
    assert [(e.window_index, e.status) for e in events] == [(2, "empty")]


def test_spoken_events_carry_the_text_to_audio_latency_and_the_stream_time(tmp_path: Path) -> None:
    events, publish = collect()
    speaker = Speaker(FakeEngine(), None, publish, clock=lambda: 12.5, wav_dir=tmp_path,  # type: ignore[arg-type]
                      realtime=False)
    speaker.start()
    speaker.submit(7, "Knees out")
    speaker.close()
    (spoken,) = events
    assert spoken.status == "spoken" and spoken.audio_start_t == 12.5 and spoken.audio_s == pytest.approx(0.1)
    assert spoken.audio_start_ms is not None and spoken.audio_start_ms >= spoken.queued_ms >= 0
    assert spoken.wav == str(tmp_path / "w00007.wav") and read_wav(spoken.wav).rms() == pytest.approx(1000)


def test_the_player_gets_the_pcm_on_stdin(tmp_path: Path) -> None:
    """A player is a command reading raw PCM from stdin; every sample arrives, the rate is filled in."""
    sink = tmp_path / "played.raw"
    rate_file = tmp_path / "rate"
    player = Player("fake", ["sh", "-c", f"echo {{rate}} > {rate_file}; cat > {sink}"])
    events, publish = collect()
    speaker = Speaker(FakeEngine(), player, publish)  # type: ignore[arg-type]
    speaker.start()
    speaker.submit(1, "Knees out")
    speaker.close()
    assert events[0].status == "spoken" and events[0].output == "fake"
    assert sink.read_bytes() == (1000).to_bytes(2, "little", signed=True) * 1600
    assert rate_file.read_text().strip() == "16000"


def test_a_failing_player_is_reported_and_the_speaker_goes_on() -> None:
    player = Player("broken", ["sh", "-c", "cat > /dev/null; echo 'no such device' >&2; exit 3"])
    events, publish = collect()
    speaker = Speaker(FakeEngine(), player, publish, max_pending=2)  # type: ignore[arg-type]
    speaker.start()
    speaker.submit(1, "one")
    speaker.submit(2, "two")
    speaker.close()
    assert [(e.status, e.error) for e in events] == [("failed", "audio player broken failed: no such device")] * 2


def test_auto_without_a_device_plays_nothing_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts, "_alsa_cards", lambda: [])
    monkeypatch.setattr(tts, "_pulse_server", lambda: False)
    player, why = tts.select_player("auto")
    assert player is None and why.startswith("no audio output (pulse: ") and "alsa: " in why


def test_a_named_player_that_cannot_play_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts, "_alsa_cards", lambda: [])
    monkeypatch.setattr(tts.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(SpeechError, match=r"speech.player alsa: ALSA lists no sound card \(/proc/asound/cards\)"):
        tts.select_player("alsa")


def test_the_cli_without_the_engine_is_exit_2_with_the_install_hint(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``--speak`` where espeak-ng is missing fails before the model loads, naming the package."""
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    assert webcam.main(["--headless", "--source", "synthetic", "--speak", "--log-level", "ERROR"]) == 2
    assert "speech error: speech.engine espeak-ng: the 'espeak-ng' program is not installed" in capsys.readouterr().err


@needs_espeak
def test_speak_in_a_headless_run_keeps_audible_wavs(exported_tiny: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``--speak --speak-wav DIR`` on the tiny engines: one non-silent WAV and one spoken event per feedback."""
    video = write_sample_video(tmp_path / "clip.mp4", duration_s=3.6)  # two windows
    code = webcam.main(["--engines", str(exported_tiny), "--source", str(video), "--headless", "--no-paced",
                        "--jsonl", "--speak", "--speak-wav", str(tmp_path / "wav"), "--log-level", "WARNING",
                        "--set", "window.latest_wins=false", "--set", "policy.every_n.n=1",
                        "--set", "decision.min_feedback_interval_s=0", "--set", "generation.max_new_tokens=4"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    events: list[Event] = read_jsonl_events(out.out.splitlines())
    finished = [e for e in events if isinstance(e, FeedbackFinished) and not e.suppressed and e.text.strip()]
    spoken = [e for e in events if isinstance(e, FeedbackSpoken)]
    assert finished and {e.window_index for e in spoken} == {e.window_index for e in finished}
    for e in spoken:
        print(f"window {e.window_index}: {e.status}, text to audio {e.audio_start_ms} ms, {e.audio_s:.2f} s")
        assert e.status in ("spoken", "superseded")
        if e.status == "spoken":
            assert e.wav is not None and read_wav(e.wav).rms() > AUDIBLE_RMS
    assert '"speech": {' in out.err and '"spoken": ' in out.err


def test_audio_rms_of_silence_is_zero() -> None:
    assert Audio(b"\x00\x00" * 100, 16000).rms() == 0.0


def test_speech_config_defaults_name_the_engine() -> None:
    assert SpeechConfig().engine in tts.ENGINES
