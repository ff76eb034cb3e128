"""``benchmarks.memory``: the slope fit, and a smoke run of the CLI on the tiny engines (report, table, plot).

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_memory.py``. Nothing here is timed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import memory


def test_slope_is_per_hour_of_stream_after_the_warm_up() -> None:
    """A rise of 1 MB per minute is 60 MB/h; points before the warm-up (loading) do not count; < 3 points: None."""
    times = [0.0, 10.0] + [60.0 * m for m in range(1, 11)]
    values = [5000.0, 5000.0] + [500.0 + m for m in range(1, 11)]
    assert memory.slope_per_hour(times, values, warmup_s=30.0) == pytest.approx(60.0)
    assert memory.slope_per_hour(times[:4], values[:4], warmup_s=30.0) is None


def test_a_short_run_reports_peak_slopes_and_every_window(exported_tiny: Path, tmp_path: Path) -> None:
    """6 s of stream: four windows (the last is the final [4, 6]), RSS samples, KV per window, table and plot."""
    code = memory.main(["--out", str(tmp_path), "--engines", str(exported_tiny), "--stream-min", "0.1",
                        "--warmup-s", "0", "--sample-s", "0.2"])
    assert code == 0
    report = json.loads((tmp_path / "memory.json").read_text())
    run = report["variants"]["default"]
    assert run["windows_processed"] == 4 and run["windows"][-1]["t"] == pytest.approx(6.0)
    assert run["peak_rss_mb"] >= max(s["rss_mb"] for s in run["samples"]) > 0
    assert run["kv_max_mb"] > 0 and "--no-paced" in run["command"]
    assert "| default | 0.1 | 4 |" in (tmp_path / "memory.md").read_text()
    assert (tmp_path / "memory.png").read_bytes()[:4] == b"\x89PNG"
