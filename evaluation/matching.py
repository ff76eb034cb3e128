"""The QEVD / FitCoach temporal matcher (T-F), reproduced rule by rule.

For each ground-truth item, in time order (``align(gt, pred)``):

1. ``j`` = the prediction nearest in time (``argmin`` of the squared difference; on a tie the first index wins);
2. the pair is accepted iff ``|dt| < tolerance / 2`` (strict), ``j`` is later than the last accepted prediction
   (matches advance in time), ``j`` was not used before, and the prediction's text is not empty;
3. otherwise the item stays unmatched: there is no fall-back to the second-nearest prediction.

Recall counts come from ``align(gt, pred)``; precision counts from the same routine with the roles swapped
(``align(pred, gt)``, where the empty-text rule applies to the ground-truth texts), so the two counts can differ.
``matched_gt``, ``matched_pred``, ``n_gt`` and ``n_pred`` are summed over all episodes (micro-average) before
precision, recall and F are computed with ``eps = 1e-12``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

EPS = 1e-12
"""Added to every denominator, as in the official evaluator."""

DEFAULT_TOLERANCE_S = 3.0
"""The official tolerance: a match needs ``|dt| < 1.5 s``."""


@dataclass(frozen=True)
class TimedText:
    """One feedback at a time (seconds, in the episode's clock).

    Attributes:
        t: Time in seconds.
        text: The feedback text ('' never matches).
    """

    t: float
    text: str


def align(queries: Sequence[TimedText], targets: Sequence[TimedText], tolerance_s: float) -> list[tuple[int, int]]:
    """Matches every query to its nearest target under the official rules (module docstring).

    Both sequences are taken in the order given (the loaders sort each episode by time). The empty-text rule is
    checked on the *target* texts.

    Args:
        queries: Items that look for a partner (ground truth for recall, predictions for precision).
        targets: Items that can be taken, each at most once.
        tolerance_s: Total window; a pair needs ``|dt| < tolerance_s / 2``.

    Returns:
        Accepted ``(query index, target index)`` pairs, in query order.

    Raises:
        ValueError: If ``tolerance_s`` is not > 0.
    """
    if not tolerance_s > 0:
        raise ValueError(f"tolerance_s = {tolerance_s}: must be > 0")
    if not targets:
        return []
    target_t = np.asarray([x.t for x in targets], dtype=np.float64)
    half = tolerance_s / 2.0
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    last = -1
    for i, query in enumerate(queries):
        j = int(np.argmin((target_t - query.t) ** 2))  # first index on ties, as numpy's argmin
        if abs(query.t - target_t[j]) < half and j > last and j not in used and targets[j].text != "":
            pairs.append((i, j))
            used.add(j)
            last = j
    return pairs


@dataclass
class Counts:
    """Running totals over episodes (micro-average).

    Attributes:
        matched_gt: Ground-truth items matched (recall pass).
        matched_pred: Predictions matched (precision pass).
        n_gt: Ground-truth items.
        n_pred: Predictions.
        abs_dt: ``|pred.t - gt.t|`` of every recall-pass pair.
        signed_dt: ``pred.t - gt.t`` of every recall-pass pair (positive = late).
    """

    matched_gt: int = 0
    matched_pred: int = 0
    n_gt: int = 0
    n_pred: int = 0
    abs_dt: list[float] = field(default_factory=list)
    signed_dt: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float:
        """``matched_pred / (n_pred + eps)``."""
        return self.matched_pred / (self.n_pred + EPS)

    @property
    def recall(self) -> float:
        """``matched_gt / (n_gt + eps)``."""
        return self.matched_gt / (self.n_gt + EPS)

    @property
    def f(self) -> float:
        """``2 P R / (P + R + eps)``."""
        p, r = self.precision, self.recall
        return 2.0 * p * r / (p + r + EPS)

    @property
    def mean_abs_dt(self) -> float | None:
        """Mean ``|dt|`` of the matched pairs (``None`` without pairs)."""
        return float(np.mean(self.abs_dt)) if self.abs_dt else None

    def as_dict(self) -> dict[str, float | int | None]:
        """The headline numbers (the ``--json`` keys)."""
        mean_signed = float(np.mean(self.signed_dt)) if self.signed_dt else None
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f": self.f,
            "matched_gt": self.matched_gt,
            "matched_pred": self.matched_pred,
            "n_gt": self.n_gt,
            "n_pred": self.n_pred,
            "mean_abs_dt": self.mean_abs_dt,
            "mean_signed_dt": mean_signed,
        }


@dataclass(frozen=True)
class EpisodeMatch:
    """The two passes of one episode.

    Attributes:
        recall_pairs: ``(gt index, pred index)`` from ``align(gt, pred)``.
        precision_pairs: ``(pred index, gt index)`` from ``align(pred, gt)``.
    """

    recall_pairs: list[tuple[int, int]]
    precision_pairs: list[tuple[int, int]]


def match_episode(gt: Sequence[TimedText], pred: Sequence[TimedText], tolerance_s: float) -> EpisodeMatch:
    """Runs both passes on one episode."""
    return EpisodeMatch(align(gt, pred, tolerance_s), align(pred, gt, tolerance_s))


def score(
    gt: Mapping[str, Sequence[TimedText]],
    pred: Mapping[str, Sequence[TimedText]],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    pairs_out: list[tuple[str, TimedText, TimedText]] | None = None,
) -> Counts:
    """Micro-averaged temporal precision / recall / F over the ground truth's episodes.

    An episode of ``gt`` missing from ``pred`` has no predictions. Predictions for an episode that is not in ``gt``
    are an error (they would otherwise vanish from the precision count).

    Args:
        gt: Episode id -> ground-truth items, sorted by time.
        pred: Episode id -> predicted items, sorted by time.
        tolerance_s: Total tolerance window in seconds.
        pairs_out: If given, receives ``(episode, gt item, pred item)`` for every recall-pass pair (text metrics).

    Returns:
        The totals.

    Raises:
        ValueError: For prediction episodes absent from the ground truth.
    """
    unknown = sorted(set(pred) - set(gt))
    if unknown:
        raise ValueError(f"predictions for episode(s) not in the ground truth: {unknown}")
    counts = Counts()
    for episode, gt_items in gt.items():
        pred_items = pred.get(episode, [])
        m = match_episode(gt_items, pred_items, tolerance_s)
        counts.n_gt += len(gt_items)
        counts.n_pred += len(pred_items)
        counts.matched_gt += len(m.recall_pairs)
        counts.matched_pred += len(m.precision_pairs)
        for i, j in m.recall_pairs:
            dt = pred_items[j].t - gt_items[i].t
            counts.abs_dt.append(abs(dt))
            counts.signed_dt.append(dt)
            if pairs_out is not None:
                pairs_out.append((episode, gt_items[i], pred_items[j]))
    return counts


def sweep(
    gt: Mapping[str, Sequence[TimedText]],
    pred: Mapping[str, Sequence[TimedText]],
    tolerances_s: Iterable[float] = (1.0, 2.0, 3.0, 4.0),
) -> list[dict[str, float | int | None]]:
    """:func:`score` at each total tolerance (rows with a ``tolerance_s`` key)."""
    return [{"tolerance_s": float(t), **score(gt, pred, t).as_dict()} for t in tolerances_s]
