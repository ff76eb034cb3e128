"""Stage micro-benchmarks through the ModelBackend interface, side-by-side ratios and scaling curves.

Usage::

    python -m benchmarks.components --preset tiny --variants pytorch:fp32,onnxruntime:fp32,onnxruntime:fp16 --out DIR
    python -m benchmarks.components --preset 0.5b --variants pytorch:fp32 --stages image_encoder,frame_selection,decode_step \\
        --batch-sizes 1,4 --contexts 55,1024,2048 --append-tokens 256 --ratios none --repeats 2 --out DIR

Every variant (``backend:precision``) is built once through ``runtime.backends.create_backend`` and timed through the
same ModelBackend calls the streaming engine makes. All variants are timed **interleaved, round by round** (see
``benchmarks/common.py``), so the ratios below are measured in the same run under the same load:

* **stages** (one 16-frame window of the synthetic exercise scene): preprocessing (host, both branches), image encoder
  (CLIP + image ETP, 16 frames), frame selection, video encoder (VideoMamba + pooling + video ETP, 8 frames), token
  embedding, decoder prefill (system prompt + one window), decoder append (one window onto the system prompt's KV),
  decode step (one token after system + window); wall time around the call, and the engine's own time
  (``stage_times_ms``, Polygraphy's ``last_inference_time``) to show the host overhead. The projectors are inside the
  encoders' graphs in the backend API; they are timed apart on the PyTorch reference when it is a variant.
* **ratios**: each backend against ``pytorch:fp32`` per stage; fp16 against fp32 per backend (ONNX Runtime's CPU
  provider runs the fp16 graphs with fp32 arithmetic: it is not expected to be faster, this measures what it costs);
  cached vs uncached frame encoding over consecutive windows with 0.5 s overlap (``runtime.pipeline.ImageStage`` with
  its ``FrameFeatureCache``, vs the same stage with the cache emptied before each window: frames encoded per window
  and time); appending a window to the KV cache vs re-prefilling the same context from scratch.
* **curves** (every variant): decoder append latency vs existing context length, decode-step latency vs context
  length (the KV cache is built window by window and cut to each length with ``KVState.drop``), image encoder vs
  batch.

Writes ``components.json``, ``components.md``, ``components_stages.png`` and ``components_scaling.png`` under --out.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    command_line,
    fmt_ms,
    machine_line,
    markdown_table,
    paired_ratio,
    peak_rss_mb,
    report_header,
    summarize_ms,
    time_call,
    time_interleaved,
    write_json,
)
from mobile_videogpt.preprocess import ClipPreprocessConfig, preprocess_clip_branch, preprocess_video_branch
from mobile_videogpt.prompt import StreamingPromptIds, streaming_prompt_ids
from mobile_videogpt.synthetic import ensure_synthetic_checkpoint
from runtime.backends import create_backend, tokenizer_for
from runtime.backends.base import KVState, ModelBackend
from runtime.feature_cache import FrameFeatureCache
from runtime.frames import Frame
from runtime.pipeline import ImageStage, Timings, coach_system_prompt
from runtime.config import GenerationConfig
from runtime.sources import SyntheticSource
from runtime.windowing import Window, sample_window_frames

logger = logging.getLogger("benchmarks.components")

FPS = 30.0
WINDOW_S, OVERLAP_S = 2.0, 0.5
CHUNK_FRAMES = 8

STAGES = (
    "preprocess",
    "image_encoder",
    "frame_selection",
    "video_encoder",
    "embed_tokens",
    "decoder_prefill",
    "decoder_append",
    "decode_step",
)
#: The engine name each stage's ``stage_times_ms`` entry has, per backend (the host-side stages have none).
ENGINE_KEYS = {
    "image_encoder": ("image_encoder",),
    "frame_selection": ("frame_selection", "frame_selector"),
    "video_encoder": ("video_encoder",),
    "decoder_prefill": ("decoder",),
    "decoder_append": ("decoder",),
    "decode_step": ("decoder",),
}
RATIOS = ("backends", "precisions", "cache", "append")


@dataclass
class Prepared:
    """One variant's backend and the inputs each timed call starts from.

    Attributes:
        name: ``backend:precision``.
        backend: The backend.
        prompt: Streaming prompt ids.
        context_pixels: [16,3,224,224] CLIP-branch pixels.
        clip_features: [16,196,768].
        video_pixels: [8,3,224,224] of the selected frames.
        system_embeds: [1,Ls,H].
        window_embeds: [1,W,H] (prefix + 2402 visual rows + suffix).
        system_kv: KV of the system prompt.
        window_kv: KV of system + window.
        step_embeds: [1,1,H].
    """

    name: str
    backend: ModelBackend
    prompt: StreamingPromptIds
    context_pixels: np.ndarray
    clip_features: np.ndarray
    video_pixels: np.ndarray
    system_embeds: np.ndarray
    window_embeds: np.ndarray
    system_kv: KVState
    window_kv: KVState
    step_embeds: np.ndarray


def positions(start: int, count: int) -> np.ndarray:
    """Position ids ``[1, count]`` from ``start``."""
    return np.arange(start, start + count, dtype=np.int64)[None]


def window_frames(source: SyntheticSource, k: int, n: int = 16) -> list[Frame]:
    """The 16 frames the runtime samples for window ``k`` of the synthetic scene (2 s windows, 0.5 s overlap).

    Args:
        source: The synthetic scene.
        k: Window index.
        n: Frames per window.

    Returns:
        The sampled frames (rendered, with their stream indices).
    """
    stride = WINDOW_S - OVERLAP_S
    window = Window(k, k * stride, k * stride + WINDOW_S)
    first, last = int(np.floor(window.t_start * FPS)), int(np.ceil(window.t_end * FPS))
    candidates = [Frame(i, i / FPS, source.render(i)) for i in range(first, last + 1)]
    return sample_window_frames(candidates, window, n)


def build_variant(spec: str, preset: str, engines_dir: Path | None, threads: int,
                  checkpoint_dir: Path | None = None) -> ModelBackend:
    """Creates the backend of ``backend:precision``.

    Args:
        spec: e.g. ``onnxruntime:fp16``.
        preset: Synthetic preset.
        engines_dir: Engines for the exported backends (default ``engines/<preset>``).
        threads: Intra-op threads.
        checkpoint_dir: The pytorch backend's synthetic checkpoint (default ``checkpoints/<preset>``; written if
            missing).

    Returns:
        The backend.

    Raises:
        ValueError: If the spec is not ``backend:precision``.
    """
    name, _, precision = spec.partition(":")
    if not precision:
        raise ValueError(f"variant {spec!r}: expected backend:precision, e.g. onnxruntime:fp32")
    if name == "pytorch":
        model_dir, clip_dir = ensure_synthetic_checkpoint(preset, checkpoint_dir or Path("checkpoints") / preset)
        return create_backend("pytorch", model_dir=model_dir, clip_dir=clip_dir, precision=precision, threads=threads)
    return create_backend(name, engines_dir=engines_dir or Path("engines") / preset, precision=precision, threads=threads)


def prepare(name: str, backend: ModelBackend, frames: list[Frame], *, video: bool = True,
            window_kv: bool = True) -> Prepared:
    """Runs one window through the backend once and keeps every stage's input.

    Args:
        name: Variant name.
        backend: The backend.
        frames: The window's 16 frames.
        video: Run the video encoder for the window's video rows; ``False`` uses zero rows of the same shape (the
            decoder's timing does not depend on the values), which saves minutes at the 0.5B geometry on a CPU.
        window_kv: Append the window to the system prompt's KV (needed by ``decode_step``); ``False`` leaves the
            system KV in its place.

    Returns:
        The prepared inputs.
    """
    tokenizer = tokenizer_for(backend)
    prompt = streaming_prompt_ids(tokenizer, system=coach_system_prompt(GenerationConfig().instruction))
    clip_cfg = getattr(backend, "clip_preprocess", None) or ClipPreprocessConfig()
    images = np.stack([f.image for f in frames])
    context_px = preprocess_clip_branch(images, clip_cfg).numpy()
    feats = backend.encode_images(context_px)
    _, selected = backend.select_frames(feats.clip_features)
    slots = (np.arange(selected.shape[0])[:, None] * CHUNK_FRAMES + selected).reshape(-1)
    video_px = preprocess_video_branch(images[slots]).numpy()
    hidden = feats.image_tokens.shape[-1]
    video_tokens = backend.encode_video(video_px) if video else np.zeros((2, 49, hidden), dtype=np.float32)
    visual = np.concatenate([feats.image_tokens.reshape(-1, hidden), video_tokens.reshape(-1, hidden)], axis=0)
    window_embeds = np.concatenate(
        [backend.embed_tokens(prompt.window_prefix_ids), visual, backend.embed_tokens(prompt.window_suffix_ids)]
    )[None].astype(np.float32)
    system_embeds = backend.embed_tokens(prompt.system_ids)[None]
    _, system_kv = backend.decode(system_embeds, None, positions(0, system_embeds.shape[1]))
    if window_kv:
        logits, kv = backend.decode(window_embeds, system_kv, positions(system_kv.length, window_embeds.shape[1]))
    else:
        logits, kv = backend.decode(window_embeds[:, -1:], system_kv, positions(system_kv.length, 1))
        kv = system_kv
    step_embeds = backend.embed_tokens([int(np.argmax(logits[0]))])[None]
    return Prepared(name, backend, prompt, context_px, feats.clip_features.copy(), video_px, system_embeds,
                    window_embeds, system_kv, kv, step_embeds)


def stage_calls(p: Prepared, frames: list[Frame]) -> dict[str, Callable[[], object]]:
    """One ModelBackend call per stage, each from the stored inputs.

    Args:
        p: Prepared variant.
        frames: The window's frames (for preprocessing).

    Returns:
        Stage -> call.
    """
    b = p.backend
    images = np.stack([f.image for f in frames])
    clip_cfg = getattr(b, "clip_preprocess", None) or ClipPreprocessConfig()
    prefill = np.concatenate([p.system_embeds, p.window_embeds], axis=1)
    ls, w = p.system_kv.length, p.window_embeds.shape[1]
    text_ids = p.prompt.window_prefix_ids + p.prompt.window_suffix_ids
    return {
        "preprocess": lambda: (preprocess_clip_branch(images, clip_cfg), preprocess_video_branch(images[:8])),
        "image_encoder": lambda: b.encode_images(p.context_pixels),
        "frame_selection": lambda: b.select_frames(p.clip_features),
        "video_encoder": lambda: b.encode_video(p.video_pixels),
        "embed_tokens": lambda: b.embed_tokens(text_ids),
        "decoder_prefill": lambda: b.decode(prefill, None, positions(0, prefill.shape[1])),
        "decoder_append": lambda: b.decode(p.window_embeds, p.system_kv, positions(ls, w)),
        "decode_step": lambda: b.decode(p.step_embeds, p.window_kv, positions(p.window_kv.length, 1)),
    }


def engine_ms(backend: ModelBackend, stage: str) -> float | None:
    """The backend's own time of the last call of ``stage``'s engine, if it reports one."""
    times = backend.stage_times_ms()
    for key in ENGINE_KEYS.get(stage, ()):
        if key in times:
            return float(times[key])
    return None


def measure_stages(prepared: list[Prepared], frames: list[Frame], stages: Sequence[str], repeats: int,
                   warmup: int) -> dict[str, dict[str, list[float]]]:
    """Times every stage of every variant, interleaved round by round.

    Args:
        prepared: Variants.
        frames: The window's frames.
        stages: Stages to time.
        repeats: Rounds.
        warmup: Untimed calls per variant first.

    Returns:
        ``{"wall": {stage: {variant: samples}}, "engine": {stage: {variant: samples}}}`` (engine samples only where
        the backend reports them).
    """
    wall: dict[str, Any] = {}
    inner: dict[str, Any] = {}
    calls = {p.name: stage_calls(p, frames) for p in prepared}
    for stage in stages:
        logger.info("stage %s", stage)
        engine: dict[str, list[float]] = {p.name: [] for p in prepared}

        def recorder(p: Prepared, fn: Callable[[], object], stage: str = stage,
                     engine: dict[str, list[float]] = engine) -> Callable[[], None]:
            def call() -> None:
                fn()
                ms = engine_ms(p.backend, stage)
                if ms is not None:
                    engine[p.name].append(ms)
            return call

        if stage == "preprocess":  # host code, the same for every backend
            first = prepared[0]
            wall[stage] = {"host": time_call(calls[first.name][stage], repeats, warmup)}
            continue
        variants = {p.name: recorder(p, calls[p.name][stage]) for p in prepared}
        wall[stage] = time_interleaved(variants, repeats, warmup)
        inner[stage] = {k: v[-repeats:] for k, v in engine.items() if v}
    return {"wall": wall, "engine": inner}


def stage_ratios(wall: dict[str, dict[str, list[float]]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Backend and precision ratios per stage from interleaved samples.

    Args:
        wall: ``{stage: {variant: samples}}``.
        names: Variant names.

    Returns:
        ``{"<a> / <b>": {stage: paired ratio}}``.
    """
    pairs = []
    for a in names:
        backend, _, precision = a.partition(":")
        if backend != "pytorch" and precision == "fp32" and "pytorch:fp32" in names:
            pairs.append((a, "pytorch:fp32"))
        if precision == "fp16" and f"{backend}:fp32" in names:
            pairs.append((a, f"{backend}:fp32"))
    out: dict[str, dict[str, Any]] = {}
    for a, b in pairs:
        out[f"{a} / {b}"] = {s: paired_ratio(v[a], v[b]) for s, v in wall.items() if a in v and b in v}
    return out


