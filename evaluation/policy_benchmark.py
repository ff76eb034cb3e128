"""``python -m evaluation.policy_benchmark``: the model policy against every_n, random and motion on held-out episodes.

Usage::

    python -m evaluation.policy_benchmark --engines engines/tiny-coach --benchmark artifacts/timing_bench \\
        --config evaluation/timing_bench.yaml --out artifacts/timing_bench/results

1. **Tuning on the training split.** The model policy's ``decision.confidence_threshold`` is chosen from a sweep: one
   runtime pass (:mod:`evaluation.stream`) with threshold 0 and no minimum interval records every window's raw
   decision, confidence and text, then the runtime's own :class:`~runtime.policies.FeedbackGate` replays each
   threshold with the configured interval. This is exact when each decision sees only its own window
   (``context.max_windows: 1``, which the benchmark configuration sets; checked): the decoder's logits then do not
   depend on earlier decisions. The rule-based policies' parameters (``every_n.n``, ``random.p``,
   ``motion.threshold``) are chosen the same way by replaying the runtime's :class:`~runtime.stages.DecisionStage`
   over the same windows: their decisions never depend on the model (a placeholder text stands for the generated
   one while tuning).
2. **Held-out runs.** Each policy with its chosen parameter runs through :mod:`evaluation.stream` (the runtime's
   ``StreamSession`` on the exported engines); the model policy first, with fresh encoders, the baselines after it
   with the visual encoders' outputs memoised (bit-identical, so their delivery-time lag is optimistic).
3. **Scoring.** :func:`evaluation.timing.evaluate` on every run: F / P / R / mean |dt| at decision and delivery time,
   plus the evaluator's metronome baselines; written to ``OUT/results.json`` and ``OUT/results.md``.

Exit codes: 0 done (whoever wins), 2 bad arguments, configuration, backend or benchmark, 3 unreadable video.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine_format.vocab import FEEDBACK
from evaluation.annotations import AnnotationError, Episode, Predictions, load_ground_truth, load_predictions
from evaluation.baselines import BASELINE_TEXT
from evaluation.episodes import EpisodeWindows, episode_windows
from evaluation.matching import DEFAULT_TOLERANCE_S, TimedText, score
from evaluation.stream import MemoBackend, stream_split
from evaluation.timing import evaluate
from runtime.backends import BackendError, backend_from_config
from runtime.config import ConfigError, StreamingConfig, apply_overrides, load_config
from runtime.policies import ActionDecision, FeedbackGate, MotionChangePolicy, WindowFeatures, build_policy
from runtime.sources import SourceError
from runtime.stages import DecisionStage, WindowWork

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_USAGE, EXIT_SOURCE = 0, 2, 3
THRESHOLDS = (0.34, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
EVERY_N = (2, 3, 4, 5, 6, 8)
RANDOM_P = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
RANDOM_SEEDS = 5


def _f(gt: Mapping[str, Episode], pred: Mapping[str, list[TimedText]], tolerance_s: float) -> dict[str, Any]:
    return score({k: e.items for k, e in gt.items()}, pred, tolerance_s).as_dict()


def replay_model_gate(cfg: StreamingConfig, logs: Mapping[str, Path], threshold: float) -> dict[str, list[TimedText]]:
    """The runtime's gate at ``threshold`` (and ``cfg``'s interval) over a threshold-0 pass's raw decisions.

    The pass must have run with ``decision.confidence_threshold: 0`` and ``decision.min_feedback_interval_s: 0`` so
    that every raw ``<feedback>`` generated its text.
    """
    pred: dict[str, list[TimedText]] = {}
    for episode, path in logs.items():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        texts = {r["window_index"]: r["text"] for r in rows if r["type"] == "feedback_finished"}
        gate = FeedbackGate(threshold, cfg.decision.min_feedback_interval_s, cfg.decision.allow_correct)
        items = []
        for w in (r for r in rows if r["type"] == "window_decided"):
            if gate.apply(ActionDecision(w["raw_action"], w["confidence"]), w["t_end"]).action == FEEDBACK:
                items.append(TimedText(w["t_end"], texts[w["window_index"]]))
        pred[episode] = items
    return pred


def sweep_model_threshold(
    cfg: StreamingConfig, logs: Mapping[str, Path], gt: Mapping[str, Episode], tolerance_s: float,
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[dict[str, Any]]:
    """F at each threshold by :func:`replay_model_gate` (module docstring, step 1)."""
    return [{"threshold": t, **_f(gt, replay_model_gate(cfg, logs, t), tolerance_s)} for t in thresholds]


def replay_rule_policy(cfg: StreamingConfig, episodes: Sequence[EpisodeWindows]) -> dict[str, list[TimedText]]:
    """The runtime's DecisionStage (policy + gate) of a rule-based policy over the episodes' windows."""
    pred = {}
    for ep in episodes:
        stage = DecisionStage(build_policy(cfg.policy), FeedbackGate.from_config(cfg.decision))
        items = []
        for window, frames in zip(ep.windows, ep.frames):
            work = WindowWork(window, list(frames))
            stage.process(work)
            assert work.decision is not None
            if work.decision.action == FEEDBACK:
                items.append(TimedText(window.t_end, BASELINE_TEXT))
        pred[ep.episode] = items
    return pred


def motion_scores(cfg: StreamingConfig, episodes: Sequence[EpisodeWindows]) -> np.ndarray:
    """The motion policy's score of every window (its threshold grid is cut from their quantiles)."""
    policy = MotionChangePolicy(1.0, cfg.policy.motion.mode)
    from runtime.policies import PolicyContext

    return np.asarray([policy.score(WindowFeatures(w, [f.image for f in fr]), PolicyContext())
                       for ep in episodes for w, fr in zip(ep.windows, ep.frames)])


