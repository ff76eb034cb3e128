"""``benchmarks.allocations`` smoke run: per-token allocation figures at each requested context length.

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_allocations.py``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.benchmarks.helpers import assert_header


def test_allocations_report_schema(allocations_run: tuple[Path, dict[str, Any]]) -> None:
    """One point per context length, longer contexts longer, every figure present, Markdown written."""
    out, report = allocations_run
    assert_header(report, "allocations")
    points = report["variants"]["pytorch:fp32"]["points"]
    assert [p["windows"] for p in points] == [0, 1]
    assert points[0]["context_tokens"] < points[1]["context_tokens"]
    for p in points:
        assert p["steps"] == 3
        assert p["transient_bytes_per_token"]["p50"] >= 0
        assert p["returned_bytes_per_token"] == 4 * report["variants"]["pytorch:fp32"]["vocab_size"]  # the logits
        assert p["full_cache_copy_bytes"] == p["context_tokens"] * p["kv_bytes_per_position"]
    assert "KiB/token" in (out / "allocations.md").read_text()
