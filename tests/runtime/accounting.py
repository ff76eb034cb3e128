"""The no-silent-loss check of an event stream: every window is decided or reported skipped, exactly once.

Used by the fault-injection suite (``tests/runtime/test_faults.py``) and the CLI tests on JSONL output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from runtime.events import Event, WindowDecided, WindowSkipped
from runtime.stats import RunSummary


def check_accounting(
    events: Sequence[Event],
    summary: RunSummary | Mapping[str, Any] | None = None,
    *,
    end_time: float | None = None,
) -> tuple[list[WindowDecided], list[WindowSkipped]]:
    """Asserts that the windows of ``events`` are all accounted for, and returns the decided and skipped ones.

    * window indices ``0 .. last`` each appear exactly once, decided or skipped (none both, none missing);
    * decisions come in index order; at most one is ``final`` and it is the last window;
    * with ``summary`` (a ``RunSummary`` or its JSON dict): its processed / skipped counts and skip reasons match;
    * with ``end_time`` (a stream that ended): the decided and skipped windows reach it (nothing at the end lost).
    """
    decided = [e for e in events if isinstance(e, WindowDecided)]
    skipped = [e for e in events if isinstance(e, WindowSkipped)]
    decided_idx = [e.window_index for e in decided]
    skipped_idx = [e.window_index for e in skipped]
    assert decided_idx == sorted(set(decided_idx)), f"windows decided out of order or twice: {decided_idx}"
    assert len(skipped_idx) == len(set(skipped_idx)), f"a window was reported skipped twice: {skipped_idx}"
    assert not set(decided_idx) & set(skipped_idx), "a window was both decided and skipped"
    every = sorted(decided_idx + skipped_idx)
    assert every == list(range(len(every))), f"windows missing from the stream: have {every}"
    finals = [e for e in decided if e.final]
    assert len(finals) <= 1 and all(e.window_index == every[-1] for e in finals), "a final window that is not last"
    if summary is not None:
        s = summary.to_dict() if isinstance(summary, RunSummary) else dict(summary)
        assert s["windows_processed"] == len(decided)
        assert s["windows_skipped"] == len(skipped)
        assert {k: v for k, v in s["skipped_by_reason"].items() if v} == dict(Counter(e.reason for e in skipped))
    if end_time is not None:
        assert decided or skipped, "a stream that ended produced no window at all"
        reached = max([e.t_end for e in decided], default=float("-inf"))
        last_is_skip = bool(skipped) and (not decided or skipped_idx[-1] > decided_idx[-1])
        assert last_is_skip or reached == pytest.approx(end_time, abs=1e-6), f"decided up to {reached}, not {end_time}"
    return decided, skipped