def tune_rule_policies(
    cfg: StreamingConfig, episodes: Sequence[EpisodeWindows], gt: Mapping[str, Episode], tolerance_s: float
) -> dict[str, list[dict[str, Any]]]:
    """Sweeps of ``every_n.n``, ``random.p`` (mean over seeds) and ``motion.threshold`` on the given episodes."""
    rows: dict[str, list[dict[str, Any]]] = {"every_n": [], "random": [], "motion": []}
    for n in EVERY_N:
        c = apply_overrides(cfg, {"policy.name": "every_n", "policy.every_n.n": n})
        rows["every_n"].append({"n": n, **_f(gt, replay_rule_policy(c, episodes), tolerance_s)})
    for p in RANDOM_P:
        runs = []
        for seed in range(RANDOM_SEEDS):
            c = apply_overrides(cfg, {"policy.name": "random", "policy.random.p": p, "policy.random.seed": seed})
            runs.append(_f(gt, replay_rule_policy(c, episodes), tolerance_s))
        rows["random"].append({"p": p, **{k: float(np.mean([r[k] for r in runs])) for k in ("f", "precision", "recall")}})
    scores = motion_scores(cfg, episodes)
    upper = 255.0 if cfg.policy.motion.mode == "frame_diff" else 2.0
    for q in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        threshold = float(np.clip(np.quantile(scores, q), 1e-3, upper))
        c = apply_overrides(cfg, {"policy.name": "motion", "policy.motion.threshold": threshold})
        rows["motion"].append({"threshold": threshold, "quantile": q,
                               **_f(gt, replay_rule_policy(c, episodes), tolerance_s)})
    return rows


