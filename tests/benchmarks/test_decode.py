"""``benchmarks.decode``: greedy-generation step vs isolated decode step (smoke run on the PyTorch tiny model), and the
pass-through that times the feedback loop's steps.

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_decode.py``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.decode import FeedClock
from tests.benchmarks.helpers import assert_header, assert_percentiles_ordered


def test_decode_report_schema(decode_run: tuple[Path, dict[str, Any]]) -> None:
    """One entry per variant: both summaries, the paired ratio over the rounds, the stage's own tokens/s."""
    out, report = decode_run
    assert_header(report, "decode")
    assert report["goal_ratio"] == 1.15
    (name, r) = next(iter(report["variants"].items()))
    assert name == "pytorch:fp32"
    assert r["isolated"]["n"] == r["rounds"] * r["isolated_calls_per_round"] == 4
    assert r["greedy_step"]["n"] == r["rounds"] * (r["new_tokens"] - 1) == 4  # 3 tokens: 2 intervals per round
    assert r["ratio"]["n"] == r["rounds"]
    assert r["greedy_step_from_stage_tokens_per_s"]["n"] == r["rounds"]
    assert assert_percentiles_ordered(report) >= 3
    assert "greedy / isolated" in (out / "decode.md").read_text()


def test_decode_runs_both_on_the_same_context(decode_run: tuple[Path, dict[str, Any]]) -> None:
    """The isolated step decodes on system + window + <feedback>: the cache the first generated token is decoded on."""
    _, report = decode_run
    ctx = next(iter(report["variants"].values()))["context_tokens"]
    assert ctx["greedy_first_step"] == ctx["system"] + ctx["window"]
    assert ctx["isolated"] == ctx["greedy_first_step"] + 1
    assert ctx["greedy_last_step"] == ctx["greedy_first_step"] + 1  # 3 tokens: feeds at +0 (<feedback>) and +1


class _Context:
    def __init__(self) -> None:
        self.fed: list[list[int]] = []
        self.ended: tuple[int | None, int] | None = None

    def extend(self, ids: list[int]) -> np.ndarray:
        self.fed.append(list(ids))
        return np.zeros(4, dtype=np.float32)

    def end_feedback(self, last_token: int | None, window_index: int) -> None:
        self.ended = (last_token, window_index)


def test_feed_clock_passes_calls_through_and_counts_intervals() -> None:
    """Every feed reaches the real context unchanged; n feeds give n - 1 step intervals."""
    inner = _Context()
    clock = FeedClock(inner)  # type: ignore[arg-type]
    for ids in ([7], [1], [2]):
        clock.extend(ids)
    clock.end_feedback(3, 5)
    assert inner.fed == [[7], [1], [2]] and inner.ended == (3, 5)
    steps = clock.step_ms()
    assert len(steps) == 2 and all(s >= 0 for s in steps)
