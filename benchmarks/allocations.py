"""Bytes allocated per decoded token vs context length (ONNX Runtime backend by default).

Usage::

    python -m benchmarks.allocations --preset tiny --variants onnxruntime:fp32 --windows 1,2,4 --out DIR

The question: does a decode step allocate or copy memory that grows with the context (a fresh ``present`` KV per
token, as the runtime did before its preallocated, IO-bound cache)? Per context length (system prompt + 1, 2, 4
windows of random feature rows of the real shape, decoded window by window into the backend's own
``allocate_kv(context.max_tokens)`` cache), after ``--warmup`` untimed steps:

* **Python-visible allocations** (``tracemalloc``: Python objects and numpy buffers), per ``backend.decode`` call:
  the peak allocated during the call above what was allocated before it (``transient``: what the call allocates,
  e.g. the embedding rows and the returned logits), and what stays allocated once the caller dropped the returned
  logits (``retained``);
* **RSS growth** of the process over ``--steps`` consecutive decode calls, in a second pass without ``tracemalloc``
  (covers ONNX Runtime's own arena, which ``tracemalloc`` cannot see), divided by the steps.

Both are reported per token beside the KV bytes one position takes and what copying the whole cache per token
would move (``context x bytes per position``), so a per-token cost that grows with the context shows as a column
growing down the table. Nothing is timed here.

Writes ``allocations.json`` and ``allocations.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import command_line, current_rss_mb, machine_line, markdown_table, report_header, write_json
from benchmarks.fixtures import bench_config, build_backend, fill_context, parse_variants, prompt_for
from runtime.backends.base import ModelBackend
from runtime.config import StreamingConfig

logger = logging.getLogger("benchmarks.allocations")


def measure_context(backend: ModelBackend, config: StreamingConfig, windows: int, steps: int, warmup: int,
                    seed: int = 0) -> dict[str, Any]:
    """Allocation figures of decode steps on a context of system prompt + ``windows`` windows.

    Args:
        backend: The backend.
        config: Streaming configuration (prompt, ``context.max_tokens`` = the cache capacity).
        windows: Windows in the context.
        steps: Decode steps per pass.
        warmup: Untimed steps first (they reach every buffer the steps touch).
        seed: Seed of the random visual rows.

    Returns:
        Context length and per-token bytes (transient and retained Python allocations, RSS growth).
    """
    prompt = prompt_for(backend.load_tokenizer(), config)
    kv = backend.allocate_kv(config.context.max_tokens)
    fill_context(backend, kv, prompt, windows, np.random.default_rng(seed))
    context = kv.length
    if context + warmup + 2 * steps > kv.capacity:
        raise ValueError(f"{windows} windows ({context} positions) + {warmup + 2 * steps} steps exceed the "
                         f"capacity {kv.capacity} (context.max_tokens)")
    token = [backend.action_token_ids.feedback]
    for _ in range(warmup):
        backend.decode([token], kv)
    kv.truncate(context)
    gc.collect()

    transient: list[int] = []
    retained: list[int] = []
    tracemalloc.start()
    try:
        start_current, _ = tracemalloc.get_traced_memory()
        for _ in range(steps):
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            logits = backend.decode([token], kv)
            _, peak = tracemalloc.get_traced_memory()
            returned = logits.nbytes
            del logits  # the caller's copy of the logits is dropped, as the generation loop drops it
            after, _ = tracemalloc.get_traced_memory()
            transient.append(peak - before)
            retained.append(after - before)
        end_current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kv.truncate(context)
    gc.collect()

    rss_before = current_rss_mb()
    for _ in range(steps):
        backend.decode([token], kv)
    rss_after = current_rss_mb()
    rss_growth = (rss_after - rss_before) * 2**20 / steps if rss_before is not None and rss_after is not None else None
    return {
        "windows": windows,
        "context_tokens": context,
        "steps": steps,
        "transient_bytes_per_token": {"p50": statistics.median(transient), "max": max(transient)},
        "returned_bytes_per_token": returned,
        "retained_bytes_per_token": {"p50": statistics.median(retained), "mean": float(np.mean(retained))},
        "net_python_bytes_per_token": (end_current - start_current) / steps,
        "rss_growth_bytes_per_token": rss_growth,
        "rss_mb": {"before": rss_before, "after": rss_after},
        "kv_bytes_per_position": kv.bytes_per_position,
        "kv_allocated_bytes": kv.allocated_bytes,
        "full_cache_copy_bytes": context * kv.bytes_per_position,
    }


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Measures every variant at every context length.

    Returns:
        The report.
    """
    variants = parse_variants(args.variants)
    report = report_header("allocations", command, preset=args.preset, backend=",".join(v.backend for v in variants),
                           precision=",".join(v.precision for v in variants), threads=args.threads)
    report["visual_rows"] = "random feature rows of the real shape"
    report["method"] = ("tracemalloc around each backend.decode call (transient = peak during the call above the "
                        "allocation before it; retained = allocated after minus before), then RSS over the steps "
                        "without tracemalloc")
    config = bench_config({"backend.intra_op_threads": args.threads})
    report["variants"] = {}
    for v in variants:
        backend = build_backend(v, args.preset, engines_dir=args.engines, checkpoint_dir=args.checkpoint_dir,
                                threads=args.threads)
        try:
            report["random_weights"] = bool(backend.random_weights)
            points = []
            for w in sorted(args.windows_list):
                points.append(measure_context(backend, config, w, args.steps, args.warmup))
                logger.info("%s, %d positions: transient %.0f B/token, RSS growth %s B/token", v.name,
                            points[-1]["context_tokens"], points[-1]["transient_bytes_per_token"]["p50"],
                            points[-1]["rss_growth_bytes_per_token"])
            report["variants"][v.name] = {"points": points, "vocab_size": backend.vocab_size,
                                          "hidden_size": backend.hidden_size}
        finally:
            backend.close()
    return report


