"""Fault injection: streams that end early, fail, stall or raise foreign errors; signals; closed output.

``pytest tests/runtime/test_faults.py``. Each test asserts how the run ended (exit code or ``ended_by``), the
summary, and that every window of the stream is decided or reported skipped (:func:`check_accounting`). Engine-level
tests use the scripted :class:`FakeBackend`; CLI tests run ``runtime.webcam.main`` on it in-process, and the signal
and pipe tests run it in a subprocess (``tests/runtime/fault_cli.py``). Nothing is timed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import pytest

from runtime import webcam
from runtime.backends import BackendError
from runtime.config import ConfigError, StreamingConfig, apply_overrides, config_from_dict
from runtime.engine import StreamingEngine
from runtime.events import Event, EventBus, SourceTruncated, WindowDecided, read_jsonl_events
from runtime.frames import Frame
from runtime.sources import SourceError, StreamEnd, SyntheticSource, write_sample_video
from runtime.stats import RunSummary
from tests.runtime.accounting import check_accounting
from tests.runtime.fakes import FakeBackend

REPO = Path(__file__).resolve().parents[2]
FPS = 30.0


def _config(**overrides: Any) -> StreamingConfig:
    base = {"window.latest_wins": False, "policy.every_n.n": 100}
    return apply_overrides(config_from_dict({}), {**base, **overrides})


def _run(source: SyntheticSource, cfg: StreamingConfig | None = None, backend: FakeBackend | None = None,
         **engine_kwargs: Any) -> tuple[StreamingEngine, list[Event]]:
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    backend = backend or FakeBackend()
    engine = StreamingEngine(cfg or _config(), backend, source, bus, backend.load_tokenizer(), **engine_kwargs)
    return engine, events


def _spans(events: list[Event]) -> list[tuple[int, float, float, bool]]:
    return [(e.window_index, round(e.t_start, 6), round(e.t_end, 6), e.final) for e in events
            if isinstance(e, WindowDecided)]


class _Truncated(SyntheticSource):
    """Delivers ``frames`` of an announced 145-frame file, then ends as truncated (what a cut file reports)."""

    def __init__(self, frames: int, **kwargs: Any) -> None:
        super().__init__(duration_s=145 / FPS, size=(48, 64), **kwargs)
        self.cut = frames

    def _read(self) -> Frame | None:
        if self._next_index >= self.cut:
            self.stream_end = StreamEnd("truncated", self.cut / FPS, self.cut, 145, f"decoded {self.cut} of 145 frames")
            return None
        return super()._read()


class _FailsAt(SyntheticSource):
    """Raises ``error`` when asked for frame ``at`` (an unplugged camera, a decoder crash)."""

    def __init__(self, at: int, error: Exception, **kwargs: Any) -> None:
        super().__init__(duration_s=60.0, size=(48, 64), **kwargs)
        self.at, self.error = at, error

    def _read(self) -> Frame | None:
        if self._next_index >= self.at:
            raise self.error
        return super()._read()


class _Stalls(SyntheticSource):
    """Delivers ``frames`` frames, then blocks in ``read`` until released (a hung driver or network stream)."""

    def __init__(self, frames: int, **kwargs: Any) -> None:
        super().__init__(duration_s=60.0, size=(48, 64), **kwargs)
        self.frames, self.release = frames, threading.Event()

    def _read(self) -> Frame | None:
        if self._next_index >= self.frames:
            self.release.wait(30.0)
            return None
        return super()._read()


# ----------------------------------------------------------------------------------------------- end of a stream


@pytest.mark.parametrize(
    ("duration_s", "spans"),
    [
        (4.8, [(0, 0.0, 2.0, False), (1, 1.5, 3.5, False), (2, 2.8, 4.8, True)]),  # the last second is decided
        (5.0, [(0, 0.0, 2.0, False), (1, 1.5, 3.5, False), (2, 3.0, 5.0, False)]),  # exactly on the grid
        (1.2, [(0, 0.0, 1.2, True)]),  # shorter than one window: one decision over what exists
    ],
)
def test_the_end_of_a_stream_is_decided(duration_s: float, spans: list[tuple[int, float, float, bool]]) -> None:
    """Issue 9 item 2: the last frame's duration counts; the time after the last grid window gets a final window."""
    engine, events = _run(SyntheticSource(duration_s=duration_s, size=(48, 64)))
    summary = engine.run()
    assert _spans(events) == spans
    assert summary.ended_by == "end_of_stream" and summary.stream_s == pytest.approx(duration_s)
    check_accounting(events, summary, end_time=duration_s)


