"""Golden conformance: the reference must reproduce the release's outputs stage by stage.

Run: ``pytest tests/test_conformance.py`` (set MVGPT_GOLDEN_DIR to check another golden set).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mobile_videogpt import conformance


def test_golden_conformance_every_stage_within_tolerance(golden: Path) -> None:
    """Every expected tensor is within the README's tolerance and integer outputs match exactly."""
    rows = conformance.check_golden(golden)
    print(conformance.format_table(rows))
    names = {r.name for r in rows}
    assert {"videomamba_tokens", "selected_frames", "greedy_ids", "step_logits"} <= names
    assert [r.name for r in rows if not r.passed] == []


def test_conformance_cli_exit_code_and_table(golden: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI prints the table and exits 0 on the golden set."""
    assert conformance.main([str(golden)]) == 0
    out = capsys.readouterr().out
    assert "| videomamba_tokens |" in out and "0 failed" in out


def test_compare_flags_tensor_outside_tolerance() -> None:
    """A perturbed tensor beyond its threshold fails, and an exact key with one wrong id fails."""
    import numpy as np

    expected = {"video_projected": np.zeros((2, 3), np.float32), "greedy_ids": np.array([1, 2, 3])}
    ours = {"video_projected": np.full((2, 3), 2e-5, np.float32), "greedy_ids": np.array([1, 2, 4])}
    rows = conformance.compare(ours, expected, {"video_projected": 1e-5})
    assert [r.passed for r in rows] == [False, False]


def test_read_tolerances_parses_readme_table(golden: Path) -> None:
    """Thresholds come from the golden README's own table."""
    tol = conformance.read_tolerances(golden / "README.md")
    assert tol["videomamba_tokens"] == pytest.approx(1e-4)
    assert tol["step_logits"] == pytest.approx(5e-4)


def test_golden_conformance_with_chunked_scan(golden: Path) -> None:
    """The fast chunked selective scan (used by the PyTorch backend and the ONNX export) also passes the golden set."""
    rows = conformance.check_golden(golden, scan_impl="chunked")
    assert [r.name for r in rows if not r.passed] == []
