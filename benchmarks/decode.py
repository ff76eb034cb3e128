"""Greedy-generation step vs isolated decode step, per backend, at the same context length, in the same run.

Usage::

    python -m benchmarks.decode --preset tiny --variants pytorch:fp32,onnxruntime:fp32 --out DIR
    python -m benchmarks.decode --preset 0.5b --variants pytorch:fp32 --rounds 3 --new-tokens 8 --out DIR

The question: does generating a token in the runtime's feedback loop cost what one decoder call costs, or does the
loop add work per token (re-decoding text, copying the cache, bookkeeping)? Goal on the CPU: greedy / isolated
<= 1.15. Per variant, one process builds a :class:`runtime.session.StreamSession` (the streaming prompt from
``streaming_prompt_ids(tokenizer.encode, instruction)``, the system prefix prefilled) and measures, round by round:

* **isolated decode step**: one ``backend.decode([[token]], kv)`` timed alone, on a second cache of the backend that
  holds the system prompt, one window and the ``<feedback>`` token, i.e. exactly the context the first generated
  token is decoded on; cut back to that length (untimed) after each call;
* **greedy-generation step**: ``runtime.stages.FeedbackStage.process`` runs the real feedback loop
  (``greedy_decode`` over ``DecoderContext.extend``, incremental detokenisation, event publishing, context
  bookkeeping). The time of each step is the interval between two consecutive ``extend`` calls of the loop (a
  pass-through records them), so it holds one decoder call plus everything the loop does per token. The stage's own
  ``tokens_per_s`` is recorded too.

Each round starts with the session's own ``runtime.stages.DecoderStage`` appending the window (untimed); then the two
alternate which goes first. The ratio is the median of per-round ratios (round median greedy step / round median
isolated step) with its p10-p90 spread, beside the p50s. The context is the same length in both (system prompt + one
window; the greedy steps run on it plus the tokens generated so far). Stop ids are emptied for the measurement, so
every round generates exactly ``--new-tokens`` tokens (random weights would stop anywhere).

The window's visual rows are random feature rows of the real shape (``benchmarks.fixtures.random_visual_rows``): the
cost of a decode step depends on the context length, not on the values, and this keeps the 0.5B geometry cheap on a
2-core CPU (no vision encoders). After each feedback the context is cleared (``clear_after_feedback``), so every round
starts from system prompt + one fresh window.

Writes ``decode.json`` and ``decode.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    command_line,
    cuda_sync_fn,
    fmt_ms,
    machine_line,
    markdown_table,
    paired_ratio,
    peak_rss_mb,
    report_header,
    summarize_ms,
    time_ms,
    write_json,
)
from benchmarks.fixtures import (
    Variant,
    bench_config,
    build_backend,
    parse_variants,
    random_visual_rows,
    scene_window,
    window_segments,
)
from runtime.backends.base import ModelBackend
from runtime.config import StreamingConfig
from runtime.context import DecoderContext
from runtime.policies import RepeatFilter
from runtime.session import StreamSession
from runtime.stages import DecoderStage, FeedbackStage, WindowWork

logger = logging.getLogger("benchmarks.decode")

#: The CPU goal for greedy step / isolated step.
GOAL_RATIO = 1.15


class FeedClock:
    """A pass-through around the decoder context that records when the generation loop feeds each token.

    ``FeedbackStage`` only calls ``extend`` and ``end_feedback`` on its context; both go straight to the real one.

    Args:
        context: The session's decoder context.
    """

    def __init__(self, context: DecoderContext) -> None:
        self.context = context
        self.fed_at: list[float] = []

    def extend(self, ids: Sequence[int]) -> np.ndarray:
        """Records the time, then feeds the ids."""
        self.fed_at.append(time.perf_counter())
        return self.context.extend(ids)

    def end_feedback(self, last_token: int | None, window_index: int) -> None:
        """Closes the feedback turn (the real context's rule)."""
        self.context.end_feedback(last_token, window_index)

    def step_ms(self) -> list[float]:
        """Intervals between consecutive feeds in ms: one full loop step each (decode + the loop's host work)."""
        return [(b - a) * 1e3 for a, b in zip(self.fed_at, self.fed_at[1:])]


def measure_variant(
    backend: ModelBackend,
    config: StreamingConfig,
    *,
    rounds: int,
    warmup_rounds: int,
    new_tokens: int,
    isolated_calls: int,
    sync: Callable[[], None],
    seed: int = 0,
) -> dict[str, Any]:
    """Greedy steps and isolated steps of one backend, interleaved round by round.

    Args:
        backend: The backend.
        config: Streaming configuration (prompt instruction, context limits).
        rounds: Timed rounds.
        warmup_rounds: Untimed rounds first.
        new_tokens: Tokens generated per round (>= 2: the first step interval needs two feeds).
        isolated_calls: Isolated decode calls per round.
        sync: Device synchronize.
        seed: Seed of the random visual rows.

    Returns:
        Both summaries, the stage's own tokens/s, the paired ratio and the context lengths.
    """
    tokenizer = backend.load_tokenizer()
    session = StreamSession(config, backend, tokenizer)
    session.start()
    context = session.context
    prompt = session.prompt
    appender = next(s for s in session.stages if isinstance(s, DecoderStage))
    clock = FeedClock(context)
    feedback = FeedbackStage(clock, tokenizer, new_tokens, (), backend.action_token_ids,  # type: ignore[arg-type]
                             RepeatFilter(False), lambda event: None)
    image, video = random_visual_rows(backend, np.random.default_rng(seed))

    iso_kv = backend.allocate_kv(config.context.max_tokens)
    backend.decode([list(prompt.system_ids)], iso_kv)
    backend.decode(window_segments(prompt, [image, video]), iso_kv)
    logits = backend.decode([[backend.action_token_ids.feedback]], iso_kv)
    iso_length = iso_kv.length
    iso_token = int(np.argmax(logits))

    def isolated() -> list[float]:
        out = []
        for _ in range(isolated_calls):
            out.append(time_ms(lambda: backend.decode([[iso_token]], iso_kv), sync))
            iso_kv.truncate(iso_length)
        return out

    def greedy(work: WindowWork) -> tuple[list[float], float]:
        clock.fed_at.clear()
        result = feedback.process(work)  # clears the context afterwards (clear_after_feedback)
        if len(result.token_ids) != new_tokens:
            raise RuntimeError(f"generated {len(result.token_ids)} tokens, expected {new_tokens}")
        return clock.step_ms(), 1e3 / result.tokens_per_s if result.tokens_per_s > 0 else float("nan")

    iso_rounds: list[list[float]] = []
    gen_rounds: list[list[float]] = []
    stage_ms_per_token: list[float] = []
    gen_start_length = 0
    for r in range(warmup_rounds + rounds):
        work = WindowWork(scene_window(config, r), [])
        work.image_tokens, work.video_tokens = image, video
        appender.process(work)  # untimed, before both: the session's window append
        gen_start_length = context.length
        if r % 2 == 0:
            iso = isolated()
            gen, per_token = greedy(work)
        else:
            gen, per_token = greedy(work)
            iso = isolated()
        if r >= warmup_rounds:
            iso_rounds.append(iso)
            gen_rounds.append(gen)
            stage_ms_per_token.append(per_token)
        logger.info("%s round %d: isolated p50 %.2f ms, greedy step p50 %.2f ms", backend.name, r,
                    statistics.median(iso), statistics.median(gen))
    iso_all = [x for xs in iso_rounds for x in xs]
    gen_all = [x for xs in gen_rounds for x in xs]
    return {
        "context_tokens": {
            "isolated": iso_length,
            "greedy_first_step": gen_start_length,
            "greedy_last_step": gen_start_length + new_tokens - 2,
            "system": len(prompt.system_ids),
            "window": context.window_tokens(backend.facts.num_visual_tokens),
        },
        "rounds": rounds,
        "warmup_rounds": warmup_rounds,
        "new_tokens": new_tokens,
        "isolated_calls_per_round": isolated_calls,
        "isolated": summarize_ms(iso_all),
        "greedy_step": summarize_ms(gen_all),
        "greedy_step_from_stage_tokens_per_s": summarize_ms(stage_ms_per_token),
        "ratio": paired_ratio([statistics.median(g) for g in gen_rounds], [statistics.median(i) for i in iso_rounds]),
        "ratio_of_p50s": summarize_ms(gen_all)["p50_ms"] / summarize_ms(iso_all)["p50_ms"],
        "kv_bytes_per_position": iso_kv.bytes_per_position,
    }


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Measures every variant in turn (one backend loaded at a time).

    Returns:
        The report.
    """
    variants: list[Variant] = parse_variants(args.variants)
    report = report_header("decode", command, preset=args.preset, backend=",".join(v.backend for v in variants),
                           precision=",".join(v.precision for v in variants), threads=args.threads)
    report["goal_ratio"] = GOAL_RATIO
    report["visual_rows"] = "random feature rows of the real shape (decode cost depends on length only)"
    report["variants"] = {}
    config = bench_config({"generation.max_new_tokens": args.new_tokens, "context.clear_after_feedback": True,
                           "backend.intra_op_threads": args.threads})
    for v in variants:
        t = time.perf_counter()
        backend = build_backend(v, args.preset, engines_dir=args.engines, checkpoint_dir=args.checkpoint_dir,
                                threads=args.threads)
        load_s = time.perf_counter() - t
        try:
            result = measure_variant(backend, config, rounds=args.rounds, warmup_rounds=args.warmup_rounds,
                                     new_tokens=args.new_tokens, isolated_calls=args.isolated_calls,
                                     sync=cuda_sync_fn(v.device))
            report["random_weights"] = bool(backend.random_weights)
        finally:
            backend.close()
        result["load_s"] = load_s
        result["wall_s"] = time.perf_counter() - t
        report["variants"][v.name] = result
        logger.info("%s: greedy / isolated %.3f", v.name, result["ratio"]["ratio_p50"])
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per variant: context, isolated p50/p95, greedy p50/p95, the ratio (for this module and the summary)."""
    rows = []
    for name, r in report["variants"].items():
        iso, gen, ratio = r["isolated"], r["greedy_step"], r["ratio"]
        rows.append([f"{report['preset']} {name}", str(r["context_tokens"]["isolated"]),
                     f"{fmt_ms(iso['p50_ms'])} / {fmt_ms(iso['p95_ms'])}",
                     f"{fmt_ms(gen['p50_ms'])} / {fmt_ms(gen['p95_ms'])}",
                     f"{ratio['ratio_p50']:.2f} [{ratio['ratio_p10']:.2f}-{ratio['ratio_p90']:.2f}]",
                     f"{r['rounds']} x ({r['isolated_calls_per_round']} + {r['new_tokens'] - 1})"])
    return rows


TABLE_HEADER = ["geometry, variant", "context tokens", "isolated step p50 / p95 ms", "greedy step p50 / p95 ms",
                "greedy / isolated [p10-p90]", "rounds x (isolated + greedy samples)"]


def to_markdown(report: dict[str, Any]) -> str:
    """The decode report's table."""
    out = [f"### Greedy-generation step vs isolated decode step ({report['preset']}, random weights)", "",
           f"Machine: {machine_line(report)}", "",
           markdown_table(TABLE_HEADER, table_rows(report)), "",
           (f"Goal on the CPU: greedy / isolated <= {report['goal_ratio']:.2f}. Greedy step = interval between two "
            "feeds of `FeedbackStage`'s loop (decode + detokenisation + events + bookkeeping); isolated = one "
            "`backend.decode` call alone on the same context (system prompt + window + `<feedback>`).")]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "0.5b", "1.5b"])
    parser.add_argument("--variants", default="pytorch:fp32,onnxruntime:fp32",
                        help="comma-separated backend:precision[:device]")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds (one window append each, untimed)")
    parser.add_argument("--warmup-rounds", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated per round (>= 2)")
    parser.add_argument("--isolated-calls", type=int, default=8, help="isolated decode calls per round")
    parser.add_argument("--engines", type=Path, default=None, help="engines directory (default engines/<preset>)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="pytorch: default checkpoints/<preset>")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        parse_variants(args.variants)
    except ValueError as exc:
        parser.error(f"--variants: {exc}")
    if args.rounds < 1 or args.warmup_rounds < 0 or args.new_tokens < 2 or args.isolated_calls < 1:
        parser.error("--rounds >= 1, --warmup-rounds >= 0, --new-tokens >= 2, --isolated-calls >= 1")
    report = run(args, command_line("benchmarks.decode", argv))
    write_json(args.out / "decode.json", report)
    text = to_markdown(report)
    (args.out / "decode.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
