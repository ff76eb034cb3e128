"""Stage micro-benchmarks through the ModelBackend interface, side-by-side ratios and scaling curves.

Usage::

    python -m benchmarks.components --preset tiny --variants pytorch:fp32,onnxruntime:fp32,onnxruntime:fp16 --out DIR
    python -m benchmarks.components --preset 0.5b --variants pytorch:fp32 --stages frame_selection,embed_tokens \\
        --batch-sizes 1,4 --contexts 55,1024,2048 --append-tokens 256 --ratios none --repeats 2 --out DIR

Every variant (``backend:precision[:device]``) is built once through ``runtime.backends.create_backend``
(``benchmarks.fixtures``). One 16-frame window of the synthetic scene runs through the runtime's own stages and every
stage is then timed through the ModelBackend call those stages make (``benchmarks.stages``). All variants are timed
**interleaved, round by round** (``benchmarks/common.py``), so the ratios below are measured in the same run:

* **stages**: preprocessing (host, both branches), image encoder, frame selection, video encoder, token embedding,
  decoder prefill (system prompt + window), decoder append (a window onto the system prompt's KV), decode step (one
  token after system + window); wall time around the call, and the engine's own time (``stage_times_ms``) to show the
  host overhead. The projectors are inside the encoders' graphs in the backend API; they are timed apart on the
  PyTorch reference when it is a variant.
* **ratios**: each exported backend against PyTorch per stage; fp16 against fp32 per backend (ONNX Runtime's CPU
  provider runs the fp16 graphs with fp32 arithmetic: this measures what they cost, not a speed-up); cached vs
  uncached frame encoding over consecutive windows with 0.5 s overlap (``runtime.stages.ImageStage`` with its
  ``FrameFeatureCache``, vs the same stage with the cache emptied before each window); appending a window to the KV
  cache vs re-prefilling the same context from scratch.
* **curves** (every variant, ``benchmarks.scaling``): decoder append and decode step vs context length, image encoder
  vs batch.

Writes ``components.json``, ``components.md``, ``components_stages.png`` and ``components_scaling.png`` under --out.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    command_line,
    fmt_ms,
    machine_line,
    paired_ratio,
    peak_rss_mb,
    report_header,
    summarize_ms,
    time_interleaved,
    write_json,
)
from benchmarks.fixtures import SYNTHETIC_FPS, bench_config, build_backend, parse_variant, parse_variants, scene_frames
from benchmarks.scaling import curve_panels, curves_markdown, measure_curves
from benchmarks.stages import (
    DECODER_STAGES,
    STAGES,
    PreparedWindow,
    measure_projectors,
    measure_stages,
    prepare_window,
    ratio_text,
    stage_ratios,
    stages_markdown,
)
from runtime.config import StreamingConfig
from runtime.feature_cache import FrameFeatureCache
from runtime.sources import SyntheticSource
from runtime.stages import ImageStage, WindowWork

logger = logging.getLogger("benchmarks.components")

RATIOS = ("backends", "precisions", "cache", "append")


def measure_cache(p: PreparedWindow, config: StreamingConfig, source: SyntheticSource, windows: int,
                  repeats: int) -> dict[str, Any]:
    """Cached vs uncached frame encoding over consecutive windows (``runtime.stages.ImageStage``).

    Per round: a fresh cache, window 0 untimed, then windows 1..n-1 each timed with the cache (frames shared with the
    previous window reused) and without it (cache emptied first), alternating which goes first.

    Args:
        p: Variant.
        config: Window length and overlap.
        source: The synthetic scene.
        windows: Consecutive windows per round (>= 2).
        repeats: Rounds.

    Returns:
        Frames encoded per window and time with and without the cache, and the paired ratio cached / uncached.
    """
    scene = [scene_frames(config, k, source) for k in range(windows)]
    samples: dict[str, list[float]] = {"cached": [], "uncached": []}
    encoded: dict[str, list[int]] = {"cached": [], "uncached": []}
    ImageStage(p.backend, FrameFeatureCache(config.cache.max_frames)).process(WindowWork(*scene[0]))  # warm-up
    for r in range(repeats):
        caches = {kind: FrameFeatureCache(config.cache.max_frames) for kind in samples}
        stages = {kind: ImageStage(p.backend, cache) for kind, cache in caches.items()}
        stages["cached"].process(WindowWork(*scene[0]))
        for k in range(1, windows):
            order = ("cached", "uncached") if (r + k) % 2 == 0 else ("uncached", "cached")
            for kind in order:
                cache = caches[kind]
                if kind == "uncached":
                    cache.clear()
                misses = cache.misses
                start = time.perf_counter()
                stages[kind].process(WindowWork(*scene[k]))
                samples[kind].append((time.perf_counter() - start) * 1e3)
                encoded[kind].append(cache.misses - misses)
    return {
        "variant": p.name,
        "overlap_s": config.window.overlap_s,
        "windows_per_round": windows,
        "frames_per_window": len(scene[0][1]),
        "frames_encoded_per_window": {k: float(np.mean(v)) for k, v in encoded.items()},
        "cached": summarize_ms(samples["cached"]),
        "uncached": summarize_ms(samples["uncached"]),
        "ratio": paired_ratio(samples["cached"], samples["uncached"]),
        "note": "time = ImageStage.process: CLIP-branch preprocessing + encode_images of the frames not cached",
    }


def measure_append_vs_prefill(p: PreparedWindow, context_windows: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Appending one window onto a cached context vs re-prefilling the whole context with it.

    Both calls run on one cache of the backend: the append after cutting it back to the context, the re-prefill after
    emptying it; the context is the system prompt and ``context_windows`` windows, each closed with its turn's ids.

    Args:
        p: Variant (prepared with the decoder).
        context_windows: Windows already in the context (the appended one comes on top).
        repeats: Rounds.
        warmup: Untimed calls first.

    Returns:
        Both summaries and the paired ratio append / re-prefill.
    """
    b = p.backend
    closing = [b.action_token_ids.next, *p.prompt.turn_end_ids]
    later = [closing + list(p.segments[0]), *p.segments[1:]]
    context = [list(p.prompt.system_ids)] + (p.segments + later * (context_windows - 1) if context_windows else [])
    appended = later if context_windows else p.segments
    kv = b.allocate_kv(p.system_tokens + (context_windows + 1) * (p.window_tokens + len(closing)))
    b.decode(context, kv)
    context_tokens = kv.length
    samples = time_interleaved(
        {"append": lambda: b.decode(appended, kv), "reprefill": lambda: b.decode(context + appended, kv)},
        repeats, warmup, before={"append": lambda: kv.truncate(context_tokens), "reprefill": lambda: kv.truncate(0)},
    )
    return {
        "variant": p.name,
        "context_windows": context_windows,
        "context_tokens": context_tokens,
        "appended_tokens": kv.length - context_tokens,
        "reprefill_tokens": kv.length,
        "append": summarize_ms(samples["append"]),
        "reprefill": summarize_ms(samples["reprefill"]),
        "ratio": paired_ratio(samples["append"], samples["reprefill"]),
    }


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Builds every variant and measures what ``args`` asks for (see :func:`main`).

    Returns:
        The report.
    """
    variants = parse_variants(args.variants)
    stages = [s for s in args.stages.split(",") if s]
    ratios = [] if args.ratios == "none" else [r for r in args.ratios.split(",") if r]
    report = report_header("components", command, preset=args.preset,
                           backend=",".join(v.backend for v in variants),
                           precision=",".join(v.precision for v in variants), threads=args.threads)
    report.update({"variants": [v.name for v in variants], "repeats": args.repeats,
                   "curve_repeats": args.curve_repeats or args.repeats, "warmup": args.warmup})
    encode_video = "video_encoder" in stages
    needs_decoder = any(s in stages for s in DECODER_STAGES) or "append" in ratios
    report["window_video_rows"] = "encoded" if encode_video else "zeros (video encoder not run; decoder timing only)"
    config = bench_config()
    source = SyntheticSource(fps=SYNTHETIC_FPS, duration_s=600.0)
    window, frames = scene_frames(config, 0, source)
    prepared: list[PreparedWindow] = []
    report["load_s"] = {}
    try:
        for v in variants:
            t = time.perf_counter()
            backend = build_backend(v, args.preset, engines_dir=args.engines, checkpoint_dir=args.checkpoint_dir,
                                    threads=args.threads)
            prepared.append(prepare_window(v.name, backend, backend.load_tokenizer(), config, window, frames,
                                           encode_video=encode_video, decoder=needs_decoder))
            report["load_s"][v.name] = time.perf_counter() - t
            report["random_weights"] = bool(backend.random_weights)
        first = prepared[0]
        report["tokens"] = {"system": first.system_tokens, "window": first.window_tokens,
                            "visual_rows_per_window": first.backend.facts.num_visual_tokens}
        measured = measure_stages(prepared, stages, args.repeats, args.warmup)
        report["stages"] = {s: {v: summarize_ms(x) for v, x in per.items()} for s, per in measured["wall"].items()}
        report["engine_stages"] = {s: {v: summarize_ms(x) for v, x in per.items()}
                                   for s, per in measured["engine"].items()}
        report["ratios"] = {}
        names = [p.name for p in prepared]
        if "backends" in ratios or "precisions" in ratios:
            timed = {s: v for s, v in measured["wall"].items() if s != "preprocess"}
            report["ratios"]["stages"] = {k: v for k, v in stage_ratios(timed, names).items()
                                          if _ratio_kind(k) in ratios}
        torch_variant = next((p for p in prepared if p.name.startswith("pytorch:")), None)
        if torch_variant is not None:
            report["projectors_reference"] = measure_projectors(torch_variant, args.repeats, args.warmup)
        primary = next((p for p in prepared if p.name == "onnxruntime:fp32"), first)
        if "cache" in ratios:
            logger.info("cache ratio on %s", primary.name)
            report["ratios"]["cache"] = measure_cache(primary, config, source, args.cache_windows, args.repeats)
        if "append" in ratios:
            report["ratios"]["append_vs_reprefill"] = [
                measure_append_vs_prefill(p, args.context_windows, args.repeats, args.warmup) for p in prepared]
        if not args.no_curves:
            contexts = _ints(args.contexts) if args.contexts else [
                first.system_tokens + k * first.window_tokens for k in range(4)]
            report["curves"] = {p.name: measure_curves(p, contexts=contexts, append_tokens=args.append_tokens,
                                                       batch_sizes=_ints(args.batch_sizes),
                                                       repeats=args.curve_repeats or args.repeats, warmup=args.warmup)
                                for p in prepared}
    finally:
        for p in prepared:
            p.backend.close()
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """The components report's tables.

    Args:
        report: ``run``'s output.

    Returns:
        Markdown text.
    """
    variants = report["variants"]
    out = [f"### Components ({report['preset']}, random weights, {report['repeats']} interleaved rounds)", "",
           f"Machine: {machine_line(report)}", "",
           stages_markdown(report["stages"], variants, report.get("ratios", {}).get("stages"))]
    ratios = report.get("ratios", {})
    if report.get("projectors_reference"):
        out += ["", "Projectors on the PyTorch reference (inside image_encoder / video_encoder above): "
                + "; ".join(f"{k} p50 {fmt_ms(v['p50_ms'])} ms" for k, v in report["projectors_reference"].items())]
    if "cache" in ratios:
        c = ratios["cache"]
        out += ["", (f"Frame cache ({c['variant']}, {c['overlap_s']} s overlap): "
                     f"{c['frames_encoded_per_window']['cached']:.1f} vs "
                     f"{c['frames_encoded_per_window']['uncached']:.1f} frames encoded per window; p50 "
                     f"{fmt_ms(c['cached']['p50_ms'])} vs {fmt_ms(c['uncached']['p50_ms'])} ms; cached / uncached "
                     f"{ratio_text(c['ratio'])}.")]
    for a in ratios.get("append_vs_reprefill", []):
        out += [(f"Append vs re-prefill ({a['variant']}, {a['context_tokens']} tokens in context + "
                 f"{a['appended_tokens']}): p50 {fmt_ms(a['append']['p50_ms'])} vs "
                 f"{fmt_ms(a['reprefill']['p50_ms'])} ms; append / re-prefill {ratio_text(a['ratio'])}.")]
    for name, cv in report.get("curves", {}).items():
        out += ["", curves_markdown(name, cv).rstrip()]
    return "\n".join(out) + "\n"


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    """Stage bars and scaling curves.

    Args:
        report: ``run``'s output.
        out: Folder.

    Returns:
        The PNGs written.
    """
    from benchmarks.plots import curves, grouped_bars

    groups = {s: {v: x["p50_ms"] for v, x in per.items()} for s, per in report["stages"].items()}
    written = [grouped_bars(out / "components_stages.png", groups,
                            f"Stage latency p50, {report['preset']} (random weights)", "ms (log scale)")]
    panels = curve_panels(report.get("curves", {}))
    if panels:
        written.append(curves(out / "components_scaling.png", panels, f"Scaling, {report['preset']} (random weights)"))
    return written


def _ratio_kind(pair: str) -> str:
    """``precisions`` for ``a / b`` of one backend (fp16 / fp32), ``backends`` otherwise."""
    a, b = (parse_variant(x) for x in pair.split(" / "))
    return "precisions" if a.backend == b.backend else "backends"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "0.5b", "1.5b"])
    parser.add_argument("--variants", default="pytorch:fp32,onnxruntime:fp32,onnxruntime:fp16",
                        help="comma-separated backend:precision[:device]")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--ratios", default=",".join(RATIOS),
                        help=f"comma-separated subset of {','.join(RATIOS)}, or none")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--curve-repeats", type=int, default=None,
                        help="timed calls per curve point (default --repeats)")
    parser.add_argument("--no-curves", action="store_true", help="skip the scaling curves")
    parser.add_argument("--contexts", default=None, help="context tokens of the curves (default system + 0..3 windows)")
    parser.add_argument("--append-tokens", type=int, default=None, help="rows appended in the curve (default a window)")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16")
    parser.add_argument("--cache-windows", type=int, default=4, help="consecutive windows per cache-ratio round")
    parser.add_argument("--context-windows", type=int, default=1, help="windows in context for append vs re-prefill")
    parser.add_argument("--engines", type=Path, default=None, help="engines directory (default engines/<preset>)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="pytorch: default checkpoints/<preset>")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stages = [s for s in args.stages.split(",") if s]
    ratios = [] if args.ratios == "none" else [r for r in args.ratios.split(",") if r]
    if bad := [s for s in stages if s not in STAGES]:
        parser.error(f"--stages: unknown {bad}; allowed {','.join(STAGES)}")
    if bad := [r for r in ratios if r not in RATIOS]:
        parser.error(f"--ratios: unknown {bad}; allowed {','.join(RATIOS)} or none")
    try:
        parse_variants(args.variants)
    except ValueError as exc:
        parser.error(f"--variants: {exc}")
    if args.repeats < 1 or args.warmup < 0 or args.cache_windows < 2 or args.context_windows < 0:
        parser.error("--repeats >= 1, --warmup >= 0, --cache-windows >= 2, --context-windows >= 0")
    report = run(args, command_line("benchmarks.components", argv))
    write_json(args.out / "components.json", report)
    text = to_markdown(report)
    (args.out / "components.md").write_text(text)
    plot(report, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
