"""GPU benchmark of the PyTorch reference (fp16 and fp32) at the 0.5B geometry, with TensorRT when asked for.

Usage (``make bench-gpu``)::

    python -m benchmarks.gpu --out artifacts/bench_gpu                    # CUDA, 0.5b, fp16 + fp32 (~1 min on an H200)
    python -m benchmarks.gpu --out /tmp/g --device cpu --preset tiny --quick   # CPU smoke mode (tests)

Writes random weights on the spot (``ensure_synthetic_checkpoint(preset, --checkpoint-dir, with_tokenizer=False)``:
the GPU image has no Qwen2.5 vocabulary, so prompts are raw token ids with the streaming prompt's lengths), loads the
reference once per precision, and measures, warming up and synchronizing CUDA around every timed call:

* per-stage latency of one 16-frame window (CPU preprocessing, CLIP image encoder, frame selection, VideoMamba,
  projectors, decoder prefill of system + window, decoder append of a window onto the system prompt, one decode step)
  for every precision, timed interleaved stage by stage, plus the fp16 / fp32 ratio of each stage;
* scaling curves in the first precision: image encoder vs batch size, prefill vs prompt length, window append and
  decode step vs existing context length (the KV cache is built once and sliced);
* decode tokens/s (greedy steps after the window prompt);
* streaming windows/s: a model-side loop over consecutive 2 s windows of the synthetic exercise scene with 0.5 s
  overlap (per-frame feature cache, window appended to the KV context, context reset after ``max_windows``), timed
  window by window. It has no capture thread or scheduler (those need the CPU runtime); it is the GPU's throughput.

With ``--tensorrt-engines DIR`` the same stages run through the runtime's TensorRT ``ModelBackend``
(``runtime.backends.create_backend("tensorrt", ...)``), interleaved with PyTorch fp16.

Depends only on torch, numpy, safetensors, transformers, opencv and pillow (what the GPU image has): no onnxruntime,
psutil, matplotlib or yaml. Outputs ``gpu.json`` and ``gpu.md`` under ``--out``; ``python -m benchmarks.report``
draws the plots from the JSON on any machine with matplotlib.
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
import torch

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
    time_call,
    time_interleaved,
    write_json,
)
from mobile_videogpt import frame_selection
from mobile_videogpt.checkpoint import load_model
from mobile_videogpt.model import KVCache, MobileVideoGPT
from mobile_videogpt.synthetic import ensure_synthetic_checkpoint

logger = logging.getLogger("benchmarks.gpu")

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}

# Lengths of the streaming prompt pieces (mobile_videogpt.prompt.streaming_prompt_ids with the Qwen2.5 tokenizer);
# the ids themselves are arbitrary in-vocabulary ids because the GPU image has no tokenizer.
SYSTEM_TOKENS = 55
WINDOW_PREFIX_TOKENS = 3
WINDOW_SUFFIX_TOKENS = 13
FPS = 30.0
WINDOW_S = 2.0
OVERLAP_S = 0.5
FRAMES_PER_WINDOW = 16
MAX_WINDOWS = 4

# The stage names shared with the CPU benchmarks (components.py, stream.py) and the report.
STAGE_PREPROCESS = "preprocess"
STAGE_IMAGE = "image_encoder"
STAGE_SELECT = "frame_selection"
STAGE_VIDEO = "video_encoder"
STAGE_PROJECT = "projectors"
STAGE_PREFILL = "decoder_prefill"
STAGE_APPEND = "decoder_append"
STAGE_STEP = "decode_step"
STAGE_ACTION = "action_decision"


@dataclass(frozen=True)
class Sizes:
    """How much to measure.

    Attributes:
        repeats: Timed calls per stage and per curve point.
        warmup: Untimed calls first.
        batch_sizes: Image-encoder batch sizes.
        prefill_lengths: Prompt lengths of the prefill curve.
        context_windows: Windows already in the context for the append / decode-step curves.
        decode_tokens: Greedy steps for tokens/s.
        stream_windows: Timed windows of the streaming loop.
        stream_warmup: Untimed windows before them.
    """

    repeats: int
    warmup: int
    batch_sizes: tuple[int, ...]
    prefill_lengths: tuple[int, ...]
    context_windows: tuple[int, ...]
    decode_tokens: int
    stream_windows: int
    stream_warmup: int


FULL = Sizes(10, 2, (1, 2, 4, 8, 16), (256, 1024, 2418, 4836, 9672), (0, 1, 2, 3), 64, 12, 1)
#: Smoke mode (tests, CPU): every code path once, no warm-up, so its numbers are not measurements.
QUICK = Sizes(1, 0, (1, 2), (64, 256), (0, 1), 4, 1, 0)


class RawPrompt:
    """The streaming prompt's pieces as raw token ids of the right lengths (no tokenizer needed)."""

    def __init__(self, vocab_size: int) -> None:
        """Picks deterministic ids below ``vocab_size``.

        Args:
            vocab_size: Embedding rows of the model.
        """
        rng = np.random.default_rng(7)
        draw = lambda n: [int(i) for i in rng.integers(1000, min(vocab_size, 100_000), n)]  # noqa: E731
        self.system = draw(SYSTEM_TOKENS)
        self.window_prefix = draw(WINDOW_PREFIX_TOKENS)
        self.window_suffix = draw(WINDOW_SUFFIX_TOKENS)
        # Stand-ins for <next>/<feedback>/<correct>: the synthetic vocabulary has no action rows.
        self.action_ids = [vocab_size - 3, vocab_size - 2, vocab_size - 1]


