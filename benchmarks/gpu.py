"""GPU benchmark: the runtime's own session and stages with PyTorch on CUDA (fp16 and fp32), TensorRT when asked for.

Usage (``make bench-gpu``)::

    python -m benchmarks.gpu --out artifacts/bench_gpu --tokenizer-dir artifacts/gpu_tokenizer
    python -m benchmarks.gpu --out /tmp/g --device cpu --preset tiny --quick      # CPU smoke mode (tests)

Nothing here is a pipeline of its own: every number comes from the runtime through the same modules the CPU
benchmarks use, with ``pytorch`` on ``device=cuda`` as an ordinary backend variant (``benchmarks.fixtures``):

* **stages** (``benchmarks.stages``): one 16-frame window run through the runtime's stages, then each stage timed
  through its ``ModelBackend`` call, precisions interleaved stage by stage (CUDA synchronized around every call), with
  the fp16 / fp32 ratio; the projectors apart on the reference; TensorRT (``--tensorrt-engines``) as one more variant
  in the same table, compared with PyTorch fp16;
* **curves** (``benchmarks.scaling``, first precision): image encoder vs batch, prefill vs length, window append and
  decode step vs context length, on the backend's preallocated KV cache;
* **decode** (``benchmarks.decode``): greedy-generation step in ``FeedbackStage``'s loop vs an isolated decode step
  at the same context, per precision;
* **stream** (``benchmarks.stream.measure_runs``): the ``StreamingEngine`` running ``StreamSession`` over the
  synthetic scene, unpaced (every window processed), per precision: windows/s, real-time factor, per-stage latency,
  feedback TTFT and tokens/s;
* **fast path** (``benchmarks.gpu_fastpath``, off with ``--no-fast-path``): the eager path against the fast path in
  one run (a ladder adding one setting per rung: Triton scan, device preprocessing, CUDA graphs, sdpa_causal; fp16
  and fp32), one scan at the 0.5B shape (ref / chunked / triton), the session on the eager and the fast variants,
  the fast fp16 path against the fp32 reference on scene windows, and the issue's goals met or not, with the gap;
  ``gpu_fastpath.png`` plots it.

The checkpoint has random weights, written on the spot (``--checkpoint-dir``). The session needs the model's
tokenizer: on a machine with the ``dashscope`` vocabulary it is written with the checkpoint; otherwise pass
``--tokenizer-dir`` with the tokenizer files of any synthetic checkpoint (the presets share the Qwen2.5 vocabulary):
``mkdir -p artifacts/gpu_tokenizer && cp checkpoints/tiny/model/{tokenizer.json,tokenizer_config.json,``
``chat_template.jinja,generation_config.json} artifacts/gpu_tokenizer/`` on the development machine, and carry that
folder. Outputs ``gpu.json`` and ``gpu.md`` under ``--out``; ``python -m benchmarks.report gpu.json --plots DIR``
draws the plots on any machine with matplotlib.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    command_line,
    cuda_sync_fn,
    fmt_ms,
    machine_line,
    markdown_table,
    peak_rss_mb,
    report_header,
    summarize_ms,
    write_json,
)
from benchmarks.decode import TABLE_HEADER as DECODE_HEADER
from benchmarks.decode import measure_variant as measure_decode
from benchmarks.decode import table_rows as decode_rows
from benchmarks.fixtures import Variant, bench_config, build_backend, scene_frames
from benchmarks.gpu_fastpath import fast_path_markdown, run_fast_path
from benchmarks.scaling import curves_markdown, measure_curves
from benchmarks.stages import (
    STAGES,
    PreparedWindow,
    measure_projectors,
    measure_stages,
    prepare_window,
    stage_ratios,
    stages_markdown,
)
from benchmarks.stream import measure_runs

logger = logging.getLogger("benchmarks.gpu")

#: Files of a tokenizer folder copied into a checkpoint written without one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "generation_config.json")


@dataclass(frozen=True)
class Sizes:
    """How much to measure.

    Attributes:
        repeats: Timed calls per stage and per curve point.
        warmup: Untimed calls first.
        batch_sizes: Image-encoder batch sizes.
        prefill_lengths: Rows of the prefill curve.
        context_windows: Windows in the context for the append / decode-step curves.
        decode_rounds: Rounds of the greedy vs isolated decode measurement.
        decode_tokens: Tokens generated per round.
        stream_s: Stream seconds of the session run (a window every 1.5 s).
        stream_warmup: Untimed windows before it.
        stream_every_n: Feedback on every n-th window of the session run.
        numerics_windows: Scene windows of the fast path's numerics check.
    """

    repeats: int
    warmup: int
    batch_sizes: tuple[int, ...]
    prefill_lengths: tuple[int, ...]
    context_windows: tuple[int, ...]
    decode_rounds: int
    decode_tokens: int
    stream_s: float
    stream_warmup: int
    stream_every_n: int
    numerics_windows: int = 4


FULL = Sizes(10, 2, (1, 2, 4, 8, 16), (256, 1024, 2418, 4836, 9672), (0, 1, 2, 3), 8, 32, 18.5, 1, 2, 4)
#: Smoke mode (tests, CPU): every code path once, no warm-up, so its numbers are not measurements.
QUICK = Sizes(1, 0, (1, 2), (64, 256), (0, 1), 1, 3, 2.1, 0, 1, 1)


def checkpoint_with_tokenizer(preset: str, checkpoint_dir: Path, tokenizer_dir: Path | None) -> tuple[Path, Path]:
    """The random-weight checkpoint of ``preset``, with a tokenizer.

    Raises:
        FileNotFoundError: If no tokenizer can be had (no ``dashscope`` vocabulary and no ``--tokenizer-dir``).
    """
    from mobile_videogpt.synthetic import ensure_synthetic_checkpoint

    has_vocab = importlib.util.find_spec("dashscope") is not None
    model_dir, clip_dir = ensure_synthetic_checkpoint(preset, checkpoint_dir, with_tokenizer=has_vocab)
    if not (model_dir / "tokenizer.json").is_file():
        if tokenizer_dir is None or not (tokenizer_dir / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"{model_dir} has no tokenizer and this machine has no dashscope vocabulary: pass --tokenizer-dir "
                "with tokenizer.json etc. of a synthetic checkpoint (see this module's docstring)"
            )
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, model_dir / name)
        logger.info("copied the tokenizer from %s into %s", tokenizer_dir, model_dir)
    return model_dir, clip_dir


def run(args: argparse.Namespace, sizes: Sizes, command: str) -> dict[str, Any]:
    """Runs every GPU measurement.

    Returns:
        The report.
    """
    started = time.perf_counter()
    sync = cuda_sync_fn(args.device)
    t = time.perf_counter()
    model_dir, clip_dir = checkpoint_with_tokenizer(args.preset, args.checkpoint_dir, args.tokenizer_dir)
    checkpoint_s = time.perf_counter() - t
    variants = [Variant("pytorch", p, args.device) for p in args.precisions]
    if args.tensorrt_engines is not None:
        variants.append(Variant("tensorrt", "fp16", args.device))
    config = bench_config()
    window, frames = scene_frames(config, 0)
    prepared: list[PreparedWindow] = []
    load_s: dict[str, float] = {}
    backends = ",".join(dict.fromkeys(v.backend for v in variants))
    report = report_header("gpu", command, preset=args.preset, backend=backends, precision=",".join(args.precisions),
                           threads=args.threads)
    report.update({"device": args.device, "variants": [v.name for v in variants]})
    try:
        for v in variants:
            t = time.perf_counter()
            backend = build_backend(v, args.preset, engines_dir=args.tensorrt_engines,
                                    checkpoint_dir=args.checkpoint_dir, threads=args.threads)
            prepared.append(prepare_window(v.name, backend, backend.load_tokenizer(), config, window, frames))
            load_s[v.name] = time.perf_counter() - t
        first = prepared[0]
        report["settings"] = {"sizes": asdict(sizes), "tokens": {"system": first.system_tokens,
                                                                "window": first.window_tokens}}
        report["setup_s"] = {"checkpoint": checkpoint_s, "load_and_first_window": load_s}
        measured = measure_stages(prepared, STAGES, sizes.repeats, sizes.warmup, sync)
        report["stages"] = {s: {v: summarize_ms(x) for v, x in per.items()} for s, per in measured["wall"].items()}
        report["engine_stages"] = {s: {v: summarize_ms(x) for v, x in per.items()}
                                   for s, per in measured["engine"].items()}
        timed = {s: v for s, v in measured["wall"].items() if s != "preprocess"}
        report["ratios"] = stage_ratios(timed, [p.name for p in prepared])
        report["projectors_reference"] = measure_projectors(first, sizes.repeats, sizes.warmup, sync)
        contexts = [first.system_tokens + k * first.window_tokens for k in sizes.context_windows]
        report["curves"] = {first.name: measure_curves(first, contexts=contexts, append_tokens=None,
                                                       batch_sizes=sizes.batch_sizes,
                                                       prefill_lengths=sizes.prefill_lengths,
                                                       repeats=sizes.repeats, warmup=sizes.warmup, sync=sync)}
        torch_variants = [p for p in prepared if p.name.startswith("pytorch:")]
        decode_config = bench_config({"generation.max_new_tokens": sizes.decode_tokens})
        report["decode"] = {"preset": args.preset, "goal_ratio": None, "variants": {
            p.name: measure_decode(p.backend, decode_config, rounds=sizes.decode_rounds,
                                   warmup_rounds=1 if sizes.warmup else 0, new_tokens=sizes.decode_tokens,
                                   isolated_calls=max(1, sizes.repeats // 2), sync=sync)
            for p in torch_variants}}
        report["stream"] = {p.name: measure_runs(p.backend, config, source_spec="synthetic", duration_s=sizes.stream_s,
                                                 modes=["unpaced"], every_n=sizes.stream_every_n, max_new_tokens=16,
                                                 warmup_windows=sizes.stream_warmup, threads=args.threads)
                            for p in torch_variants}
        report["tensorrt"] = ({"status": "measured", "engines_dir": str(args.tensorrt_engines)}
                              if args.tensorrt_engines is not None else
                              {"status": "not requested (pass --tensorrt-engines DIR)"})
        report["random_weights"] = bool(first.backend.random_weights)
    finally:
        for p in prepared:
            p.backend.close()
    if args.fast_path:
        stream_kwargs = {"duration_s": sizes.stream_s, "modes": ["unpaced"], "every_n": sizes.stream_every_n,
                         "max_new_tokens": 16, "warmup_windows": sizes.stream_warmup, "threads": args.threads}
        report["fast_path"] = run_fast_path(
            precisions=args.precisions, device=args.device, model_dir=model_dir, clip_dir=clip_dir,
            threads=args.threads, repeats=sizes.repeats, warmup=sizes.warmup, sync=sync, quick=args.quick,
            stream_kwargs=stream_kwargs, numerics_windows=sizes.numerics_windows)
    report["memory"] = {"peak_rss_mb": peak_rss_mb()}
    if args.device.startswith("cuda"):
        import torch

        report["memory"]["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    report["wall_s"] = time.perf_counter() - started
    return report


def stream_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per variant of the session runs: windows/s, RTF, window latency, TTFT, tokens/s, KV."""
    rows = []
    for name, st in report["stream"].items():
        r = st["runs"]["unpaced"]
        fb = r["feedback"]
        per_s = r["windows"]["processed"] / r["processing_s"] if r["processing_s"] > 0 else 0.0
        rows.append([name, f"{r['windows']['processed']}", f"{per_s:.2f}",
                     f"{r['real_time_factor']:.3f}" if r["real_time_factor"] else "-",
                     fmt_ms(r["stages"]["total"]["p50_ms"]) if "total" in r["stages"] else "-",
                     fmt_ms(fb["ttft"]["p50_ms"]) if fb["ttft"] else "-",
                     f"{fb['tokens_per_s']['p50']:.1f}" if fb["tokens_per_s"] else "-",
                     f"{r['kv_bytes']['max'] / 2**20:.1f}"])
    return rows