def measure_projectors(p: Prepared, repeats: int, warmup: int) -> dict[str, Any] | None:
    """Image and video ETP timed apart on the PyTorch reference (inside the encoders in the backend API).

    Args:
        p: A ``pytorch`` variant.
        repeats: Timed calls.
        warmup: Untimed calls.

    Returns:
        Summaries, or ``None`` if the variant has no reference model.
    """
    import torch

    model = getattr(p.backend, "model", None)
    if model is None:
        return None
    feats = torch.from_numpy(p.clip_features).to(model.device, model.dtype)
    with torch.inference_mode():
        tokens = model.encode_video(torch.from_numpy(p.video_pixels).to(model.device, model.dtype))
        pooled = model.pool_video(tokens)
        return {
            "image_etp (16 frames)": summarize_ms(time_call(lambda: model.project_images(feats), repeats, warmup)),
            "video_pool + video_etp": summarize_ms(
                time_call(lambda: model.project_video(model.pool_video(tokens)), repeats, warmup)),
            "video_etp": summarize_ms(time_call(lambda: model.project_video(pooled), repeats, warmup)),
        }


def measure_cache(p: Prepared, source: SyntheticSource, windows: int, repeats: int) -> dict[str, Any]:
    """Cached vs uncached frame encoding over consecutive windows with 0.5 s overlap (``ImageStage``).

    Per round: a fresh cache, window 0 untimed, then windows 1..n-1 each timed with the cache (frames shared with the
    previous window reused) and without it (cache emptied first), alternating which goes first.

    Args:
        p: Variant.
        source: The synthetic scene.
        windows: Consecutive windows per round (>= 2).
        repeats: Rounds.

    Returns:
        Frames encoded per window and time with and without the cache, and the paired ratio cached / uncached.
    """
    clip_cfg = getattr(p.backend, "clip_preprocess", None) or ClipPreprocessConfig()
    frames = [window_frames(source, k) for k in range(windows)]
    cached_ms: list[float] = []
    uncached_ms: list[float] = []
    cached_frames: list[int] = []
    uncached_frames: list[int] = []
    # Warm-up: one untimed window through each path.
    ImageStage(p.backend, FrameFeatureCache(64), clip_cfg).process(frames[0], Timings())
    for r in range(repeats):
        cache: FrameFeatureCache[tuple[np.ndarray, np.ndarray]] = FrameFeatureCache(64)
        cached_stage = ImageStage(p.backend, cache, clip_cfg)
        nocache: FrameFeatureCache[tuple[np.ndarray, np.ndarray]] = FrameFeatureCache(64)
        uncached_stage = ImageStage(p.backend, nocache, clip_cfg)
        cached_stage.process(frames[0], Timings())
        for k in range(1, windows):
            def run_cached(k: int = k) -> None:
                misses = cache.misses
                start = time.perf_counter()
                cached_stage.process(frames[k], Timings())
                cached_ms.append((time.perf_counter() - start) * 1e3)
                cached_frames.append(cache.misses - misses)

            def run_uncached(k: int = k) -> None:
                nocache.clear()
                misses = nocache.misses
                start = time.perf_counter()
                uncached_stage.process(frames[k], Timings())
                uncached_ms.append((time.perf_counter() - start) * 1e3)
                uncached_frames.append(nocache.misses - misses)

            order = (run_cached, run_uncached) if (r + k) % 2 == 0 else (run_uncached, run_cached)
            for fn in order:
                fn()
    return {
        "variant": p.name,
        "overlap_s": OVERLAP_S,
        "windows_per_round": windows,
        "frames_per_window": len(frames[0]),
        "frames_encoded_per_window": {"cached": float(np.mean(cached_frames)), "uncached": float(np.mean(uncached_frames))},
        "cached": summarize_ms(cached_ms),
        "uncached": summarize_ms(uncached_ms),
        "ratio": paired_ratio(cached_ms, uncached_ms),
        "note": "time = ImageStage.process: CLIP-branch preprocessing + encode_images of the frames not cached",
    }


