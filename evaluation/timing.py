"""``python -m evaluation.timing``: when did the coach speak, compared with when it should have.

Usage::

    python -m evaluation.timing --gt GT.jsonl --pred runs/*.jsonl [--tolerance 3.0] [--json]

Reads ground truth (simple JSONL or QEVD annotations) and predictions (runtime events JSONL, one run per file, or
simple JSONL); see :mod:`evaluation.annotations`. Reports the QEVD temporal precision / recall / F
(:mod:`evaluation.matching`) at decision time, at delivery time and (with speech events) at audio start; a tolerance
sweep; the metronome / random / every-n-th-window baselines on the same episodes; ROUGE-L on the matched pairs.
``--json`` prints one object whose top-level ``precision``, ``recall``, ``f``, ``matched_gt``, ``matched_pred``,
``n_gt``, ``n_pred`` are the decision-time numbers at ``--tolerance``.

Exit codes: 0 done, 2 bad arguments or input files.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from evaluation.annotations import (
    QEVD_OFFSET_S,
    QEVD_SEGMENTS,
    AnnotationError,
    Episode,
    Predictions,
    load_ground_truth,
    load_predictions,
    parse_episode_map,
)
from evaluation.baselines import baseline_table, window_grid
from evaluation.matching import DEFAULT_TOLERANCE_S, TimedText, score, sweep
from evaluation.text_metrics import text_scores

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_USAGE = 0, 2


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers > 0")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="python -m evaluation.timing", description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="ground truth: simple JSONL or QEVD annotations JSON")
    parser.add_argument("--pred", required=True, nargs="+", help="prediction files (runtime events or simple JSONL)")
    parser.add_argument("--episode", action="append", default=[], metavar="FILE=ID",
                        help="episode id of a runtime events file (default: the file's stem); repeatable")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE_S,
                        help="total tolerance in seconds: a match needs |dt| < tolerance/2 (default 3.0)")
    parser.add_argument("--sweep", type=_floats, default=[1.0, 2.0, 3.0, 4.0], help="tolerances for the sweep")
    parser.add_argument("--periods", type=_floats, default=[3.0, 4.0, 5.0, 6.0], help="metronome periods (s)")
    parser.add_argument("--seeds", type=int, default=20, help="seeds of the random baseline")
    parser.add_argument("--window-s", type=float, default=2.0, help="window length for the every-n-th-window grid")
    parser.add_argument("--stride-s", type=float, default=1.5, help="window stride for that grid")
    parser.add_argument("--qevd-segments", choices=QEVD_SEGMENTS, default="official", help="QEVD episode split")
    parser.add_argument("--qevd-offset", type=float, default=QEVD_OFFSET_S,
                        help="seconds added to QEVD frame timestamps (0 for the competition split)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    return parser


def durations_of(gt: Mapping[str, Episode], pred: Mapping[str, Predictions], tolerance_s: float) -> dict[str, float]:
    """Episode lengths for the baselines: the ground truth's, else the run's last window end, else the last item.

    The fall-back (last ground-truth or predicted time plus half the tolerance) is logged per episode.
    """
    out: dict[str, float] = {}
    for key, ep in gt.items():
        if ep.duration_s is not None:
            out[key] = ep.duration_s
            continue
        run = pred.get(key)
        if run is not None and run.window_ends:
            out[key] = max(run.window_ends)
            continue
        last = max([x.t for x in ep.items] + [x.t for x in (run.decision if run else [])] + [0.0])
        out[key] = last + tolerance_s / 2
        logger.info("episode %s: no duration known; baselines cover [0, %.2f] s", key, out[key])
    return out


def evaluate(
    gt: Mapping[str, Episode],
    pred: Mapping[str, Predictions],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    sweep_s: Sequence[float] = (1.0, 2.0, 3.0, 4.0),
    periods_s: Sequence[float] = (3.0, 4.0, 5.0, 6.0),
    seeds: int = 20,
    window_s: float = 2.0,
    stride_s: float = 1.5,
) -> dict[str, Any]:
    """The full report as a JSON-ready dict (see the module docstring).

    Raises:
        AnnotationError: For predictions of episodes absent from the ground truth.
    """
    unknown = sorted(set(pred) - set(gt))
    if unknown:
        raise AnnotationError(f"predictions for episode(s) not in the ground truth: {unknown}")
    items = {k: ep.items for k, ep in gt.items()}
    report: dict[str, Any] = {}
    has_audio = bool(pred) and all(p.audio is not None for p in pred.values())
    kinds = ("decision", "delivery", "audio") if has_audio else ("decision", "delivery")
    pairs: list[tuple[str, TimedText, TimedText]] = []
    for kind in kinds:
        by_kind = {k: p.at(kind) for k, p in pred.items()}
        counts = score(items, by_kind, tolerance_s, pairs if kind == "decision" else None)
        report[kind] = {"tolerance_s": tolerance_s, **counts.as_dict(), "sweep": sweep(items, by_kind, sweep_s)}
    report.update({k: report["decision"][k] for k in ("precision", "recall", "f", "matched_gt", "matched_pred",
                                                      "n_gt", "n_pred", "mean_abs_dt")})
    report["audio"] = report.get("audio")
    durations = durations_of(gt, pred, tolerance_s)
    total_s = sum(durations.values())
    n_pred = report["decision"]["n_pred"]
    rate = n_pred / total_s if total_s > 0 else 0.0
    report["episodes"] = len(gt)
    report["duration_s"] = total_s
    report["cues_per_min"] = 60.0 * rate
    report["gt_per_min"] = 60.0 * report["decision"]["n_gt"] / total_s if total_s > 0 else 0.0
    report["suppressed_repeats"] = sum(p.suppressed for p in pred.values())
    grids = {
        k: (pred[k].window_ends if k in pred and pred[k].window_ends else window_grid(durations[k], window_s, stride_s))
        for k in gt
    }
    gt_rate = report["decision"]["n_gt"] / total_s if total_s > 0 else 0.0
    report["baselines"] = baseline_table(gt, durations, grids, rate if rate > 0 else gt_rate, tolerance_s,
                                         periods_s, seeds=seeds)
    report["text"] = text_scores([(g.text, p.text) for _, g, p in pairs])
    return report


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render(report: Mapping[str, Any]) -> str:
    """The human-readable report."""
    lines = [
        f"{report['episodes']} episodes, {report['duration_s']:.0f} s; ground truth {report['gt_per_min']:.1f}/min, "
        f"predictions {report['cues_per_min']:.1f}/min ({report['suppressed_repeats']} suppressed repeats not counted)",
        "",
        f"{'timestamp':<12}{'F':>7}{'P':>7}{'R':>7}{'matched gt':>12}{'matched pred':>14}{'mean |dt|':>11}",
    ]
    for kind in ("decision", "delivery", "audio"):
        row = report.get(kind)
        if row is None:
            continue
        lines.append(
            f"{kind:<12}{row['f']:>7.3f}{row['precision']:>7.3f}{row['recall']:>7.3f}"
            f"{row['matched_gt']:>6}/{row['n_gt']:<5}{row['matched_pred']:>7}/{row['n_pred']:<6}"
            f"{_fmt(row['mean_abs_dt'], 2):>10}"
        )
    lines += ["", "tolerance sweep (decision time): " + ", ".join(
        f"{r['tolerance_s']:g} s F={r['f']:.3f}" for r in report["decision"]["sweep"])]
    lines += ["", f"{'baseline (same episodes)':<44}{'F':>7}{'P':>7}{'R':>7}{'mean |dt|':>11}"]
    for row in report["baselines"]:
        lines.append(f"{row['baseline']:<44}{row['f']:>7.3f}{row['precision']:>7.3f}{row['recall']:>7.3f}"
                     f"{_fmt(row['mean_abs_dt'], 2):>11}")
    text = report["text"]
    lines += ["", f"text on {text['pairs']} matched pairs: ROUGE-L {_fmt(text['rouge_l'])}, "
                  f"exact match {_fmt(text['exact_match'])}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.tolerance > 0 or args.seeds < 1 or not 0 < args.stride_s <= args.window_s:
        print("timing: --tolerance must be > 0, --seeds >= 1 and 0 < --stride-s <= --window-s", file=sys.stderr)
        return EXIT_USAGE
    try:
        gt = load_ground_truth(args.gt, args.qevd_segments, args.qevd_offset)
        pred = load_predictions(args.pred, parse_episode_map(args.episode))
        report = evaluate(gt, pred, args.tolerance, args.sweep, args.periods, args.seeds, args.window_s, args.stride_s)
    except AnnotationError as exc:
        print(f"timing: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(report) if args.json else render(report))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
