"""Measurement helpers: percentile summaries, paired ratios, interleaving order, report header.

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_common.py``
"""

from __future__ import annotations

import pytest

from benchmarks.common import (
    REPO,
    command_line,
    machine_info,
    markdown_table,
    paired_ratio,
    summarize_ms,
    time_call,
    time_interleaved,
)


def test_summary_percentiles_are_ordered_and_counted() -> None:
    """p50 <= p95 <= p99 within [min, max]; n counts the samples."""
    s = summarize_ms([5.0, 1.0, 3.0, 2.0, 4.0, 100.0])
    assert s["n"] == 6
    assert s["min_ms"] == 1.0 and s["max_ms"] == 100.0
    assert s["min_ms"] <= s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["p50_ms"] == pytest.approx(3.5)


def test_summary_of_nothing_is_an_error() -> None:
    """An empty sample list raises instead of reporting zeros."""
    with pytest.raises(ValueError, match="no samples"):
        summarize_ms([])


def test_paired_ratio_is_robust_to_a_shared_slow_round() -> None:
    """A burst of load that slows both variants in the same round does not move the per-round ratio."""
    a = [10.0, 10.0, 50.0, 10.0]  # round 2 hit by load
    b = [20.0, 20.0, 100.0, 20.0]
    r = paired_ratio(a, b)
    assert r["ratio_p50"] == pytest.approx(0.5)
    assert r["ratio_p10"] == pytest.approx(0.5) and r["ratio_p90"] == pytest.approx(0.5)
    assert r["n"] == 4


def test_paired_ratio_needs_equal_lengths() -> None:
    """Series of different length cannot be paired; the message gives both lengths."""
    with pytest.raises(ValueError, match="got 2 and 1"):
        paired_ratio([1.0, 2.0], [1.0])


def test_interleaving_alternates_the_order_every_round() -> None:
    """Round r runs A,B when r is even and B,A when odd, after the warm-up calls, so order effects cancel."""
    calls: list[str] = []
    samples = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert len(samples["a"]) == len(samples["b"]) == 3


def test_set_up_runs_before_every_call_and_outside_the_clock() -> None:
    """``before`` runs untimed before each call of its variant, warm-up included (e.g. cutting a KV cache back)."""
    calls: list[str] = []
    samples = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1,
                               before={"a": lambda: calls.append("cut")})
    assert calls == ["cut", "a", "b", "cut", "a", "b", "b", "cut", "a"]
    assert len(samples["a"]) == 2
    calls.clear()
    assert len(time_call(lambda: calls.append("x"), repeats=2, warmup=1, before=lambda: calls.append("cut"))) == 2
    assert calls == ["cut", "x"] * 3


def test_machine_info_never_imports_torch() -> None:
    """The machine description reads versions from metadata; torch's thread count only when torch is loaded."""
    import subprocess
    import sys

    code = ("import sys, benchmarks.common as c; m = c.machine_info(); "
            "print('torch' in sys.modules, m['versions']['numpy'] is not None)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    out = proc.stdout.split()
    assert out == ["False", "True"]
    assert machine_info()["torch_threads"] is not None  # this test process has torch loaded (tests/conftest.py)


def test_command_line_quotes_arguments() -> None:
    """The recorded command reproduces the run, quoting arguments with spaces."""
    expected = "python -m benchmarks.stream --source 'my clip.mp4'"
    assert command_line("benchmarks.stream", ["--source", "my clip.mp4"]) == expected


def test_markdown_table_shape() -> None:
    """Header, separator and one line per row."""
    text = markdown_table(["a", "b"], [[1, 2], [3, 4]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]