def _best(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    return max(rows, key=lambda r: r["f"])  # the first (lowest parameter) of equal F


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Steps 1-3 of the module docstring; returns the results."""
    started = time.perf_counter()
    base = apply_overrides(load_config(args.config), {"backend.engines_dir": str(args.engines)})
    if base.context.max_windows != 1:
        raise ConfigError(f"context.max_windows = {base.context.max_windows}: the threshold replay is exact only with 1")
    videos = args.benchmark / "videos"
    gt_train = load_ground_truth(args.benchmark / "train.jsonl")
    gt_held = load_ground_truth(args.benchmark / "heldout.jsonl")
    backend = MemoBackend(backend_from_config(base.backend))
    tokenizer = backend.load_tokenizer()
    out = args.out

    sweep_cfg = apply_overrides(base, {"policy.name": "model", "decision.confidence_threshold": 0.0,
                                       "decision.min_feedback_interval_s": 0.0, "decision.suppress_repeats": False})
    stream_split(sweep_cfg, backend, tokenizer, sorted(gt_train), videos, out / "train_sweep")
    thresholds = sweep_model_threshold(base, {e: out / "train_sweep" / f"{e}.jsonl" for e in gt_train}, gt_train,
                                       args.tolerance)
    train_windows = [episode_windows(e, videos / f"{e}.mp4", base) for e in sorted(gt_train)]
    rule_rows = tune_rule_policies(base, train_windows, gt_train, args.tolerance)
    chosen = {
        "model": {"policy.name": "model", "decision.confidence_threshold": _best(thresholds)["threshold"]},
        "every_n": {"policy.name": "every_n", "policy.every_n.n": _best(rule_rows["every_n"])["n"]},
        "random": {"policy.name": "random", "policy.random.p": _best(rule_rows["random"])["p"], "policy.random.seed": 0},
        "motion": {"policy.name": "motion", "policy.motion.threshold": _best(rule_rows["motion"])["threshold"]},
    }
    logger.info("chosen on the training split: %s", chosen)

    reports: dict[str, Any] = {}
    recall_by_text: dict[str, dict[str, list[int]]] = {}
    for name, overrides in chosen.items():
        backend.memoize = name != "model"
        run_dir = out / "heldout" / name
        stream_split(apply_overrides(base, overrides), backend, tokenizer, sorted(gt_held), videos, run_dir)
        pred: Mapping[str, Predictions] = load_predictions([run_dir / f"{e}.jsonl" for e in sorted(gt_held)])
        reports[name] = evaluate(gt_held, pred, args.tolerance, window_s=base.window.window_s,
                                 stride_s=base.window.window_s - base.window.overlap_s)
        recall_by_text[name] = _recall_by_text(gt_held, pred, args.tolerance)
    results = {
        "benchmark": str(args.benchmark), "engines": str(args.engines), "config": base.to_dict(),
        "tolerance_s": args.tolerance, "random_weights": bool(backend.random_weights),
        "tuning": {"model_threshold": thresholds, **rule_rows}, "chosen": chosen,
        "heldout": {name: {k: r[k] for k in ("f", "precision", "recall", "mean_abs_dt", "n_gt", "n_pred",
                                             "matched_gt", "matched_pred", "cues_per_min", "text")}
                    | {"delivery_f": r["delivery"]["f"], "delivery_mean_abs_dt": r["delivery"]["mean_abs_dt"]}
                    | {"recall_by_text": recall_by_text[name]}
                    for name, r in reports.items()},
        "evaluator_baselines": reports["model"]["baselines"],
        "seconds": round(time.perf_counter() - started, 1),
        "command": " ".join(["python -m evaluation.policy_benchmark", *map(shlex.quote, sys.argv[1:])]),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(render(results) + "\n")
    return results


def _recall_by_text(gt: Mapping[str, Episode], pred: Mapping[str, Predictions], tolerance_s: float
                    ) -> dict[str, list[int]]:
    """``{correction text: [matched, total]}`` at decision time: which kinds of fault a policy catches.

    Each text's ground truth is matched alone against all predictions (the recall pass of :func:`score`), so a
    prediction near two faults of different kinds counts for both: a per-kind view, not a partition of the recall.
    """
    texts = sorted({item.text for ep in gt.values() for item in ep.items})
    out: dict[str, list[int]] = {}
    for text in texts:
        gt_text = {e: [x for x in ep.items if x.text == text] for e, ep in gt.items()}
        counts = score(gt_text, {e: p.decision for e, p in pred.items()}, tolerance_s)
        out[text] = [counts.matched_gt, counts.n_gt]
    return out


def render(results: Mapping[str, Any]) -> str:
    """The held-out table (markdown)."""
    held = results["heldout"]
    lines = [
        f"Held-out episodes of {results['benchmark']}, engines {results['engines']}"
        f"{' (random-weight base model, action tokens fine-tuned)' if results['random_weights'] else ''}; "
        f"tolerance {results['tolerance_s']:g} s; parameters chosen on the training split.",
        "",
        "| policy | parameter | F | precision | recall | mean abs dt (s) | cues | F at delivery |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in held.items():
        param = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                          for k, v in results["chosen"][name].items() if k != "policy.name")
        dt = "-" if row["mean_abs_dt"] is None else f"{row['mean_abs_dt']:.2f}"
        lines.append(f"| {name} | {param} | {row['f']:.3f} | {row['precision']:.3f} | {row['recall']:.3f} | {dt} | "
                     f"{row['n_pred']} / {row['n_gt']} gt | {row['delivery_f']:.3f} |")
    best_metronome = max((b for b in results["evaluator_baselines"] if "mean over phases" in b["baseline"]),
                         key=lambda b: b["f"])
    lines.append(f"| {best_metronome['baseline']} (evaluator) | - | {best_metronome['f']:.3f} | "
                 f"{best_metronome['precision']:.3f} | {best_metronome['recall']:.3f} | - | - | - |")
    texts = sorted({t for row in held.values() for t in row.get("recall_by_text", {})})
    if texts:
        lines += ["", "Recall by correction (matched / ground truth, decision time):", "",
                  "| policy | " + " | ".join(texts) + " |", "|---|" + "---|" * len(texts)]
        lines += [f"| {name} | " + " | ".join("{} / {}".format(*row["recall_by_text"].get(t, (0, 0))) for t in texts)
                  + " |" for name, row in held.items()]
    others = {k: v["f"] for k, v in held.items() if k != "model"}
    margin = held["model"]["f"] - max(others.values())
    verdict = "beats" if margin > 0 else "does not beat"
    lines += ["", f"model {verdict} every runtime baseline in held-out F (margin {margin:+.3f} over the best, "
                  f"{max(others, key=others.get)}). Text on matched pairs: ROUGE-L {_rouge(held['model'])}.",
              "", f"Reproduce: `{results['command']}` ({results['seconds']:.0f} s)."]
    return "\n".join(lines)


def _rouge(row: Mapping[str, Any]) -> str:
    value = row["text"]["rouge_l"]
    return "-" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m evaluation.policy_benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=Path, required=True, help="exported engines of the fine-tuned model")
    parser.add_argument("--benchmark", type=Path, required=True, help="directory from evaluation.synthetic_benchmark")
    parser.add_argument("--config", type=Path, default=None, help="streaming config YAML (the training one)")
    parser.add_argument("--out", type=Path, required=True, help="results directory")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        results = run(args)
    except (ConfigError, BackendError, AnnotationError, ValueError) as exc:
        print(f"policy_benchmark: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SourceError as exc:
        print(f"policy_benchmark: {exc}", file=sys.stderr)
        return EXIT_SOURCE
    print(render(results))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
