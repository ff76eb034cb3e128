"""Assertions shared by the benchmark tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def iter_summaries(obj: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every latency summary (a dict with ``p50_ms``) nested anywhere in a report, with its JSON path."""
    if isinstance(obj, dict):
        if "p50_ms" in obj:
            yield path, obj
        for key, value in obj.items():
            yield from iter_summaries(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from iter_summaries(value, f"{path}[{i}]")


def assert_header(report: dict[str, Any], benchmark: str) -> None:
    """The fields every report must carry: what, when, how, on which machine and library versions."""
    for key in ("schema_version", "benchmark", "date", "command", "git", "preset", "backend", "precision", "machine"):
        assert key in report, f"report lacks {key}"
    assert report["benchmark"] == benchmark
    assert report["command"].startswith(f"python -m benchmarks.{benchmark}")
    machine = report["machine"]
    for key in ("cpu", "logical_cores", "usable_cores", "gpu", "platform", "python", "versions"):
        assert key in machine, f"machine lacks {key}"
    assert machine["versions"]["torch"] and machine["versions"]["numpy"]


def assert_percentiles_ordered(report: dict[str, Any]) -> int:
    """min <= p50 <= p95 <= p99 <= max and n >= 1 for every latency summary; returns how many were checked."""
    count = 0
    for path, s in iter_summaries(report):
        assert s["n"] >= 1, path
        assert s["min_ms"] <= s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"], (path, s)
        assert s["min_ms"] >= 0, path
        count += 1
    return count
