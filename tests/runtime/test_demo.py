"""``python -m runtime.demo`` prerequisites: it runs the configured engines and never runs the exporter itself.

``pytest tests/runtime/test_demo.py``. The full demo (export + 16 s paced stream) is exercised by ``make demo``; here
the sample runs unpaced.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from PIL import Image

from runtime import demo
from runtime.events import WindowDecided, read_jsonl_events


def test_missing_engines_are_a_clear_error_naming_make_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = demo.main(["--engines", str(tmp_path / "none"), "--video", str(tmp_path / "v.mp4")])
    assert code == 2
    err = capsys.readouterr().err
    assert "manifest.json does not exist" in err and "make export" in err
    assert not (tmp_path / "v.mp4").exists(), "nothing is written before the prerequisites hold"


def test_stale_engines_are_refused_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1}))
    assert demo.main(["--engines", str(tmp_path), "--video", str(tmp_path / "v.mp4")]) == 2
    assert "format_version 1, this code reads 2" in capsys.readouterr().err


def test_the_demo_prints_lines_and_writes_the_video_and_the_timeline(exported_tiny: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's outputs: readable lines (no JSON) naming the files, and the annotated video and timeline picture,
    both labelled random weights (the video is checked frame by frame in tests/runtime/test_render.py)."""
    video, out_dir = tmp_path / "sample.mp4", tmp_path / "demo"
    code = demo.main(["--engines", str(exported_tiny), "--video", str(video), "--out", str(out_dir), "--no-paced",
                      "--set", "policy.every_n.n=1", "--set", "generation.max_new_tokens=2"])
    out, err = capsys.readouterr()
    assert code == 0 and video.is_file(), err[-2000:]
    lines = out.splitlines()
    assert not any(line.startswith("{") for line in lines), "JSON on the terminal without --jsonl"
    assert any(line.startswith("[00:02.0] <feedback> ") for line in lines)
    assert f"wrote {out_dir / 'annotated.mp4'}  (annotated video, RANDOM WEIGHTS)" in lines
    assert f"wrote {out_dir / 'timeline.png'}  (timeline picture, RANDOM WEIGHTS)" in lines
    cap = cv2.VideoCapture(str(out_dir / "annotated.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) >= 16 * 30 and cap.get(cv2.CAP_PROP_FRAME_HEIGHT) == 720
    cap.release()
    assert Image.open(out_dir / "timeline.png").size[0] >= 1400
    events = read_jsonl_events((out_dir / "events.jsonl").read_text(encoding="utf-8").splitlines())
    summary = json.loads((out_dir / "summary.json").read_text())["summary"]
    assert summary["windows_processed"] == sum(isinstance(e, WindowDecided) for e in events) > 0