def test_a_tail_shorter_than_min_tail_is_reported_skipped() -> None:
    """3.6 s: 0.1 s after window [1.5, 3.5] is below window.min_tail_s (0.25): skipped ``short_tail``, not dropped."""
    engine, events = _run(SyntheticSource(duration_s=3.6, size=(48, 64)))
    summary = engine.run()
    decided, skipped = check_accounting(events, summary)
    assert [e.window_index for e in decided] == [0, 1]
    assert [(e.window_index, e.reason) for e in skipped] == [(2, "short_tail")] and "0.100 s" in skipped[0].detail


def test_a_real_4_8_s_file_gets_a_decision_covering_its_last_second(tmp_path: Path) -> None:
    """The acceptance case on an mp4: 144 frames stamped up to 4.767 s cover 4.8 s; window [2.8, 4.8] is decided."""
    from runtime.sources import VideoFileSource

    video = write_sample_video(tmp_path / "clip.mp4", duration_s=4.8, size=(64, 80))
    engine, events = _run(VideoFileSource(video, paced=False))  # type: ignore[arg-type]
    summary = engine.run()
    assert _spans(events)[-1] == (2, 2.8, 4.8, True)
    check_accounting(events, summary, end_time=4.8)


def test_a_truncated_source_warns_ends_as_truncated_and_decides_what_it_read() -> None:
    """Issue 9 item 1 (engine side): ``StreamEnd.reason == truncated`` is a warning event and ``source_truncated``."""
    engine, events = _run(_Truncated(70))
    summary = engine.run()
    warnings = [e for e in events if isinstance(e, SourceTruncated)]
    assert [(w.frames_read, w.frames_expected) for w in warnings] == [(70, 145)]
    assert summary.ended_by == "source_truncated" and "decoded 70 of 145 frames" in summary.warnings[0]
    check_accounting(events, summary, end_time=70 / FPS)


# ----------------------------------------------------------------------------------------------- source failures


@pytest.mark.parametrize(
    "error",
    [SourceError("camera unplugged"), cv2.error("OpenCV(4.10) decoder: invalid data"), OSError(5, "I/O error")],
    ids=["SourceError", "cv2.error", "OSError"],
)
def test_a_source_failure_drains_complete_windows_then_raises_a_source_error(error: Exception) -> None:
    """Issue 9 items 3 and 6: windows complete before the failure (at 3.6 s) are decided, the cut one is reported,
    then the error is raised as a SourceError naming the source, whatever the source raised."""
    engine, events = _run(_FailsAt(108, error))
    with pytest.raises(SourceError, match="camera unplugged" if isinstance(error, SourceError) else "synthetic source"):
        engine.run()
    summary = engine.summary()
    decided, skipped = check_accounting(events, summary)
    assert [e.window_index for e in decided] == [0, 1]
    assert [(e.window_index, e.reason) for e in skipped] == [(2, "source_error")]
    assert summary.ended_by == "source_error"


def test_a_source_failure_under_latest_wins_decides_the_newest_complete_window() -> None:
    """Draining keeps latest-wins semantics: the newest complete window is decided, the older ones are ``behind``."""
    gate = threading.Event()
    backend = FakeBackend(before_video=lambda n: gate.wait(30.0) if n == 0 else None)
    engine, events = _run(_FailsAt(200, SourceError("camera unplugged")), _config(**{"window.latest_wins": True}),
                          backend, live=True)
    threading.Timer(0.5, gate.set).start()  # window 0 is "slow": the source fails at 6.67 s meanwhile
    with pytest.raises(SourceError):
        engine.run()
    decided, skipped = check_accounting(events, engine.summary())
    assert [e.window_index for e in decided] == [0, 3]
    assert [(e.window_index, e.reason) for e in skipped] == [(1, "behind"), (2, "behind"), (4, "source_error")]