STREAM_HEADER = ["session (StreamingEngine, unpaced)", "windows", "windows/s (processing)", "RTF", "window p50 ms",
                 "TTFT p50 ms", "tokens/s p50", "KV max MiB"]


def to_markdown(report: dict[str, Any]) -> str:
    """Renders the GPU report's tables (this layout; ``benchmarks.report`` renders older stored reports).

    Args:
        report: ``run``'s output.

    Returns:
        Markdown text.
    """
    variants = report["variants"]
    out = [f"### GPU ({report['preset']}, {report['device']}, random weights)", "",
           f"Machine: {machine_line(report)}", "",
           stages_markdown(report["stages"], variants, report["ratios"])]
    if report.get("projectors_reference"):
        out += ["", "Projectors on the reference (inside the encoders above): "
                + "; ".join(f"{k} p50 {fmt_ms(v['p50_ms'])} ms" for k, v in report["projectors_reference"].items())]
    out += ["", markdown_table(DECODE_HEADER, decode_rows(report["decode"])), "",
            markdown_table(STREAM_HEADER, stream_rows(report)), ""]
    for name, cv in report["curves"].items():
        out.append(curves_markdown(name, cv))
    out += [f"TensorRT: {report['tensorrt']['status']}"]
    if "fast_path" in report:
        out += ["", fast_path_markdown(report["fast_path"])]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (gpu.json, gpu.md)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:<i> or cpu (smoke mode)")
    parser.add_argument("--preset", default="0.5b", choices=["tiny", "0.5b", "1.5b"])
    parser.add_argument("--precisions", default=None, help="comma-separated; default fp16,fp32 on CUDA, fp32 on CPU")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 1 window, short curves (smoke tests)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="default checkpoints/<preset>")
    parser.add_argument("--tokenizer-dir", type=Path, default=None,
                        help="tokenizer files to copy into a checkpoint written without one (no dashscope here)")
    parser.add_argument("--tensorrt-engines", type=Path, default=None, help="TensorRT engines to time side by side")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                        help="skip the fast-path section (ladder, scan, sessions, numerics, goals)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device "
                         "(use --device cpu for the smoke mode)")
    args.precisions = (args.precisions or ("fp16,fp32" if args.device.startswith("cuda") else "fp32")).split(",")
    if unknown := [p for p in args.precisions if p not in ("fp16", "fp32")]:
        parser.error(f"--precisions: unknown {unknown}; allowed fp16, fp32")
    if args.tensorrt_engines is not None and "fp16" not in args.precisions:
        parser.error("--tensorrt-engines is compared with PyTorch fp16: include fp16 in --precisions")
    args.checkpoint_dir = args.checkpoint_dir or Path("checkpoints") / args.preset
    report = run(args, QUICK if args.quick else FULL, command_line("benchmarks.gpu", argv))
    write_json(args.out / "gpu.json", report)
    text = to_markdown(report)
    (args.out / "gpu.md").write_text(text)
    written = [args.out / "gpu.json", args.out / "gpu.md"]
    if "fast_path" in report and importlib.util.find_spec("matplotlib") is not None:
        from benchmarks.gpu_fastpath import plot

        written.append(plot(report, args.out / "gpu_fastpath.png"))
    print(text)
    print(f"written {', '.join(str(p) for p in written)} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
