"""The QEVD temporal matcher, rule by rule, and a hand-computed multi-episode example.

``pytest tests/evaluation/test_matching.py``.
"""

from __future__ import annotations

import pytest

from evaluation.matching import TimedText, align, score


def _items(*pairs: tuple[float, str]) -> list[TimedText]:
    return [TimedText(t, text) for t, text in pairs]


def test_nearest_prediction_already_used_leaves_the_item_unmatched() -> None:
    """No fall-back: the second item's nearest prediction was taken, a free one within tolerance is not tried."""
    gt = _items((1.0, "a"), (1.1, "b"))
    pred = _items((1.05, "x"), (2.0, "y"))
    assert align(gt, pred, 3.0) == [(0, 0)]


def test_matches_must_advance_in_time() -> None:
    """A query whose nearest target lies before the last accepted one stays unmatched (order as given)."""
    queries = _items((3.0, "late"), (1.0, "early"))
    targets = _items((1.0, "a"), (3.0, "b"))
    assert align(queries, targets, 3.0) == [(0, 1)]


def test_empty_prediction_text_never_matches() -> None:
    """The recall pass rejects a nearest prediction with empty text."""
    assert align(_items((2.0, "a")), _items((2.1, "")), 3.0) == []


def test_empty_ground_truth_text_never_matches_in_the_precision_pass() -> None:
    """With the roles swapped the empty-text rule applies to the ground truth."""
    counts = score({"e": _items((2.0, ""))}, {"e": _items((2.1, "go"))}, 3.0)
    assert (counts.matched_gt, counts.matched_pred) == (1, 0)


def test_tie_goes_to_the_first_index_without_fall_back() -> None:
    """Equidistant targets: the first wins even when its text is empty (then nothing matches)."""
    assert align(_items((2.0, "a")), _items((1.5, "x"), (2.5, "y")), 3.0) == [(0, 0)]
    assert align(_items((2.0, "a")), _items((1.5, ""), (2.5, "y")), 3.0) == []


def test_tolerance_bound_is_strict() -> None:
    """``|dt|`` must be below half the tolerance: exactly 1.5 s at the default 3 s does not match."""
    assert align(_items((1.0, "a")), _items((2.5, "x")), 3.0) == []
    assert align(_items((1.0, "a")), _items((2.25, "x")), 3.0) == [(0, 0)]
    assert align(_items((1.0, "a")), _items((2.5, "x")), 3.2) == [(0, 0)]


def test_hand_computed_multi_episode_example() -> None:
    """Micro-averaged totals of three episodes, worked out by hand in docs/timing.md.

    A: recall matches 2.0-2.5 and 6.0-5.8 (10.0's nearest, 14.0, is 4 s away); precision matches 2.5-2.0 and
    5.0-6.0, 5.8's nearest (6.0) is used, 14.0 is too far. B has no predictions. C: 1.0's nearest prediction has
    empty text; both predictions match in the precision pass. P = 4/6, R = 3/6, F = 4/7.
    """
    gt = {
        "A": _items((2.0, "knees out"), (6.0, "back straight"), (10.0, "slow down")),
        "B": _items((3.0, "knees out")),
        "C": _items((1.0, "a"), (4.0, "b")),
    }
    pred = {
        "A": _items((2.5, "knees out"), (5.0, "back straight"), (5.8, "chest up"), (14.0, "x")),
        "C": _items((1.2, ""), (3.9, "b")),
    }
    counts = score(gt, pred, 3.0)
    assert (counts.matched_gt, counts.n_gt, counts.matched_pred, counts.n_pred) == (3, 6, 4, 6)
    assert counts.precision == pytest.approx(4 / 6)
    assert counts.recall == pytest.approx(3 / 6)
    assert counts.f == pytest.approx(4 / 7)
    assert counts.mean_abs_dt == pytest.approx((0.5 + 0.2 + 0.1) / 3)


def test_predictions_for_an_unknown_episode_are_an_error() -> None:
    """A prediction episode absent from the ground truth would silently vanish from precision."""
    with pytest.raises(ValueError, match=r"not in the ground truth: \['Z'\]"):
        score({"A": _items((1.0, "a"))}, {"Z": _items((1.0, "a"))})
