"""Cue baselines on the same episodes: a metronome, random cues at a matched rate, every n-th window.

A policy only counts as timing-aware if it beats these (QEVD's every-5-s prompted baselines score T-F 0.50-0.555).
Every baseline cue carries the non-empty text :data:`BASELINE_TEXT`, so the empty-text rule never removes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from evaluation.annotations import Episode
from evaluation.matching import Counts, TimedText, score

BASELINE_TEXT = "(baseline cue)"


def metronome(duration_s: float, period_s: float, phase_s: float) -> list[TimedText]:
    """Cues at ``phase_s + k * period_s`` for ``k >= 0`` up to ``duration_s`` (inclusive)."""
    if not period_s > 0:
        raise ValueError(f"period_s = {period_s}: must be > 0")
    times = np.arange(phase_s, duration_s + 1e-9, period_s)
    return [TimedText(float(t), BASELINE_TEXT) for t in times]


def random_cues(duration_s: float, rate_per_s: float, rng: np.random.Generator) -> list[TimedText]:
    """A Poisson number of cues (mean ``rate * duration``) at uniform times in ``[0, duration_s]``, sorted."""
    n = int(rng.poisson(rate_per_s * duration_s))
    return [TimedText(float(t), BASELINE_TEXT) for t in np.sort(rng.uniform(0.0, duration_s, n))]


def window_grid(duration_s: float, window_s: float, stride_s: float) -> list[float]:
    """End times of the runtime's windows over ``[0, duration_s]`` (window k ends at ``window_s + k * stride_s``)."""
    return [float(t) for t in np.arange(window_s, duration_s + 1e-9, stride_s)]


def every_nth_window(window_ends: Sequence[float], n: int) -> list[TimedText]:
    """A cue at the n-th, 2n-th, ... window end (``runtime.policies.EveryNthPolicy`` without the gate)."""
    if n < 1:
        raise ValueError(f"n = {n}: must be >= 1")
    return [TimedText(float(t), BASELINE_TEXT) for k, t in enumerate(window_ends, start=1) if k % n == 0]


def _row(name: str, counts: Counts, **extra: object) -> dict[str, object]:
    return {"baseline": name, **extra, **counts.as_dict()}


def _mean_row(name: str, runs: Sequence[Counts], **extra: object) -> dict[str, object]:
    keys = ("precision", "recall", "f", "matched_gt", "matched_pred", "n_gt", "n_pred")
    row: dict[str, object] = {"baseline": name, **extra}
    for key in keys:
        row[key] = float(np.mean([c.as_dict()[key] for c in runs]))  # type: ignore[arg-type]
    dts = [c.mean_abs_dt for c in runs if c.mean_abs_dt is not None]
    row["mean_abs_dt"] = float(np.mean(dts)) if dts else None
    row["runs"] = len(runs)
    return row


def baseline_table(
    gt: Mapping[str, Episode],
    durations: Mapping[str, float],
    window_ends: Mapping[str, Sequence[float]],
    cue_rate_per_s: float,
    tolerance_s: float,
    periods_s: Sequence[float] = (3.0, 4.0, 5.0, 6.0),
    phase_step_s: float = 0.5,
    seeds: int = 20,
) -> list[dict[str, object]]:
    """Every baseline's scores on the ground truth's episodes.

    Rows: per metronome period the mean over phases (``0, phase_step, ... < period``) and the best phase (an
    optimistic, test-tuned number); random cues at ``cue_rate_per_s`` averaged over ``seeds`` seeds; every n-th
    window with ``n`` chosen so the cue rate matches ``cue_rate_per_s``.

    Args:
        gt: The ground truth.
        durations: Episode id -> length in seconds.
        window_ends: Episode id -> the windows' end times (a run's own, or :func:`window_grid`).
        cue_rate_per_s: The rate to match (the evaluated predictions' cues per second).
        tolerance_s: Total tolerance.
        periods_s: Metronome periods.
        phase_step_s: Phase grid step.
        seeds: Random-baseline seeds.

    Returns:
        Rows with ``baseline`` plus :meth:`Counts.as_dict` keys.
    """
    items = {k: ep.items for k, ep in gt.items()}
    rows: list[dict[str, object]] = []
    for period in periods_s:
        runs = []
        for phase in np.arange(0.0, period - 1e-9, phase_step_s):
            pred = {k: metronome(durations[k], period, float(phase)) for k in gt}
            runs.append(score(items, pred, tolerance_s))
        rows.append(_mean_row(f"metronome {period:g} s (mean over phases)", runs, period_s=period))
        best = max(runs, key=lambda c: c.f)
        rows.append(_row(f"metronome {period:g} s (best phase)", best, period_s=period))
    if cue_rate_per_s > 0:
        runs = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            pred = {k: random_cues(durations[k], cue_rate_per_s, rng) for k in gt}
            runs.append(score(items, pred, tolerance_s))
        rows.append(_mean_row(f"random {cue_rate_per_s * 60:.1f}/min (mean of {seeds} seeds)", runs))
        n_windows = sum(len(window_ends[k]) for k in gt)
        total_s = sum(durations[k] for k in gt)
        n = max(1, round(n_windows / max(cue_rate_per_s * total_s, 1e-9)))
        pred = {k: every_nth_window(window_ends[k], n) for k in gt}
        rows.append(_row(f"every n-th window (n={n})", score(items, pred, tolerance_s), n=n))
    return rows
