"""``python -m runtime.demo`` prerequisites: it runs the configured engines and never runs the exporter itself.

``pytest tests/runtime/test_demo.py``. The full demo (export + 16 s paced stream) is exercised by ``make demo``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime import demo


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


def test_the_demo_streams_the_sample_through_the_runtime(exported_tiny: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "sample.mp4"
    code = demo.main(["--engines", str(exported_tiny), "--video", str(video), "--no-paced",
                      "--set", "policy.every_n.n=1", "--set", "generation.max_new_tokens=2"])
    assert code == 0 and video.is_file()
    out, err = capsys.readouterr()
    assert '"type": "window_decided"' in out and "RANDOM WEIGHTS" in err