def test_a_stalled_source_is_stopped_by_the_duration_with_the_summary() -> None:
    """A source that hangs in ``read`` after 3.2 s: the complete window is decided, ``--duration`` stops the run,
    the window the stall cut short is reported ``stopped``."""
    source = _Stalls(96)
    engine, events = _run(source)
    try:
        summary = engine.run(duration_s=1.0)
    finally:
        source.release.set()
    decided, skipped = check_accounting(events, summary)
    assert [e.window_index for e in decided] == [0]
    assert [(e.window_index, e.reason) for e in skipped] == [(1, "stopped")]
    assert summary.ended_by == "duration"


def test_a_window_whose_frames_were_overwritten_is_skipped_not_decided_from_the_rest() -> None:
    """Issue 9 item 5: a live source (it cannot wait) with a slow worker loses frames; such a window is skipped
    ``overwritten`` with the lost time, never decided from what is left."""
    received: list[tuple[int, float]] = []
    backend = FakeBackend(before_video=lambda n: time.sleep(0.3))
    cfg = _config(**{"capture.ring_buffer_frames": 64})
    engine, events = _run(SyntheticSource(duration_s=8.0, size=(48, 64), paced=False), cfg, backend, live=True)
    step = engine.session.step
    engine.session.step = lambda w, frames, latest=None: (received.append((w.index, min(f.timestamp for f in frames))),
                                                          step(w, frames, latest))[1]  # type: ignore[method-assign]
    summary = engine.run()
    decided, skipped = check_accounting(events, summary)
    assert any(e.reason == "overwritten" for e in skipped) and summary.frames_overwritten > 0
    starts = {e.window_index: e.t_start for e in decided}
    assert all(first <= starts[k] + 1 / FPS for k, first in received), "a window was decided without its first frames"


def test_offline_mode_applies_backpressure_and_processes_every_window() -> None:
    """Issue 9 item 5: with latest_wins false a synthetic source waits for a slow worker: nothing is overwritten,
    every window of 12 s is decided, with a buffer of 70 frames (just over one window)."""
    backend = FakeBackend(before_video=lambda n: time.sleep(0.05))
    cfg = _config(**{"capture.ring_buffer_frames": 70})
    engine, events = _run(SyntheticSource(duration_s=12.0, size=(48, 64)), cfg, backend)
    summary = engine.run()
    decided, skipped = check_accounting(events, summary, end_time=12.0)
    assert len(decided) == 8 and skipped == [] and summary.frames_overwritten == 0
    assert summary.frames_captured == 360


def test_a_ring_buffer_smaller_than_one_window_is_rejected_at_start() -> None:
    """Issue 9 item 5: 60 frames cannot hold a 2 s window at 30 fps (61 frames)."""
    engine, _ = _run(SyntheticSource(duration_s=4.0, size=(48, 64)), _config(**{"capture.ring_buffer_frames": 60}))
    with pytest.raises(ConfigError, match=r"capture\.ring_buffer_frames = 60: must hold one window .* \(>= 61"):
        engine.start()


def test_a_stage_error_reports_the_window_and_raises() -> None:
    """An exception in a stage ends the run as ``error``; the window it hit is reported skipped ``error``."""
    def boom(n: int) -> None:
        if n == 1:
            raise BackendError("decoder: CUDA out of memory")

    engine, events = _run(SyntheticSource(duration_s=6.5, size=(48, 64)), backend=FakeBackend(before_video=boom))
    with pytest.raises(BackendError, match="out of memory"):
        engine.run()
    summary = engine.summary()
    decided, skipped = check_accounting(events, summary)
    assert [e.window_index for e in decided] == [0]
    assert [(e.window_index, e.reason) for e in skipped] == [(1, "error")] and summary.ended_by == "error"


# ----------------------------------------------------------------------------------------------- the CLI in-process


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str],
         backend: FakeBackend | None = None, source: Any = None) -> tuple[int, list[Event], dict[str, Any] | None, str]:
    """Runs ``webcam.main`` on the fake backend (and optionally a given source); returns code, events, summary, err."""
    monkeypatch.setattr(webcam, "backend_from_config", lambda cfg, prefer_checkpoint=False: backend or FakeBackend())
    if source is not None:
        monkeypatch.setattr(webcam, "build_source", lambda a, cfg, paced=None: source)
    code = webcam.main(["--headless", "--jsonl", "--log-level", "WARNING", *args])
    out, err = capsys.readouterr()
    summary = json.loads(err[err.index('{\n "summary"'):])["summary"] if '{\n "summary"' in err else None
    return code, read_jsonl_events(out.splitlines()), summary, err


