"""``python -m runtime.webcam``: headless JSONL runs with the tiny model, error messages and exit codes.

``pytest tests/runtime/test_webcam.py``. The JSONL checks are the issue's acceptance criteria: windows never overlap
wrongly, feedback never violates the interval, and text appears only after ``<feedback>``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import webcam
from runtime.backends import BackendError, create_backend
from runtime.events import (
    Event,
    FeedbackFinished,
    FeedbackStarted,
    FeedbackToken,
    WindowDecided,
    read_jsonl_events,
)
from runtime.sources import write_sample_video
from tests.runtime.accounting import check_accounting

REPO = Path(__file__).resolve().parents[2]
WINDOW_S, STRIDE_S = 2.0, 1.5


@pytest.fixture(scope="module")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5 s synthetic exercise video (30 fps)."""
    return write_sample_video(tmp_path_factory.mktemp("video") / "sample.mp4", duration_s=5.0)


def check_stream(events: list[Event], min_interval_s: float) -> None:
    """The acceptance invariants of a JSONL event stream."""
    decided, _ = check_accounting(events)  # every window decided or reported skipped, in order
    for e in decided:  # windows sit on the stride grid: consecutive ones overlap by exactly window - stride
        if e.final:  # the end-of-file window ends at the end and is at most one window long
            assert 0 < e.t_end - e.t_start <= WINDOW_S + 1e-9
            continue
        assert e.t_start == pytest.approx(e.window_index * STRIDE_S) and e.t_end == pytest.approx(e.t_start + WINDOW_S)
    spoken = [e.t_end for e in decided if e.action != "<next>"]
    assert all(b - a >= min_interval_s - 1e-9 for a, b in itertools.pairwise(spoken)), f"interval violated: {spoken}"

    feedback_windows = {e.window_index for e in decided if e.action == "<feedback>"}
    streaming: int | None = None
    started: list[int] = []
    for event in events:
        if isinstance(event, FeedbackStarted):
            assert streaming is None and event.window_index in feedback_windows
            streaming = event.window_index
            started.append(streaming)
        elif isinstance(event, FeedbackToken):
            assert event.window_index == streaming, "feedback text outside a <feedback> turn"
        elif isinstance(event, FeedbackFinished):
            assert event.window_index == streaming
            streaming = None
        elif isinstance(event, WindowDecided):
            assert streaming is None
    assert sorted(started) == sorted(feedback_windows), "a <feedback> without generation, or generation without it"


def test_headless_cli_on_a_video_with_the_tiny_model(sample_video: Path, tiny_checkpoint: tuple[Path, Path]) -> None:
    """The real entry point, paced (live-like, latest-wins), on the PyTorch backend."""
    model_dir, clip_dir = tiny_checkpoint
    cmd = [
        sys.executable,
        "-m",
        "runtime.webcam",
        "--source",
        str(sample_video),
        "--headless",
        "--jsonl",
        "--backend",
        "pytorch",
        "--model",
        str(model_dir),
        "--clip",
        str(clip_dir),
        "--set",
        "policy.every_n.n=1",
        "--set",
        "decision.min_feedback_interval_s=3",
        "--set",
        "generation.max_new_tokens=6",
        "--set",
        "backend.intra_op_threads=2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    events = read_jsonl_events(done.stdout.splitlines())
    assert any(isinstance(e, WindowDecided) for e in events)
    check_stream(events, min_interval_s=3.0)
    assert "RANDOM WEIGHTS" in done.stderr
    summary = json.loads(done.stderr[done.stderr.index('{\n "summary"') :])["summary"]
    assert summary["random_weights"] is True and summary["backend"] == "pytorch"
    assert summary["windows_processed"] == sum(isinstance(e, WindowDecided) for e in events)


def test_offline_run_decides_every_window(
    sample_video: Path, tiny_checkpoint: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Unpaced with latest_wins=false: every complete window is decided, in order; the gate spaces feedback."""
    model_dir, clip_dir = tiny_checkpoint
    code = webcam.main(
        [
            "--source",
            str(sample_video),
            "--headless",
            "--jsonl",
            "--no-paced",
            "--backend",
            "pytorch",
            "--model",
            str(model_dir),
            "--clip",
            str(clip_dir),
            "--log-level",
            "WARNING",
            "--set",
            "window.latest_wins=false",
            "--set",
            "capture.ring_buffer_frames=512",
            "--set",
            "policy.every_n.n=1",
            "--set",
            "decision.min_feedback_interval_s=2",
            "--set",
            "generation.max_new_tokens=4",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    events = read_jsonl_events(out.out.splitlines())
    decided = [e for e in events if isinstance(e, WindowDecided)]
    # 150 frames stamped up to 4.967 s cover 5.0 s: window 2 [3, 5] is complete (it was lost before issue 9).
    assert [(e.window_index, e.t_start, e.t_end) for e in decided] == [(0, 0.0, 2.0), (1, 1.5, 3.5), (2, 3.0, 5.0)]
    assert [(e.action, e.gate_reason) for e in decided] == [("<feedback>", None), ("<next>", "interval"),
                                                             ("<feedback>", None)]
    check_stream(events, min_interval_s=2.0)
    finished = [e for e in events if isinstance(e, FeedbackFinished)]
    assert len(finished) == 2 and all(1 <= f.n_tokens <= 4 for f in finished)
    assert all(np.isfinite(e.action_logits).all() for e in decided)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--set", "window.overlap_s=5"], 2, "window.overlap_s = 5.0: must be >= 0 and < window.window_s (2.0)"),
        (["--backend", "tflite"], 2, "backend.name = 'tflite': must be one of pytorch, onnxruntime, tensorrt"),
        (["--set", "context.max_windows=0"], 2, "context.max_windows = 0: must be >= 1"),
        (["--set", "policy.nme=model"], 2, "policy.nme: unknown key"),
        (["--set", "oops"], 2, "--set 'oops': expected KEY=VALUE"),
        (["--source", "/nonexistent/clip.mp4"], 3, "video file not found: /nonexistent/clip.mp4"),
        (["--source", "7"], 3, "camera index 7"),
        (["--backend", "onnxruntime", "--engines", "/nonexistent/engines"], 2, "/nonexistent/engines holds no exported"),
    ],
)
def test_cli_errors_name_the_problem(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--headless", "--source", "synthetic", "--log-level", "ERROR"]
    assert webcam.main([*base, *args]) == code
    assert message in capsys.readouterr().err


def test_a_bad_checkpoint_is_exit_2_with_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The pytorch backend on an empty checkpoint directory: the documented code and message, no traceback."""
    (tmp_path / "model").mkdir()
    (tmp_path / "clip").mkdir()
    args = ["--headless", "--source", "synthetic", "--log-level", "ERROR", "--backend", "pytorch",
            "--model", str(tmp_path / "model"), "--clip", str(tmp_path / "clip")]
    assert webcam.main(args) == webcam.EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"backend error: pytorch backend: cannot load {tmp_path / 'model'}" in err and "Traceback" not in err


def test_window_mode_without_a_display_asks_for_headless(capsys: pytest.CaptureFixture[str]) -> None:
    if not webcam.display_problem():  # probed in a child process: Qt aborts the process without a display
        pytest.skip("this machine can open an OpenCV window")
    assert webcam.main(["--source", "synthetic", "--log-level", "ERROR"]) == webcam.EXIT_DISPLAY
    assert "run with --headless" in capsys.readouterr().err


def test_unknown_backend_name_lists_the_choices() -> None:
    with pytest.raises(BackendError, match=r"unknown backend 'tflite': choose one of pytorch\|onnxruntime\|tensorrt"):
        create_backend("tflite")