def measure_append_vs_prefill(p: Prepared, context_windows: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Appending one window onto a cached context vs re-prefilling the whole context with it.

    Args:
        p: Variant.
        context_windows: Windows already in the context (the appended one comes on top).
        repeats: Rounds.
        warmup: Untimed calls first.

    Returns:
        Both summaries and the paired ratio append / re-prefill.
    """
    b = p.backend
    w = p.window_embeds.shape[1]
    kv = p.system_kv
    for _ in range(context_windows):
        _, kv = b.decode(p.window_embeds, kv, positions(kv.length, w))
    full = np.concatenate([p.system_embeds] + [p.window_embeds] * (context_windows + 1), axis=1)
    samples = time_interleaved({
        "append": lambda: b.decode(p.window_embeds, kv, positions(kv.length, w)),
        "reprefill": lambda: b.decode(full, None, positions(0, full.shape[1])),
    }, repeats, warmup)
    return {
        "variant": p.name,
        "context_windows": context_windows,
        "context_tokens": kv.length,
        "appended_tokens": w,
        "reprefill_tokens": int(full.shape[1]),
        "append": summarize_ms(samples["append"]),
        "reprefill": summarize_ms(samples["reprefill"]),
        "ratio": paired_ratio(samples["append"], samples["reprefill"]),
    }


def measure_curves(p: Prepared, contexts: Sequence[int], append_tokens: int | None, batch_sizes: Sequence[int],
                   repeats: int, warmup: int) -> dict[str, list[dict[str, Any]]]:
    """Append and decode-step latency vs context length, image encoder vs batch size.

    Args:
        p: Variant.
        contexts: Context lengths in tokens (the KV is built window by window up to the longest, then cut to each
            length with ``KVState.drop``).
        append_tokens: Rows appended (default: one whole window).
        batch_sizes: Image-encoder batch sizes.
        repeats: Timed calls per point.
        warmup: Untimed calls per point.

    Returns:
        Curve name -> points.
    """
    b = p.backend
    out: dict[str, list[dict[str, Any]]] = {"append_vs_context": [], "decode_step_vs_context": [],
                                            "image_encoder_vs_batch": []}
    chunk = p.window_embeds if append_tokens is None else p.window_embeds[:, :append_tokens]
    if contexts:
        longest = max(contexts)
        reps = -(-longest // p.window_embeds.shape[1]) + 1
        ctx_embeds = np.concatenate([p.system_embeds] + [p.window_embeds] * reps, axis=1)[:, :longest]
        t = time.perf_counter()
        # Built window by window, as the runtime does: one prefill of the longest context would need far more
        # memory for the attention scores (the exported decoder uses eager attention).
        step = p.window_embeds.shape[1]
        full_kv = None
        for start in range(0, longest, step):
            piece = ctx_embeds[:, start:start + step]
            _, full_kv = b.decode(piece, full_kv, positions(start, piece.shape[1]))
        if full_kv is None:
            raise ValueError(f"curve contexts must be >= 1 token, got {list(contexts)}")
        logger.info("%s: prefilled %d context tokens for the curves in %.1f s", p.name, longest, time.perf_counter() - t)
        for n in sorted(contexts):
            kv = full_kv.drop(n, full_kv.length)
            s = summarize_ms(time_call(lambda: b.decode(chunk, kv, positions(n, chunk.shape[1])), repeats, warmup))
            out["append_vs_context"].append({"context_tokens": n, "appended_tokens": int(chunk.shape[1]),
                                             "kv_bytes": kv.nbytes, **s})
            s = summarize_ms(time_call(lambda: b.decode(p.step_embeds, kv, positions(n, 1)), repeats, warmup))
            out["decode_step_vs_context"].append({"context_tokens": n, "kv_bytes": kv.nbytes, **s})
            logger.info("%s: context %d: append p50 %.1f ms, step p50 %.1f ms", p.name, n,
                        out["append_vs_context"][-1]["p50_ms"], s["p50_ms"])
    for bs in batch_sizes:
        px = p.context_pixels[np.arange(bs) % p.context_pixels.shape[0]]
        s = summarize_ms(time_call(lambda: b.encode_images(px), repeats, warmup))
        out["image_encoder_vs_batch"].append({"batch": bs, **s, "per_frame_p50_ms": s["p50_ms"] / bs})
        logger.info("%s: image encoder batch %d p50 %.1f ms", p.name, bs, s["p50_ms"])
    return out


def run(preset: str, variants: list[str], stages: list[str], ratios: list[str], repeats: int, warmup: int,
        contexts: list[int] | None, append_tokens: int | None, batch_sizes: list[int], cache_windows: int,
        context_windows: int, curves: bool, curve_repeats: int, engines_dir: Path | None, threads: int,
        command: str, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """Builds every variant and measures.

    Args:
        preset: Synthetic preset.
        variants: ``backend:precision`` names.
        stages: Stages to time.
        ratios: Which of ``RATIOS`` to measure.
        repeats: Rounds / timed calls.
        warmup: Untimed calls.
        contexts: Context lengths of the curves (default: system + 0..3 windows).
        append_tokens: Rows appended in the append curve (default a whole window).
        batch_sizes: Image-encoder batch sizes.
        cache_windows: Consecutive windows per round of the cache ratio.
        context_windows: Windows in the context for append vs re-prefill.
        curves: Measure the scaling curves.
        curve_repeats: Timed calls per curve point.
        engines_dir: Engines for the exported backends.
        threads: Intra-op threads.
        command: Command line for the report.
        checkpoint_dir: The pytorch backend's checkpoint (default ``checkpoints/<preset>``).

    Returns:
        The report.
    """
    report = report_header("components", command, preset=preset, backend=",".join(v.split(":")[0] for v in variants),
                           precision=",".join(v.split(":")[1] for v in variants), threads=threads)
    report.update({"variants": variants, "repeats": repeats, "curve_repeats": curve_repeats, "warmup": warmup})
    encode_video = "video_encoder" in stages
    report["window_video_rows"] = "encoded" if encode_video else "zeros (video encoder not run; decoder timing only)"
    source = SyntheticSource(fps=FPS, duration_s=60.0)
    frames = window_frames(source, 0)
    prepared: list[Prepared] = []
    report["load_s"] = {}
    try:
        for spec in variants:
            t = time.perf_counter()
            backend = build_variant(spec, preset, engines_dir, threads, checkpoint_dir)
            prepared.append(prepare(spec, backend, frames, video=encode_video,
                                    window_kv="decode_step" in stages))
            report["load_s"][spec] = time.perf_counter() - t
            report["random_weights"] = bool(backend.random_weights)
        first = prepared[0]
        report["tokens"] = {"system": first.system_kv.length, "window": int(first.window_embeds.shape[1]),
                            "visual_rows_per_window": int(first.window_embeds.shape[1]) - len(first.prompt.window_prefix_ids)
                            - len(first.prompt.window_suffix_ids)}
        measured = measure_stages(prepared, frames, stages, repeats, warmup)
        report["stages"] = {s: {v: summarize_ms(x) for v, x in per.items()} for s, per in measured["wall"].items()}
        report["engine_stages"] = {s: {v: summarize_ms(x) for v, x in per.items()} for s, per in measured["engine"].items()}
        report["ratios"] = {}
        stage_wall = {s: v for s, v in measured["wall"].items() if s != "preprocess"}
        names = [p.name for p in prepared]
        if "backends" in ratios or "precisions" in ratios:
            kinds = {"backends": lambda a: a.endswith(":fp32"), "precisions": lambda a: a.endswith(":fp16")}
            report["ratios"]["stages"] = {
                k: v for k, v in stage_ratios(stage_wall, names).items()
                if any(kinds[r](k.split(" / ")[0]) for r in ("backends", "precisions") if r in ratios)
            }
        torch_variant = next((p for p in prepared if p.name.startswith("pytorch:")), None)
        if torch_variant is not None:
            report["projectors_reference"] = measure_projectors(torch_variant, repeats, warmup)
        primary = next((p for p in prepared if p.name == "onnxruntime:fp32"), first)
        if "cache" in ratios:
            logger.info("cache ratio on %s", primary.name)
            report["ratios"]["cache"] = measure_cache(primary, source, cache_windows, repeats)
        if "append" in ratios:
            report["ratios"]["append_vs_reprefill"] = [
                measure_append_vs_prefill(p, context_windows, repeats, warmup) for p in prepared]
        if curves:
            if contexts is None:
                contexts = [first.system_kv.length + k * int(first.window_embeds.shape[1]) for k in range(4)]
            report["curves"] = {p.name: measure_curves(p, contexts, append_tokens, batch_sizes, curve_repeats, warmup)
                                for p in prepared}
    finally:
        for p in prepared:
            p.backend.close()
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def _cell(s: dict[str, Any] | None) -> str:
    return f"{fmt_ms(s['p50_ms'])} / {fmt_ms(s['p95_ms'])} / {fmt_ms(s['p99_ms'])}" if s else "-"


def _ratio(r: dict[str, Any]) -> str:
    return f"{r['ratio_p50']:.2f} [{r['ratio_p10']:.2f}-{r['ratio_p90']:.2f}]"


def to_markdown(report: dict[str, Any]) -> str:
    """The components report's tables.

    Args:
        report: ``run``'s output.

    Returns:
        Markdown text.
    """
    variants = report["variants"]
    out = [f"### Components ({report['preset']}, random weights, {report['repeats']} interleaved rounds)", "",
           f"Machine: {machine_line(report)}", ""]
    rows = []
    for stage, per in report["stages"].items():
        if "host" in per:
            rows.append([stage, *([_cell(per["host"])] + ["(host)"] * (len(variants) - 1))])
        else:
            rows.append([stage, *[_cell(per.get(v)) for v in variants]])
    out.append(markdown_table(["stage", *[f"{v} p50/p95/p99 ms" for v in variants]], rows))
    ratios = report.get("ratios", {})
    if ratios.get("stages"):
        names = list(ratios["stages"])
        stages = [s for s in report["stages"] if s != "preprocess"]
        out += ["", "Ratios per stage (median of per-round ratios [p10-p90]; < 1 means the first is faster):", "",
                markdown_table(["stage", *names],
                               [[s, *[_ratio(ratios["stages"][n][s]) if s in ratios["stages"][n] else "-" for n in names]]
                                for s in stages])]
    if report.get("projectors_reference"):
        out += ["", "Projectors on the PyTorch reference (inside image_encoder / video_encoder above): "
                + "; ".join(f"{k} p50 {fmt_ms(v['p50_ms'])} ms" for k, v in report["projectors_reference"].items())]
    if "cache" in ratios:
        c = ratios["cache"]
        out += ["", f"Frame cache ({c['variant']}, {c['overlap_s']} s overlap): "
                f"{c['frames_encoded_per_window']['cached']:.1f} vs {c['frames_encoded_per_window']['uncached']:.1f} "
                f"frames encoded per window; p50 {fmt_ms(c['cached']['p50_ms'])} vs {fmt_ms(c['uncached']['p50_ms'])} "
                f"ms; cached / uncached {_ratio(c['ratio'])}."]
    for a in ratios.get("append_vs_reprefill", []):
        out += [f"Append vs re-prefill ({a['variant']}, {a['context_tokens']} tokens in context + {a['appended_tokens']}): "
                f"p50 {fmt_ms(a['append']['p50_ms'])} vs {fmt_ms(a['reprefill']['p50_ms'])} ms; append / re-prefill "
                f"{_ratio(a['ratio'])}."]
    for name, cv in report.get("curves", {}).items():
        out += ["", f"Curves, {name}:", "",
                markdown_table(["context tokens", "append p50 ms", "decode step p50 ms", "KV MiB"], [
                    [a["context_tokens"], fmt_ms(a["p50_ms"]), fmt_ms(d["p50_ms"]), f"{a['kv_bytes'] / 2**20:.1f}"]
                    for a, d in zip(cv["append_vs_context"], cv["decode_step_vs_context"])]),
                "", markdown_table(["image batch", "p50 ms", "per frame ms"], [
                    [p["batch"], fmt_ms(p["p50_ms"]), fmt_ms(p["per_frame_p50_ms"])] for p in cv["image_encoder_vs_batch"]])]
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

    written = []
    groups = {s: {v: x["p50_ms"] for v, x in per.items()} for s, per in report["stages"].items()}
    written.append(grouped_bars(out / "components_stages.png", groups,
                                f"Stage latency p50, {report['preset']} (random weights)", "ms (log scale)"))
    if report.get("curves"):
        cv = report["curves"]
        panels = [
            {"title": "decoder append vs context", "xlabel": "context tokens", "ylabel": "p50 ms",
             "series": {n: ([p["context_tokens"] for p in c["append_vs_context"]],
                            [p["p50_ms"] for p in c["append_vs_context"]]) for n, c in cv.items()}},
            {"title": "decode step vs context", "xlabel": "context tokens", "ylabel": "p50 ms",
             "series": {n: ([p["context_tokens"] for p in c["decode_step_vs_context"]],
                            [p["p50_ms"] for p in c["decode_step_vs_context"]]) for n, c in cv.items()}},
            {"title": "image encoder vs batch", "xlabel": "frames per call", "ylabel": "p50 ms",
             "series": {n: ([p["batch"] for p in c["image_encoder_vs_batch"]],
                            [p["p50_ms"] for p in c["image_encoder_vs_batch"]]) for n, c in cv.items()}},
        ]
        panels = [p for p in panels if any(xs for xs, _ in p["series"].values())]
        written.append(curves(out / "components_scaling.png", panels,
                              f"Scaling, {report['preset']} (random weights)"))
    return written


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
                        help="comma-separated backend:precision")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--ratios", default=",".join(RATIOS), help=f"comma-separated subset of {','.join(RATIOS)}, or none")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--curve-repeats", type=int, default=None, help="timed calls per curve point (default --repeats)")
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
    variants = [v for v in args.variants.split(",") if v]
    stages = [s for s in args.stages.split(",") if s]
    ratios = [] if args.ratios == "none" else [r for r in args.ratios.split(",") if r]
    if bad := [s for s in stages if s not in STAGES]:
        parser.error(f"--stages: unknown {bad}; allowed {','.join(STAGES)}")
    if bad := [r for r in ratios if r not in RATIOS]:
        parser.error(f"--ratios: unknown {bad}; allowed {','.join(RATIOS)} or none")
    if bad := [v for v in variants if v.partition(":")[2] not in ("fp32", "fp16")]:
        parser.error(f"--variants: {bad} must be backend:fp32 or backend:fp16")
    if args.repeats < 1 or args.warmup < 0 or args.cache_windows < 2 or args.context_windows < 0:
        parser.error("--repeats >= 1, --warmup >= 0, --cache-windows >= 2, --context-windows >= 0")
    report = run(args.preset, variants, stages, ratios, args.repeats, args.warmup,
                 _ints(args.contexts) if args.contexts else None, args.append_tokens, _ints(args.batch_sizes),
                 args.cache_windows, args.context_windows, not args.no_curves, args.curve_repeats or args.repeats,
                 args.engines, args.threads, command_line("benchmarks.components", argv), args.checkpoint_dir)
    write_json(args.out / "components.json", report)
    text = to_markdown(report)
    (args.out / "components.md").write_text(text)
    plot(report, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