def test_cli_truncated_source_exits_5_with_the_warning_and_summary(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9 item 1: a truncated file is not success: exit 5, a ``source_truncated`` event, the summary says so."""
    code, events, summary, err = _cli(monkeypatch, capsys, ["--no-paced"], source=_Truncated(70))
    assert code == webcam.EXIT_TRUNCATED == 5
    assert any(isinstance(e, SourceTruncated) for e in events)
    assert summary is not None and summary["ended_by"] == "source_truncated" and "ended by source_truncated" in err
    check_accounting(events, summary, end_time=70 / FPS)


@pytest.mark.parametrize("kind", ["truncated", "corrupt"])
def test_cli_on_a_cut_or_corrupt_mp4_exits_5_with_the_warning(kind: str, test_videos: Any,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9 item 1 end to end: a real file cut to half its bytes, or with random bytes at its midpoint, decodes
    part of its frames; the run decides what it read, warns, ends ``source_truncated`` and exits 5, not 0."""
    code, events, summary, err = _cli(monkeypatch, capsys, ["--no-paced", "--source", str(getattr(test_videos, kind))])
    assert code == webcam.EXIT_TRUNCATED
    assert [e for e in events if isinstance(e, SourceTruncated)] and summary is not None
    assert summary["ended_by"] == "source_truncated" and summary["windows_processed"] >= 1
    check_accounting(events, summary)


def test_cli_foreign_source_error_exits_3_with_one_line_and_the_summary(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9 items 3 and 4: a ``cv2.error`` from the source mid-stream is a source error: exit 3, no traceback."""
    code, events, summary, err = _cli(monkeypatch, capsys, ["--no-paced"],
                                      source=_FailsAt(108, cv2.error("decoder: invalid data")))
    assert code == webcam.EXIT_SOURCE == 3
    assert "source error: synthetic source" in err and "error: decoder: invalid data" in err and "Traceback" not in err
    assert summary is not None and summary["ended_by"] == "source_error"
    check_accounting(events, summary)


def test_cli_backend_error_after_start_exits_6_with_the_summary(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9 items 3 and 4: a backend error while streaming: one line naming it, the summary, exit 6."""
    def boom(n: int) -> None:
        if n == 1:
            raise BackendError("decode: KV cache full")

    code, events, summary, err = _cli(monkeypatch, capsys, ["--source", "synthetic", "--duration", "6.5", "--no-paced"],
                                      backend=FakeBackend(before_video=boom))
    assert code == webcam.EXIT_INFERENCE == 6
    assert "inference error (BackendError): decode: KV cache full" in err and "Traceback" not in err
    assert summary is not None and summary["ended_by"] == "error"
    check_accounting(events, summary)


def test_cli_unexpected_stage_exception_exits_6_without_traceback(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Any exception in a stage maps to exit 6 with one line and the summary."""
    def boom(n: int) -> None:
        raise ZeroDivisionError("division by zero in a policy")

    args = ["--source", "synthetic", "--duration", "3", "--no-paced"]
    code, _, summary, err = _cli(monkeypatch, capsys, args, backend=FakeBackend(before_video=boom))
    assert code == 6 and "inference error (ZeroDivisionError)" in err and "Traceback" not in err and summary is not None


def test_cli_ctrl_c_during_model_load_exits_130_without_traceback(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9 item 10: Ctrl-C while the backend loads is one line and exit 130."""
    def interrupted(cfg: Any, prefer_checkpoint: bool = False) -> FakeBackend:
        raise KeyboardInterrupt

    monkeypatch.setattr(webcam, "backend_from_config", interrupted)
    assert webcam.main(["--headless", "--source", "synthetic", "--log-level", "WARNING"]) == webcam.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted while starting: nothing was streamed" in err and "Traceback" not in err


def test_cli_synthetic_source_honours_duration(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9 item 10: ``--source synthetic --duration 4.8`` streams 4.8 s (it was always 10 s)."""
    code, events, summary, _ = _cli(monkeypatch, capsys, ["--source", "synthetic", "--duration", "4.8", "--no-paced"])
    assert code == 0 and summary is not None and summary["stream_s"] == pytest.approx(4.8)
    check_accounting(events, summary, end_time=4.8)


@pytest.mark.parametrize("value", ["-3", "0", "inf", "soon"])
def test_cli_rejects_a_duration_that_is_not_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9 item 10: a negative (or zero, infinite, non-numeric) ``--duration`` is a usage error, exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        webcam.main(["--headless", "--source", "synthetic", "--duration", value])
    assert exit_info.value.code == 2 and "--duration" in capsys.readouterr().err


def test_cli_no_paced_reads_every_frame_once_and_skips_nothing(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9 item 10: ``--no-paced`` (default config: latest wins) no longer decodes flat out and throws frames
    away: it runs offline with backpressure: nothing overwritten, nothing skipped."""
    backend = FakeBackend(before_video=lambda n: time.sleep(0.05))
    code, events, summary, _ = _cli(monkeypatch, capsys, ["--source", "synthetic", "--duration", "9.5", "--no-paced"],
                                    backend=backend)
    assert code == 0 and summary is not None
    assert summary["frames_overwritten"] == 0 and summary["windows_skipped"] == 0 and summary["windows_processed"] == 6
    check_accounting(events, summary, end_time=9.5)


def test_cli_no_paced_with_latest_wins_set_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An explicit ``--set window.latest_wins=true`` contradicts ``--no-paced``: exit 2 naming both."""
    code = webcam.main(["--headless", "--source", "synthetic", "--no-paced", "--set", "window.latest_wins=true"])
    assert code == 2 and "--no-paced with --set window.latest_wins=true" in capsys.readouterr().err


def test_cli_explicit_engines_without_manifest_is_not_replaced_by_the_default_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9 item 10: ``--backend pytorch --engines DIR`` with no manifest there is an error, not a silent swap."""
    code = webcam.main(["--headless", "--source", "synthetic", "--backend", "pytorch", "--engines", str(tmp_path)])
    assert code == 2 and f"--engines {tmp_path} holds no exported engines" in capsys.readouterr().err


def test_cli_small_ring_buffer_is_rejected_before_the_model_loads(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``capture.ring_buffer_frames`` below one window at the source's rate fails fast: exit 2, no backend loaded."""
    monkeypatch.setattr(webcam, "backend_from_config", lambda *a, **k: pytest.fail("the backend was loaded"))
    code = webcam.main(["--headless", "--source", "synthetic", "--set", "capture.ring_buffer_frames=40"])
    assert code == 2 and "capture.ring_buffer_frames = 40: must hold one window" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- subprocess: signals


def _spawn(*args: str, fault: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.runtime.fault_cli", *fault, "--", "--headless", "--jsonl", "--log-level", "INFO",
           *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen[str], marker: str, timeout_s: float = 60.0) -> list[str]:
    """Reads stderr lines until one contains ``marker``; returns the lines read."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    proc.kill()
    raise AssertionError(f"{marker!r} not seen on stderr: {''.join(lines)[-2000:]}")


def _finish(proc: subprocess.Popen[str], before: list[str]) -> tuple[int, list[Event], dict[str, Any], str]:
    out, err = proc.communicate(timeout=60)
    err = "".join(before) + err
    summary = json.loads(err[err.index('{\n "summary"'):])["summary"]
    return proc.returncode, read_jsonl_events(out.splitlines()), summary, err


@pytest.mark.parametrize(("sig", "code", "ended_by"), [(signal.SIGTERM, 143, "terminated"),
                                                       (signal.SIGINT, 130, "interrupted")])
def test_a_signal_finishes_the_window_in_progress_and_prints_the_summary(sig: signal.Signals, code: int,
                                                                        ended_by: str) -> None:
    """Issue 9 item 4: SIGTERM (like Ctrl-C) during window 1 finishes it, says so, prints the summary, exits 143."""
    proc = _spawn("--source", "synthetic", "--duration", "600", "--paced", "--set", "policy.every_n.n=100",
                  fault=("--window-delay", "1.0"))
    before = _wait_for(proc, "fault_cli: window 1 in progress")
    proc.send_signal(sig)
    rc, events, summary, err = _finish(proc, before)
    assert rc == code, err[-3000:]
    assert summary["ended_by"] == ended_by
    assert (summary["window_at_stop"], summary["window_at_stop_outcome"]) == (1, "finished")
    assert "finishing window 1 (in progress)" in err and "Traceback" not in err
    decided, _ = check_accounting(events, summary)
    assert [e.window_index for e in decided][:2] == [0, 1]


def test_a_second_sigterm_abandons_the_window_in_progress() -> None:
    """A second SIGTERM while the window in progress is being finished abandons it: reported, summary, exit 143."""
    proc = _spawn("--source", "synthetic", "--duration", "600", "--paced", fault=("--window-delay", "20"))
    before = _wait_for(proc, "fault_cli: window 0 in progress")
    proc.send_signal(signal.SIGTERM)
    before += _wait_for(proc, "finishing window 0")
    proc.send_signal(signal.SIGTERM)
    rc, events, summary, err = _finish(proc, before)
    assert rc == 143 and (summary["window_at_stop"], summary["window_at_stop_outcome"]) == (0, "abandoned")
    _, skipped = check_accounting(events, summary)
    assert (skipped[0].window_index, skipped[0].reason) == (0, "abandoned") and "Traceback" not in err


def test_sigterm_during_model_load_exits_143_without_traceback() -> None:
    """SIGTERM while the backend loads: one line, exit 143 (nothing was streamed, so no summary)."""
    proc = _spawn("--source", "synthetic", fault=("--load-delay", "30"))
    before = _wait_for(proc, "fault_cli: loading")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    err = "".join(before) + err
    assert proc.returncode == 143 and "terminated while starting" in err and "Traceback" not in err and out == ""


def test_stdout_closed_by_its_reader_exits_141_with_the_summary_on_stderr() -> None:
    """Issue 9 item 3: ``| head -1``: the next event write fails with EPIPE; one line, the summary, exit 141."""
    proc = _spawn("--source", "synthetic", "--duration", "60", "--no-paced", fault=("--window-delay", "0.05"))
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert json.loads(first)["type"]
    proc.stdout.close()
    err = proc.stderr.read() if proc.stderr is not None else ""
    proc.wait(timeout=60)
    assert proc.returncode == 141, err[-3000:]
    assert "output closed: stdout was closed by its reader" in err and "Traceback" not in err
    summary = json.loads(err[err.index('{\n "summary"'):])["summary"]
    assert summary["ended_by"] == "output_closed"


def test_the_traceback_of_a_stage_exception_is_printed_at_debug_only() -> None:
    """``--log-level DEBUG`` adds the traceback of the error that ended the run (and only then)."""
    proc = _spawn("--source", "synthetic", "--duration", "3", "--no-paced", "--log-level", "DEBUG",
                  fault=("--fail-window", "0"))
    rc, _, summary, err = _finish(proc, [])
    assert rc == 6 and "Traceback" in err and "ZeroDivisionError: division by zero in window 0" in err
    assert summary["ended_by"] == "error"


def test_run_summary_lists_ended_by_values_the_cli_maps() -> None:
    """Every ``ended_by`` a summary can carry has a documented exit code in the CLI (none falls to 70)."""
    from runtime.stats import ENDED_BY

    failures = {"source_error": webcam.EXIT_SOURCE, "error": webcam.EXIT_INFERENCE,
                "output_closed": webcam.EXIT_OUTPUT_CLOSED}
    assert set(webcam.EXIT_BY_END) | set(failures) == set(ENDED_BY)
    assert all(webcam.exit_code(RunSummary("b", "fp32", "cpu", False, "p", ended_by=e)) == c
               for e, c in webcam.EXIT_BY_END.items())


def test_the_lag_includes_the_inference_time() -> None:
    """``lag_s`` is read when the window is decided: a paced stream whose windows take 0.4 s to infer lags by that
    much behind each window's end (it was read before inference, so it stayed near 0). A window ending with the
    stream is decided after it ended: nothing newer exists there."""
    backend = FakeBackend(before_video=lambda n: time.sleep(0.4))
    engine, events = _run(SyntheticSource(duration_s=5.0, size=(48, 64), paced=True), _config(), backend)
    summary = engine.run()
    decided, _ = check_accounting(events, summary)
    live = [e for e in decided if e.t_end < 5.0 - 1e-6]
    assert len(live) >= 2
    assert all(e.lag_s >= 0.25 for e in live), [e.lag_s for e in live]