@dataclass
class Window:
    """Everything one window's stages need, computed once per precision.

    Attributes:
        context_pixels: CLIP-branch pixels [16, 3, 224, 224] on the device, model dtype.
        clip_features: [16, 196, 768].
        selected_pixels: Video-branch pixels of the 8 selected frames.
        video_tokens: VideoMamba tokens [8, 196, 576].
        window_embeds: Prefix + visual + suffix embeddings [1, W, H].
        system_embeds: [1, 55, H].
        system_past: KV of the system prompt.
        window_past: KV after system + window.
        step_embeds: One token's embedding [1, 1, H].
    """

    context_pixels: torch.Tensor
    clip_features: torch.Tensor
    selected_pixels: torch.Tensor
    video_tokens: torch.Tensor
    window_embeds: torch.Tensor
    system_embeds: torch.Tensor
    system_past: KVCache
    window_past: KVCache
    step_embeds: torch.Tensor


def synthetic_frames(indices: Sequence[int], size: tuple[int, int] = (240, 320)) -> np.ndarray:
    """Frames of the deterministic synthetic exercise scene.

    Args:
        indices: Frame indices (at ``FPS``).
        size: ``(height, width)``.

    Returns:
        RGB uint8 [len(indices), H, W, 3].
    """
    from runtime.sources import SyntheticSource  # cv2 + numpy only

    source = SyntheticSource(fps=FPS, duration_s=max(1.0, (max(indices) + 1) / FPS), size=size)
    return np.stack([source.render(i) for i in indices])


def window_frame_indices(k: int) -> list[int]:
    """The 16 frame indices sampled for window ``k`` (bin centres, nearest frame; runtime.windowing's rule).

    Args:
        k: Window index.

    Returns:
        Frame indices at ``FPS``.
    """
    from runtime.windowing import Window as RtWindow, sample_times

    stride = WINDOW_S - OVERLAP_S
    times = sample_times(RtWindow(k, k * stride, k * stride + WINDOW_S), FRAMES_PER_WINDOW)
    # Nearest frame, ties to the earlier one, as sample_window_frames picks from a full-rate buffer.
    return [int(np.ceil(t * FPS - 0.5)) for t in times]


def kv_bytes(past: KVCache) -> int:
    """Bytes held by a flat KV cache."""
    return int(sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in past))


def slice_past(past: KVCache, length: int) -> KVCache:
    """The first ``length`` positions of a KV cache."""
    return [(k[:, :, :length], v[:, :, :length]) for k, v in past]


def visual_rows(model: MobileVideoGPT, clip_features: torch.Tensor, video_pixels: torch.Tensor) -> torch.Tensor:
    """Selection, VideoMamba and both projectors for one window; returns the merged visual rows [2402, H]."""
    selected = model.select_frames(model.score_frames(clip_features))
    clip = frame_selection.gather_selected_frames(video_pixels, selected.to(video_pixels.device))
    tokens = model.encode_video(clip)
    return model.merge_visual(model.project_images(clip_features), model.project_video(model.pool_video(tokens)))