def _kib(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per variant and context length."""
    rows = []
    for name, v in report["variants"].items():
        for p in v["points"]:
            rows.append([f"{report['preset']} {name}", str(p["context_tokens"]),
                         _kib(p["transient_bytes_per_token"]["p50"]), _kib(p["retained_bytes_per_token"]["p50"]),
                         _kib(p["rss_growth_bytes_per_token"]), _kib(p["full_cache_copy_bytes"])])
    return rows


TABLE_HEADER = ["geometry, variant", "context tokens", "transient KiB/token (Python)", "retained KiB/token (Python)",
                "RSS growth KiB/token", "whole-KV copy would be KiB"]


def to_markdown(report: dict[str, Any]) -> str:
    """The allocation table."""
    notes = "; ".join(f"{n}: logits {v['vocab_size']} x 4 B = {v['vocab_size'] * 4 / 1024:.0f} KiB per call"
                      for n, v in report["variants"].items())
    return "\n".join([
        f"### Bytes allocated per decoded token ({report['preset']}, random weights)", "",
        f"Machine: {machine_line(report)}", "",
        markdown_table(TABLE_HEADER, table_rows(report)), "",
        (f"Transient = peak Python/numpy allocation during one `backend.decode` call ({notes}); RSS growth over "
         f"{report['variants'][next(iter(report['variants']))]['points'][0]['steps']} consecutive steps covers ONNX "
         "Runtime's own arena. A cost that grows with the context would grow down each variant's rows."),
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "0.5b", "1.5b"])
    parser.add_argument("--variants", default="onnxruntime:fp32", help="comma-separated backend:precision[:device]")
    parser.add_argument("--windows", default="1,2,4", help="windows in the context, one point each")
    parser.add_argument("--steps", type=int, default=32, help="decode steps per pass")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--engines", type=Path, default=None, help="engines directory (default engines/<preset>)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="pytorch: default checkpoints/<preset>")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        parse_variants(args.variants)
        args.windows_list = [int(x) for x in args.windows.split(",") if x.strip()]
    except ValueError as exc:
        parser.error(f"--variants / --windows: {exc}")
    if not args.windows_list or min(args.windows_list) < 0 or args.steps < 1 or args.warmup < 0:
        parser.error("--windows: non-negative counts; --steps >= 1; --warmup >= 0")
    report = run(args, command_line("benchmarks.allocations", argv))
    write_json(args.out / "allocations.json", report)
    text = to_markdown(report)
    (args.out / "allocations.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
