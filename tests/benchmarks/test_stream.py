"""``benchmarks.stream`` smoke run: the real StreamingEngine on the PyTorch tiny model, its report and counts.

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_stream.py``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.stream import complete_windows
from runtime.stats import STAGES
from tests.benchmarks.helpers import assert_header, assert_percentiles_ordered


def test_stream_report_schema(stream_run: tuple[Path, dict[str, Any]]) -> None:
    """Both runs, every session stage summarised, feedback forced by every_n, KV and RSS recorded."""
    _, report = stream_run
    assert_header(report, "stream")
    assert set(report["runs"]) == {"unpaced", "paced"}
    for mode, run in report["runs"].items():
        assert set(STAGES) <= set(run["stages"]), mode
        assert run["feedback"]["count"] >= 1 and run["feedback"]["ttft"]["n"] == run["feedback"]["count"], mode
        assert run["kv_bytes"]["max"] > 0 and run["peak_rss_mb"] > 0, mode
        assert run["real_time_factor"] > 0 and run["sustained_input_fps"] > 0, mode
        assert run["engine_summary"]["backend"] == "pytorch", mode
    assert assert_percentiles_ordered(report) > 10


def test_stream_window_counts_add_up(stream_run: tuple[Path, dict[str, Any]]) -> None:
    """processed + skipped == windows complete in the stream; the unpaced run skips none."""
    _, report = stream_run
    for mode, run in report["runs"].items():
        w = run["windows"]
        assert w["processed"] + w["skipped"] == w["complete"], (mode, w)
        assert sum(w["skipped_by_reason"].values()) == w["skipped"], mode
        assert w["complete"] == 2, mode  # 3.5 s of stream: windows at [0, 2] and [1.5, 3.5]
        assert len(run["kv_bytes"]["per_window"]) == w["processed"], mode
    assert report["runs"]["unpaced"]["windows"]["skipped"] == 0


def test_stream_writes_markdown_and_plot(stream_run: tuple[Path, dict[str, Any]]) -> None:
    """The table and the stacked latency bar exist."""
    out, _ = stream_run
    assert "| run |" in (out / "stream.md").read_text()
    assert (out / "stream_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_complete_windows_rule() -> None:
    """2 s windows every 1.5 s: one for a stream shorter than a window, one at 2 s, two at 3.5 s, three at 3.6 s
    (the 0.1 s tail is a short_tail skip) and at 4.8 s (a final window), twelve in 18.5 s."""
    assert complete_windows(1.99, 2.0, 1.5) == 1
    assert complete_windows(2.0, 2.0, 1.5) == 1
    assert complete_windows(3.5, 2.0, 1.5) == 2
    assert complete_windows(3.6, 2.0, 1.5) == complete_windows(4.8, 2.0, 1.5) == 3
    assert complete_windows(18.5, 2.0, 1.5) == 12