def prepare_window(model: MobileVideoGPT, prompt: RawPrompt, frames: np.ndarray) -> Window:
    """Runs one window through every stage once and keeps the intermediates the timed calls start from.

    Args:
        model: The reference.
        prompt: Raw-id prompt.
        frames: 16 RGB frames.

    Returns:
        The window's inputs per stage.
    """
    device, dtype = model.device, model.dtype
    video_px, context_px = model.preprocess(frames)
    context_px = context_px.to(device, dtype)
    video_px = video_px.to(device, dtype)
    feats = model.encode_images(context_px)
    selected = model.select_frames(model.score_frames(feats))
    clip = frame_selection.gather_selected_frames(video_px, selected.to(device))
    tokens = model.encode_video(clip)
    visual = model.merge_visual(model.project_images(feats), model.project_video(model.pool_video(tokens)))
    window_embeds = model.build_inputs_embeds(prompt.window_prefix, visual, prompt.window_suffix)[None]
    system_embeds = model.embed_tokens(prompt.system)[None]
    _, system_past = model.decode_step(system_embeds)
    logits, window_past = model.decode_step(window_embeds, system_past)
    step_embeds = model.embed_tokens([int(logits[0].argmax())])[None]
    return Window(context_px, feats, clip, tokens, window_embeds, system_embeds, system_past, window_past, step_embeds)


def stage_calls(model: MobileVideoGPT, w: Window, frames: np.ndarray) -> dict[str, Callable[[], object]]:
    """One call per stage of a window, each starting from the stored intermediates.

    Args:
        model: The reference.
        w: Prepared window.
        frames: The window's 16 RGB frames (for preprocessing).

    Returns:
        Stage name -> call.
    """
    prefill_embeds = torch.cat([w.system_embeds, w.window_embeds], dim=1)
    return {
        STAGE_PREPROCESS: lambda: model.preprocess(frames),
        STAGE_IMAGE: lambda: model.encode_images(w.context_pixels),
        STAGE_SELECT: lambda: model.select_frames(model.score_frames(w.clip_features)),
        STAGE_VIDEO: lambda: model.encode_video(w.selected_pixels),
        STAGE_PROJECT: lambda: model.merge_visual(
            model.project_images(w.clip_features), model.project_video(model.pool_video(w.video_tokens))
        ),
        STAGE_PREFILL: lambda: model.decode_step(prefill_embeds),
        STAGE_APPEND: lambda: model.decode_step(w.window_embeds, w.system_past),
        STAGE_STEP: lambda: model.decode_step(w.step_embeds, w.window_past),
    }


def measure_stages(
    models: dict[str, MobileVideoGPT], windows: dict[str, Window], frames: np.ndarray, sizes: Sizes, sync: Callable[[], None]
) -> dict[str, Any]:
    """Per-stage latency of every precision, interleaved stage by stage, plus ratios against the last precision.

    Args:
        models: Precision -> model.
        windows: Precision -> prepared window.
        frames: The window's frames.
        sizes: Repeats.
        sync: Device synchronize.

    Returns:
        ``{"stages": {stage: {precision: summary}}, "ratios": {"fp16/fp32": {stage: paired ratio}}}``.
    """
    calls = {p: stage_calls(models[p], windows[p], frames) for p in models}
    names = list(next(iter(calls.values())))
    stages: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, Any]] = {}
    precisions = list(models)
    for stage in names:
        logger.info("stage %s: %s", stage, ", ".join(precisions))
        if stage == STAGE_PREPROCESS:  # CPU work, independent of the model precision
            stages[stage] = {"cpu": summarize_ms(time_call(calls[precisions[0]][stage], sizes.repeats, sizes.warmup))}
            continue
        samples = time_interleaved({p: calls[p][stage] for p in precisions}, sizes.repeats, sizes.warmup, sync)
        stages[stage] = {p: summarize_ms(s) for p, s in samples.items()}
        for p in precisions[:-1]:
            ratios.setdefault(f"{p}/{precisions[-1]}", {})[stage] = paired_ratio(samples[p], samples[precisions[-1]])
    return {"stages": stages, "ratios": ratios}


