"""Loading ground truth and predictions, and ``python -m evaluation.timing`` end to end.

``pytest tests/evaluation/test_timing_cli.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.annotations import AnnotationError, collapse_runs, load_ground_truth, load_predictions
from evaluation.timing import main
from runtime.events import FeedbackFinished, FeedbackSpoken, WindowDecided


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _decided(index: int, t_end: float, action: str, lag: float = 0.0, total_ms: float = 0.0) -> dict:
    return WindowDecided(index, t_end - 2.0, t_end, action, 0.9, action, {"total": total_ms}, lag_s=lag).to_dict()


def test_runtime_events_give_decision_and_delivery_times(tmp_path: Path) -> None:
    """Decision = t_end; delivery adds the lag (compute included) and the time to first token; suppressed repeats are
    not predictions."""
    log = _write_jsonl(tmp_path / "ep1.jsonl", [
        _decided(0, 2.0, "<next>"),
        _decided(1, 3.5, "<feedback>", lag=0.25, total_ms=500.0),
        FeedbackFinished(1, "Knees out", 4, 250.0, 10.0).to_dict(),
        _decided(2, 5.0, "<feedback>"),
        FeedbackFinished(2, "Knees out", 4, 100.0, 10.0, suppressed=True).to_dict(),
    ])
    run = load_predictions([log])["ep1"]
    assert [(x.t, x.text) for x in run.decision] == [(3.5, "Knees out")]
    assert run.delivery[0].t == pytest.approx(3.5 + 0.25 + 0.25)
    assert (run.suppressed, run.window_ends, run.audio) == (1, [2.0, 3.5, 5.0], None)


def test_speech_events_give_audio_times(tmp_path: Path) -> None:
    """A ``speech_started`` event's ``delay_s`` is added to the delivery time."""
    log = _write_jsonl(tmp_path / "run.jsonl", [
        _decided(0, 2.0, "<feedback>"),
        FeedbackFinished(0, "Slow down", 3, 0.0, 0.0).to_dict(),
        {"type": "speech_started", "window_index": 0, "delay_s": 0.4},
    ])
    run = load_predictions([log], {"run.jsonl": "squat_7"})["squat_7"]
    assert run.audio is not None and run.audio[0].t == pytest.approx(2.4)


def test_the_runtimes_feedback_spoken_events_give_audio_times(tmp_path: Path) -> None:
    """``--speak`` runs log ``feedback_spoken``: a spoken feedback is heard at ``audio_start_t`` after the stream's
    first frame; a superseded one was never heard and is no prediction at audio time (still one at decision time)."""
    log = _write_jsonl(tmp_path / "run.jsonl", [
        WindowDecided(0, 10.0, 12.0, "<feedback>", 0.9, "<feedback>", {"total": 1.0}).to_dict(),
        FeedbackFinished(0, "Slow down", 3, 50.0, 10.0).to_dict(),
        WindowDecided(1, 11.5, 13.5, "<feedback>", 0.9, "<feedback>", {"total": 1.0}).to_dict(),
        FeedbackFinished(1, "Knees out", 3, 50.0, 10.0).to_dict(),
        FeedbackSpoken(1, "Knees out", "superseded").to_dict(),
        FeedbackSpoken(0, "Slow down", "spoken", audio_start_ms=300.0, audio_start_t=2.45, audio_s=1.0).to_dict(),
    ])
    run = load_predictions([log])["run"]
    assert [x.t for x in run.decision] == [12.0, 13.5]
    assert run.audio is not None and [(x.t, x.text) for x in run.audio] == [(pytest.approx(12.45), "Slow down")]


def test_simple_ground_truth_sorts_items_and_reads_durations(tmp_path: Path) -> None:
    """Items are sorted by time per episode; a duration line declares an episode without feedback."""
    path = _write_jsonl(tmp_path / "gt.jsonl", [
        {"episode": "a", "t": 5.0, "text": "y"}, {"episode": "a", "t": 1.0, "text": "x"},
        {"episode": "b", "duration": 12.0},
    ])
    gt = load_ground_truth(path)
    assert [x.t for x in gt["a"].items] == [1.0, 5.0] and gt["b"].items == [] and gt["b"].duration_s == 12.0


def test_a_malformed_line_names_the_file_and_line(tmp_path: Path) -> None:
    """Bad input is an error naming where it is."""
    path = tmp_path / "gt.jsonl"
    path.write_text('{"episode": "a", "t": 1.0, "text": "x"}\n{"episode": "a", "t": "soon", "text": "y"}\n')
    with pytest.raises(AnnotationError, match=r"gt\.jsonl:2: 't': expected a finite number"):
        load_ground_truth(path)


def test_qevd_official_segments_between_transitions(tmp_path: Path) -> None:
    """Runs collapse, transitions are dropped, times become relative to the first frame of the transition span."""
    frames = ["", "First up: squats", "First up: squats", "", "Knees out", "", "Moving on", "Moving on", "End", ""]
    stamps_ns = (np.arange(len(frames)) * 0.5e9).astype(np.int64)  # 2 fps
    np.save(tmp_path / "ts.npy", stamps_ns)
    record = {
        "long_range_video_file": "long_range_videos/v1.mp4",
        "video_timestamps": "ts.npy",
        "feedbacks": frames,
        "feedback_timestamps": [28800.5, 28802.0, 28803.0, 28804.0],
        "is_transition": [True, False, True, True],
    }
    (tmp_path / "ann.json").write_text(json.dumps([record]))
    gt = load_ground_truth(tmp_path / "ann.json", "official")
    assert sorted(gt) == ["v1_0", "v1_1"]
    assert [(x.t, x.text) for x in gt["v1_0"].items] == [(1.5, "Knees out")]
    assert gt["v1_0"].duration_s == pytest.approx(0.5 * (3.0 + 3.5) - 0.5)
    assert collapse_runs(frames)[0] == ("First up: squats", 1, 2)


def test_cli_json_matches_the_hand_computed_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--json`` prints the micro-averaged decision-time numbers at ``--tolerance`` (episode A of test_matching)."""
    gt = _write_jsonl(tmp_path / "gt.jsonl", [
        {"episode": "A", "t": 2.0, "text": "knees out"}, {"episode": "A", "t": 6.0, "text": "back straight"},
        {"episode": "A", "t": 10.0, "text": "slow down"}, {"episode": "A", "duration": 16.0},
    ])
    pred = _write_jsonl(tmp_path / "pred.jsonl", [
        {"episode": "A", "t": t, "text": x} for t, x in ((2.5, "knees out"), (5.0, "back"), (5.8, "up"), (14.0, "x"))
    ])
    assert main(["--gt", str(gt), "--pred", str(pred), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in ("matched_gt", "n_gt", "matched_pred", "n_pred")} == {
        "matched_gt": 2, "n_gt": 3, "matched_pred": 2, "n_pred": 4}
    assert out["f"] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert out["text"]["pairs"] == 2 and out["text"]["rouge_l"] == pytest.approx(0.5)
    assert {r["baseline"].split()[0] for r in out["baselines"]} == {"metronome", "random", "every"}


def test_cli_exit_code_2_for_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing ground-truth file is exit code 2 with the path in the message."""
    assert main(["--gt", str(tmp_path / "nope.jsonl"), "--pred", str(tmp_path / "p.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