def measure_curves(model: MobileVideoGPT, w: Window, sizes: Sizes, sync: Callable[[], None]) -> dict[str, Any]:
    """Scaling curves: image encoder vs batch, prefill vs length, append and decode step vs context length.

    Args:
        model: The reference (first precision).
        w: Its prepared window.
        sizes: Points and repeats.
        sync: Device synchronize.

    Returns:
        Curve name -> list of points (x plus a latency summary).
    """
    curves: dict[str, list[dict[str, Any]]] = {"image_encoder_vs_batch": [], "prefill_vs_length": []}
    for b in sizes.batch_sizes:
        px = w.context_pixels[torch.arange(b) % w.context_pixels.shape[0]]
        s = summarize_ms(time_call(lambda: model.encode_images(px), sizes.repeats, sizes.warmup, sync))
        curves["image_encoder_vs_batch"].append({"batch": b, **s, "per_frame_p50_ms": s["p50_ms"] / b})
        logger.info("image encoder batch %d: p50 %.2f ms", b, s["p50_ms"])
    window_len = w.window_embeds.shape[1]
    reps = -(-max(sizes.prefill_lengths) // window_len)
    long_embeds = w.window_embeds.repeat(1, reps, 1)
    for n in sizes.prefill_lengths:
        emb = long_embeds[:, :n]
        s = summarize_ms(time_call(lambda: model.decode_step(emb), sizes.repeats, sizes.warmup, sync))
        curves["prefill_vs_length"].append({"tokens": n, **s, "tokens_per_s": n / s["p50_ms"] * 1e3})
        logger.info("prefill %d tokens: p50 %.2f ms", n, s["p50_ms"])
    # One cache of system + max windows, sliced to each context length (slicing is exact for a causal decoder).
    max_windows = max(sizes.context_windows)
    past = w.system_past
    for _ in range(max_windows):
        _, past = model.decode_step(w.window_embeds, past)
    curves["append_vs_context"], curves["decode_step_vs_context"] = [], []
    for k in sizes.context_windows:
        ctx = SYSTEM_TOKENS + k * window_len
        sub = slice_past(past, ctx)
        s = summarize_ms(time_call(lambda: model.decode_step(w.window_embeds, sub), sizes.repeats, sizes.warmup, sync))
        curves["append_vs_context"].append({"context_tokens": ctx, "windows_in_context": k, "appended_tokens": window_len,
                                            "kv_bytes": kv_bytes(sub), **s})
        s = summarize_ms(time_call(lambda: model.decode_step(w.step_embeds, sub), sizes.repeats, sizes.warmup, sync))
        curves["decode_step_vs_context"].append({"context_tokens": ctx, "kv_bytes": kv_bytes(sub), **s})
        logger.info("context %d tokens: append p50 %.2f ms", ctx, curves["append_vs_context"][-1]["p50_ms"])
    return curves


def measure_decode(model: MobileVideoGPT, w: Window, tokens: int, sync: Callable[[], None]) -> dict[str, Any]:
    """Greedy decoding after the window prompt: per-step latency and tokens/s.

    Args:
        model: The reference.
        w: Prepared window (its ``window_past`` is the prompt's cache).
        tokens: Steps to time (after one untimed step).
        sync: Device synchronize.

    Returns:
        Step latency summary, tokens/s from the median step and from the wall time.
    """
    past, embeds = w.window_past, w.step_embeds
    logits, past = model.decode_step(embeds, past)  # warm-up step
    samples = []
    sync()
    wall = time.perf_counter()
    for _ in range(tokens):
        embeds = model.embed_tokens([int(logits[0].argmax())])[None]
        start = time.perf_counter()
        logits, past = model.decode_step(embeds, past)
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    wall = time.perf_counter() - wall
    s = summarize_ms(samples)
    return {"step": s, "tokens": tokens, "context_tokens_start": w.window_past[0][0].shape[2],
            "tokens_per_s_p50": 1e3 / s["p50_ms"], "tokens_per_s_wall": tokens / wall}


def measure_stream(model: MobileVideoGPT, prompt: RawPrompt, n_windows: int, warmup: int,
                   sync: Callable[[], None]) -> dict[str, Any]:
    """Model-side streaming loop over consecutive overlapping windows of the synthetic scene.

    Per window: preprocess and encode only the frames not cached from the previous window (0.5 s overlap shares 4
    of 16), selection, VideoMamba, projectors, append to the KV context (reset to the system prompt after
    ``MAX_WINDOWS``), action decision on the last position's logits. The first ``warmup`` windows are untimed.

    Args:
        model: The reference.
        prompt: Raw-id prompt.
        n_windows: Timed windows.
        warmup: Untimed windows first.
        sync: Device synchronize.

    Returns:
        windows/s, per-window and per-stage latency summaries, frames encoded, KV bytes.
    """
    device, dtype = model.device, model.dtype
    indices = [window_frame_indices(k) for k in range(n_windows + warmup)]
    all_idx = sorted({i for idx in indices for i in idx})
    rendered = dict(zip(all_idx, synthetic_frames(all_idx)))
    _, system_past = model.decode_step(model.embed_tokens(prompt.system)[None])
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # frame -> (video pixels, CLIP features)
    past, in_context = system_past, 0
    stage_ms: dict[str, list[float]] = {}
    totals: list[float] = []
    encoded: list[int] = []
    actions: list[int] = []
    max_kv = 0
    wall_start = 0.0

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        stage_ms.setdefault(stage, []).append((time.perf_counter() - start) * 1e3)
        return out

    for k, idx in enumerate(indices):
        if k == warmup:  # the windows before were the warm-up
            stage_ms.clear()
            sync()
            wall_start = time.perf_counter()
        t0 = time.perf_counter()
        new = [i for i in dict.fromkeys(idx) if i not in cache]
        if new:
            v_px, c_px = timed(STAGE_PREPROCESS, lambda: model.preprocess(np.stack([rendered[i] for i in new])))
            feats = timed(STAGE_IMAGE, lambda: model.encode_images(c_px.to(device, dtype)))
            for j, i in enumerate(new):
                cache[i] = (v_px[j].to(device, dtype), feats[j])
        encoded.append(len(new))
        video_px = torch.stack([cache[i][0] for i in idx])
        clip_feats = torch.stack([cache[i][1] for i in idx])
        selected = timed(STAGE_SELECT, lambda: model.select_frames(model.score_frames(clip_feats)))
        tokens = timed(STAGE_VIDEO, lambda: model.encode_video(
            frame_selection.gather_selected_frames(video_px, selected.to(video_px.device))))
        visual = timed(STAGE_PROJECT, lambda: model.merge_visual(
            model.project_images(clip_feats), model.project_video(model.pool_video(tokens))))
        if in_context == MAX_WINDOWS:
            past, in_context = system_past, 0
        embeds = model.build_inputs_embeds(prompt.window_prefix, visual, prompt.window_suffix)[None]
        logits, past = timed(STAGE_APPEND, lambda: model.decode_step(embeds, past))
        in_context += 1
        actions.append(timed(STAGE_ACTION, lambda: int(torch.softmax(logits[0, prompt.action_ids].float(), -1).argmax())))
        max_kv = max(max_kv, kv_bytes(past))
        for i in [i for i in cache if i < min(idx)]:  # frames before this window are never needed again
            del cache[i]
        sync()
        if k >= warmup:
            totals.append((time.perf_counter() - t0) * 1e3)
    wall = time.perf_counter() - wall_start
    return {
        "windows": n_windows,
        "windows_per_s": n_windows / wall,
        "window": summarize_ms(totals),
        "stages": {s: summarize_ms(v) for s, v in stage_ms.items()},
        "frames_encoded_per_window": encoded[warmup:],
        "warmup_windows": warmup,
        "max_windows_in_context": MAX_WINDOWS,
        "kv_bytes_max": max_kv,
        "stride_s": WINDOW_S - OVERLAP_S,
        "real_time_factor": (wall / n_windows) / (WINDOW_S - OVERLAP_S),
    }


def measure_tensorrt(engines_dir: Path, model: MobileVideoGPT, w: Window, sizes: Sizes, sync: Callable[[], None]) -> dict[str, Any]:
    """TensorRT stages through the runtime's ModelBackend, interleaved with the PyTorch fp16 model.

    Args:
        engines_dir: Folder with the TensorRT engines and manifest.
        model: PyTorch fp16 reference for the side-by-side.
        w: Its prepared window.
        sizes: Repeats.
        sync: Device synchronize.

    Returns:
        Per-stage summaries of both and the TensorRT / PyTorch ratio.
    """
    from runtime.backends import create_backend  # only imported when TensorRT is asked for

    backend = create_backend("tensorrt", engines_dir=engines_dir, precision="fp16")
    try:
        ctx_np = w.context_pixels.float().cpu().numpy()
        feats_np = w.clip_features.float().cpu().numpy()
        sel_np = w.selected_pixels.float().cpu().numpy()
        emb_np = w.window_embeds.float().cpu().numpy()
        pos = np.arange(emb_np.shape[1], dtype=np.int64)[None]
        pairs = {
            STAGE_IMAGE: (lambda: backend.encode_images(ctx_np), lambda: model.encode_images(w.context_pixels)),
            STAGE_SELECT: (lambda: backend.select_frames(feats_np),
                           lambda: model.select_frames(model.score_frames(w.clip_features))),
            STAGE_VIDEO: (lambda: backend.encode_video(sel_np), lambda: model.encode_video(w.selected_pixels)),
            STAGE_PREFILL: (lambda: backend.decode(emb_np, None, pos), lambda: model.decode_step(w.window_embeds)),
        }
        out: dict[str, Any] = {"status": "measured", "engines_dir": str(engines_dir), "stages": {}, "ratios": {}}
        for stage, (trt_fn, pt_fn) in pairs.items():
            samples = time_interleaved({"tensorrt": trt_fn, "pytorch_fp16": pt_fn}, sizes.repeats, sizes.warmup, sync)
            out["stages"][stage] = {k: summarize_ms(v) for k, v in samples.items()}
            out["ratios"][stage] = paired_ratio(samples["tensorrt"], samples["pytorch_fp16"])
        return out
    finally:
        backend.close()


def run(
    preset: str,
    device: str,
    precisions: list[str],
    sizes: Sizes,
    checkpoint_dir: Path,
    scan_impl: str,
    tensorrt_engines: Path | None,
    command: str,
) -> dict[str, Any]:
    """Runs every GPU measurement.

    Args:
        preset: Synthetic preset.
        device: ``cuda`` or ``cpu``.
        precisions: Model precisions; the first one is used for the curves and the streaming loop.
        sizes: What to measure.
        checkpoint_dir: Where the random-weight checkpoint is (or is written).
        scan_impl: VideoMamba selective-scan implementation.
        tensorrt_engines: TensorRT engines to compare, or ``None``.
        command: Command line for the report.

    Returns:
        The report.
    """
    started = time.perf_counter()
    sync = cuda_sync_fn(device)
    t = time.perf_counter()
    model_dir, clip_dir = ensure_synthetic_checkpoint(preset, checkpoint_dir, with_tokenizer=False)
    checkpoint_s = time.perf_counter() - t
    models: dict[str, MobileVideoGPT] = {}
    load_s: dict[str, float] = {}
    for p in precisions:
        t = time.perf_counter()
        models[p] = load_model(model_dir, clip_dir, dtype=DTYPES[p], device=device, scan_impl=scan_impl)
        load_s[p] = time.perf_counter() - t
    first = models[precisions[0]]
    prompt = RawPrompt(first.vocab_size)
    frames = synthetic_frames(window_frame_indices(0))
    with torch.inference_mode():
        windows = {p: prepare_window(models[p], prompt, frames) for p in precisions}
        report = report_header("gpu", command, preset=preset, backend="pytorch", precision=",".join(precisions),
                               threads=torch.get_num_threads())
        report["device"] = device
        report["settings"] = {
            "scan_impl": scan_impl,
            "attn_implementation": first.lm.config._attn_implementation,
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32 if device.startswith("cuda") else None,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if device.startswith("cuda") else None,
            "sizes": sizes.__dict__,
            "window_tokens": int(windows[precisions[0]].window_embeds.shape[1]),
            "system_tokens": SYSTEM_TOKENS,
            "prompt_ids": "raw ids with the streaming prompt's lengths (no tokenizer on the GPU image)",
        }
        report["setup_s"] = {"checkpoint": checkpoint_s, "load": load_s}
        report.update(measure_stages(models, windows, frames, sizes, sync))
        report["curves"] = measure_curves(first, windows[precisions[0]], sizes, sync)
        report["decode"] = measure_decode(first, windows[precisions[0]], sizes.decode_tokens, sync)
        report["stream"] = measure_stream(first, prompt, sizes.stream_windows, sizes.stream_warmup, sync)
        if tensorrt_engines is not None:
            if "fp16" not in models:
                raise ValueError("--tensorrt-engines is compared with PyTorch fp16: include fp16 in --precisions")
            report["tensorrt"] = measure_tensorrt(tensorrt_engines, models["fp16"], windows["fp16"], sizes, sync)
        else:
            report["tensorrt"] = {"status": "not requested (pass --tensorrt-engines DIR)"}
    report["memory"] = {"peak_rss_mb": peak_rss_mb()}
    if device.startswith("cuda"):
        report["memory"]["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    report["wall_s"] = time.perf_counter() - started
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """Renders the GPU report's tables.

    Args:
        report: ``run``'s output.

    Returns:
        Markdown text.
    """
    precisions = report["precision"].split(",")
    rows = []
    for stage, per in report["stages"].items():
        cells = []
        for p in precisions:
            s = per.get(p) or per.get("cpu")
            cells.append(f"{fmt_ms(s['p50_ms'])} / {fmt_ms(s['p95_ms'])} / {fmt_ms(s['p99_ms'])}")
        ratio = "; ".join(f"{k}: {r[stage]['ratio_p50']:.2f} [{r[stage]['ratio_p10']:.2f}-{r[stage]['ratio_p90']:.2f}]"
                          for k, r in report["ratios"].items() if stage in r)
        rows.append([stage, *cells, ratio or "-"])
    out = [f"### GPU stages ({report['preset']}, {report['device']}, random weights)", "",
           f"Machine: {machine_line(report)}", "",
           markdown_table(["stage", *[f"{p} p50/p95/p99 ms" for p in precisions], "ratio (median [p10-p90])"], rows)]
    d, s = report["decode"], report["stream"]
    out += ["", f"Decode: {d['tokens_per_s_p50']:.1f} tokens/s (median step {fmt_ms(d['step']['p50_ms'])} ms, "
            f"context {d['context_tokens_start']}). Streaming: {s['windows_per_s']:.2f} windows/s over {s['windows']} "
            f"windows (window p50 {fmt_ms(s['window']['p50_ms'])} ms, real-time factor {s['real_time_factor']:.3f}); "
            f"KV max {s['kv_bytes_max'] / 2**20:.1f} MiB."]
    c = report["curves"]
    out += ["", markdown_table(["context tokens", "append window p50 ms", "decode step p50 ms", "KV MiB"], [
        [a["context_tokens"], fmt_ms(a["p50_ms"]), fmt_ms(b["p50_ms"]), f"{a['kv_bytes'] / 2**20:.1f}"]
        for a, b in zip(c["append_vs_context"], c["decode_step_vs_context"])])]
    out += ["", markdown_table(["prefill tokens", "p50 ms", "tokens/s"],
                               [[p["tokens"], fmt_ms(p["p50_ms"]), f"{p['tokens_per_s']:.0f}"] for p in c["prefill_vs_length"]])]
    out += ["", markdown_table(["image batch", "p50 ms", "per frame ms"],
                               [[p["batch"], fmt_ms(p["p50_ms"]), fmt_ms(p["per_frame_p50_ms"])] for p in c["image_encoder_vs_batch"]])]
    out += ["", f"TensorRT: {report['tensorrt']['status']}"]
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
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 windows, short curves (smoke tests)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="default checkpoints/<preset>")
    parser.add_argument("--scan-impl", default="chunked", help="VideoMamba selective scan (ref, chunked)")
    parser.add_argument("--tensorrt-engines", type=Path, default=None, help="TensorRT engines to time side by side")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device (use --device cpu for the smoke mode)")
    precisions = (args.precisions or ("fp16,fp32" if args.device.startswith("cuda") else "fp32")).split(",")
    unknown = [p for p in precisions if p not in DTYPES]
    if unknown:
        parser.error(f"--precisions: unknown {unknown}; allowed {sorted(DTYPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args.preset, args.device, precisions, QUICK if args.quick else FULL,
                 args.checkpoint_dir or Path("checkpoints") / args.preset, args.scan_impl, args.tensorrt_engines,
                 command_line("benchmarks.gpu", argv))
    write_json(args.out / "gpu.json", report)
    text = to_markdown(report)
    (args.out / "gpu.md").write_text(text)
    print(text)
    print(f"written {args.out / 'gpu.json'} and {args.out / 'gpu.md'} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
