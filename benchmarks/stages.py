"""The per-stage table: one window's stages timed through ``ModelBackend`` calls, any ``backend:precision:device``.

Used by ``benchmarks.components`` (CPU variants) and ``benchmarks.gpu`` (PyTorch on CUDA, TensorRT). The window is
first run through the runtime's own stages (``runtime.stages.ImageStage``, ``FrameSelectStage``, ``VideoStage``), and
the arrays those stages passed to the backend are recorded; each timed call then repeats one backend call on exactly
those inputs (the decoder calls get the segments ``DecoderContext.append_window`` builds: prompt ids and the stages'
image and video rows):

==================  =========================================================================================
stage               timed call
==================  =========================================================================================
preprocess          ``engine_format.preprocess.clip_branch`` (16 frames) + ``video_branch`` (8 frames), host
image_encoder       ``backend.encode_images`` (CLIP + image ETP, 16 frames)
frame_selection     ``backend.select_frames``
video_encoder       ``backend.encode_video`` (VideoMamba + pooling + video ETP, the 8 selected frames)
embed_tokens        ``backend.embed_tokens`` of the window's prompt ids
decoder_prefill     ``backend.decode`` of system prompt + window into an empty cache
decoder_append      ``backend.decode`` of the window onto a cache holding the system prompt
decode_step         ``backend.decode`` of one token onto a cache holding system prompt + window
==================  =========================================================================================

The KV cache is the backend's own (``allocate_kv``, updated in place); before each decoder call it is cut back to the
length the call starts from (``KVCache.truncate``, untimed). Variants are timed interleaved, round by round
(``benchmarks.common.time_interleaved``); the engine's own time (``stage_times_ms``) is recorded beside the wall time
of the call to show the host overhead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.common import fmt_ms, markdown_table, no_sync, paired_ratio, summarize_ms, time_call, time_interleaved
from benchmarks.fixtures import parse_variant, prompt_for, window_segments
from engine_format.preprocess import clip_branch, video_branch
from engine_format.prompt import StreamingPromptIds
from runtime.backends.base import Array, ImageFeatures, ModelBackend
from runtime.backends.kv import KVCache
from runtime.config import StreamingConfig
from runtime.feature_cache import FrameFeatureCache
from runtime.frames import Frame
from runtime.stages import FrameSelectStage, ImageStage, VideoStage, WindowWork
from runtime.windowing import Window

logger = logging.getLogger(__name__)

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
#: The ``stage_times_ms`` key of each stage's engine (the host-side stages have none).
ENGINE_KEYS = {
    "image_encoder": "image_encoder",
    "frame_selection": "frame_selection",
    "video_encoder": "video_encoder",
    "decoder_prefill": "decoder",
    "decoder_append": "decoder",
    "decode_step": "decoder",
}
DECODER_STAGES = ("decoder_prefill", "decoder_append", "decode_step")


class _InputRecorder:
    """Passes every call on to the backend and keeps the pixels the stages handed to the two encoders."""

    def __init__(self, backend: ModelBackend) -> None:
        self._backend = backend
        self.context_pixels: np.ndarray | None = None
        self.video_pixels: np.ndarray | None = None

    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        self.context_pixels = context_pixels
        return self._backend.encode_images(context_pixels)

    def encode_video(self, video_pixels: np.ndarray) -> Array:
        self.video_pixels = video_pixels
        return self._backend.encode_video(video_pixels)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


@dataclass
class PreparedWindow:
    """One variant's backend and the inputs each timed call starts from.

    Attributes:
        name: Variant name (``backend:precision[:device]``).
        backend: The backend.
        prompt: The streaming prompt ids.
        frames: The window's sampled frames.
        work: The window's stage record after the runtime's stages ran (features, selection, video rows).
        context_pixels: What ``ImageStage`` passed to ``encode_images`` ``[16, 3, 224, 224]``.
        video_pixels: What ``VideoStage`` passed to ``encode_video`` ``[8, 3, 224, 224]`` (``None`` when the video
            encoder was not run).
        kv: A cache of the backend for the decoder calls (``None`` without them).
        system_tokens: Positions of the system prompt.
        window_tokens: Positions one window appends.
        step_token: The token the decode steps feed (the arg-max after the window; ``<feedback>`` when the decoder
            was not run).
        segments: The window's decoder segments (prefix ids, image rows, video rows, suffix ids).
    """

    name: str
    backend: ModelBackend
    prompt: StreamingPromptIds
    frames: list[Frame]
    work: WindowWork
    context_pixels: np.ndarray
    video_pixels: np.ndarray | None
    kv: KVCache | None
    system_tokens: int
    window_tokens: int
    step_token: int
    segments: list[Any] = field(default_factory=list)

    @property
    def context_tokens(self) -> int:
        """System prompt + one window: the cache the decode step runs on."""
        return self.system_tokens + self.window_tokens


def prepare_window(
    name: str,
    backend: ModelBackend,
    tokenizer: Any,
    config: StreamingConfig,
    window: Window,
    frames: list[Frame],
    *,
    encode_video: bool = True,
    decoder: bool = True,
) -> PreparedWindow:
    """Runs one window through the runtime's stages once and keeps every stage's input.

    Args:
        name: Variant name.
        backend: The backend.
        tokenizer: Its tokenizer (``backend.load_tokenizer()``).
        config: Streaming configuration (prompt instruction, context limits, cache size).
        window: The window.
        frames: Its sampled frames.
        encode_video: Run ``VideoStage``; ``False`` puts zero video rows of the right shape in its place (decoder
            timings do not depend on the values), which saves minutes per call at the 0.5B geometry on a CPU.
        decoder: Prepare a KV cache (system prompt + window) for the decoder stages.

    Returns:
        The prepared inputs.
    """
    prompt = prompt_for(tokenizer, config)
    work = WindowWork(window, frames)
    recorder = _InputRecorder(backend)
    stages: list[Any] = [ImageStage(recorder, FrameFeatureCache(config.cache.max_frames)), FrameSelectStage(recorder)]  # type: ignore[arg-type]
    if encode_video:
        stages.append(VideoStage(recorder))  # type: ignore[arg-type]
    for stage in stages:
        stage.process(work)
    if not encode_video:
        f = backend.facts
        zeros = np.zeros((f.num_chunks, f.video_tokens_per_chunk, f.hidden_size), dtype=np.float32)
        work.video_tokens = zeros
    assert recorder.context_pixels is not None
    segments = window_segments(prompt, [work.image_tokens, work.video_tokens])
    window_tokens = len(prompt.window_prefix_ids) + backend.facts.num_visual_tokens + len(prompt.window_suffix_ids)
    kv = None
    step_token = backend.action_token_ids.feedback  # what the first decode step after a window feeds
    if decoder:
        kv = backend.allocate_kv(len(prompt.system_ids) + window_tokens + 8)
        backend.decode([list(prompt.system_ids)], kv)
        step_token = int(np.argmax(backend.decode(segments, kv)))
    return PreparedWindow(name, backend, prompt, frames, work, recorder.context_pixels, recorder.video_pixels, kv,
                          len(prompt.system_ids), window_tokens, step_token, segments)


def _cut(kv: KVCache, length: int) -> None:
    """Cuts ``kv`` back to ``length`` positions (it must hold at least that many)."""
    if kv.length < length:
        raise RuntimeError(f"KV cache holds {kv.length} positions, the timed call needs {length}")
    kv.truncate(length)


def stage_calls(p: PreparedWindow) -> dict[str, tuple[Callable[[], object], Callable[[], object] | None]]:
    """One backend call per stage, each with its untimed set-up (``None`` when it needs none); stages whose inputs
    were not prepared (video encoder, decoder) are absent."""
    b, w = p.backend, p.work
    images = np.stack([f.image for f in p.frames])
    selected = images[: b.facts.selected_frames]  # preprocessing cost does not depend on which frames
    ids = list(p.prompt.window_prefix_ids) + list(p.prompt.window_suffix_ids)
    calls: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "preprocess": (lambda: (clip_branch(images, b.clip_preprocess), video_branch(selected)), None),
        "image_encoder": (lambda: b.encode_images(p.context_pixels), None),
        "frame_selection": (lambda: b.select_frames(w.clip_features), None),
        "embed_tokens": (lambda: b.embed_tokens(ids), None),
    }
    if p.video_pixels is not None:
        video = p.video_pixels
        calls["video_encoder"] = (lambda: b.encode_video(video), None)
    if p.kv is not None:
        kv, system = p.kv, [list(p.prompt.system_ids)]
        calls["decoder_prefill"] = (lambda: b.decode(system + p.segments, kv), lambda: _cut(kv, 0))
        calls["decoder_append"] = (lambda: b.decode(p.segments, kv), lambda: _cut(kv, p.system_tokens))
        calls["decode_step"] = (lambda: b.decode([[p.step_token]], kv), lambda: _cut(kv, p.context_tokens))
    return calls


def engine_ms(backend: ModelBackend, stage: str) -> float | None:
    """The backend's own time of the last call of ``stage``'s engine, if it reports one."""
    key = ENGINE_KEYS.get(stage)
    times = backend.stage_times_ms()
    return float(times[key]) if key in times else None


def measure_stages(
    prepared: Sequence[PreparedWindow],
    stages: Sequence[str],
    repeats: int,
    warmup: int,
    sync: Callable[[], None] = no_sync,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Times every stage of every variant, interleaved round by round.

    Args:
        prepared: Variants.
        stages: Stages to time (subset of :data:`STAGES`).
        repeats: Rounds.
        warmup: Untimed calls per variant first.
        sync: Device synchronize.

    Returns:
        ``{"wall": {stage: {variant: samples}}, "engine": {stage: {variant: samples}}}``; ``preprocess`` is host
        code, the same for every backend, and is timed once under the key ``host``.

    Raises:
        ValueError: If a stage was not prepared (e.g. ``video_encoder`` without running the video encoder).
    """
    wall: dict[str, dict[str, list[float]]] = {}
    inner: dict[str, dict[str, list[float]]] = {}
    calls = {p.name: stage_calls(p) for p in prepared}
    for stage in stages:
        missing = [p.name for p in prepared if stage not in calls[p.name]]
        if missing:
            raise ValueError(f"stage {stage}: not prepared for {missing} (video encoder or decoder not run)")
        logger.info("stage %s", stage)
        if stage == "preprocess":
            fn, _ = calls[prepared[0].name][stage]
            wall[stage] = {"host": time_call(fn, repeats, warmup)}
            continue
        engine: dict[str, list[float]] = {p.name: [] for p in prepared}

        def recorded(p: PreparedWindow, fn: Callable[[], object], stage: str = stage,
                     engine: dict[str, list[float]] = engine) -> Callable[[], None]:
            def call() -> None:
                fn()
                ms = engine_ms(p.backend, stage)
                if ms is not None:
                    engine[p.name].append(ms)
            return call

        variants = {p.name: recorded(p, calls[p.name][stage][0]) for p in prepared}
        before = {p.name: calls[p.name][stage][1] for p in prepared if calls[p.name][stage][1] is not None}
        wall[stage] = time_interleaved(variants, repeats, warmup, sync, before)  # type: ignore[arg-type]
        inner[stage] = {k: v[-repeats:] for k, v in engine.items() if v}
    return {"wall": wall, "engine": inner}


def ratio_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Which variants are compared: each exported backend with PyTorch of the same device (fp32 with fp32, fp16 with
    fp16), and each fp16 variant with the fp32 one of its backend and device."""
    parsed = {n: parse_variant(n) for n in names}
    by_key = {(v.backend, v.precision, v.device): n for n, v in parsed.items()}
    pairs = []
    for name, v in parsed.items():
        torch_same = by_key.get(("pytorch", v.precision, v.device))
        if v.backend != "pytorch" and torch_same is not None:
            pairs.append((name, torch_same))
        fp32 = by_key.get((v.backend, "fp32", v.device))
        if v.precision == "fp16" and fp32 is not None:
            pairs.append((name, fp32))
    return pairs


def stage_ratios(wall: dict[str, dict[str, list[float]]], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Paired ratios per stage from interleaved samples (``{"<a> / <b>": {stage: paired ratio}}``)."""
    out: dict[str, dict[str, Any]] = {}
    for a, b in ratio_pairs(names):
        out[f"{a} / {b}"] = {s: paired_ratio(v[a], v[b]) for s, v in wall.items() if a in v and b in v}
    return out


def measure_projectors(p: PreparedWindow, repeats: int, warmup: int, sync: Callable[[], None] = no_sync
                       ) -> dict[str, Any] | None:
    """Image and video ETP timed apart on the PyTorch reference (inside the encoders in the backend API).

    Returns:
        Summaries, or ``None`` when the variant is not the ``pytorch`` backend or the video encoder was not run.
    """
    model = getattr(p.backend, "model", None)
    if model is None or p.video_pixels is None:
        return None
    import torch  # the pytorch backend is loaded, so torch is too

    feats = p.work.clip_features
    with torch.inference_mode():
        pixels = torch.from_numpy(p.video_pixels).to(model.device, model.dtype)
        tokens = model.encode_video(pixels)
        pooled = model.pool_video(tokens)
        return {
            "image_etp (16 frames)": summarize_ms(
                time_call(lambda: model.project_images(feats), repeats, warmup, sync)),
            "video_pool + video_etp": summarize_ms(
                time_call(lambda: model.project_video(model.pool_video(tokens)), repeats, warmup, sync)),
            "video_etp": summarize_ms(time_call(lambda: model.project_video(pooled), repeats, warmup, sync)),
        }


def _cell(s: dict[str, Any] | None) -> str:
    return f"{fmt_ms(s['p50_ms'])} / {fmt_ms(s['p95_ms'])} / {fmt_ms(s['p99_ms'])}" if s else "-"


def ratio_text(r: dict[str, Any]) -> str:
    """``median [p10-p90]`` of a paired ratio."""
    return f"{r['ratio_p50']:.2f} [{r['ratio_p10']:.2f}-{r['ratio_p90']:.2f}]"


def stages_markdown(stages: dict[str, dict[str, Any]], variants: Sequence[str],
                    ratios: dict[str, dict[str, Any]] | None = None) -> str:
    """The stage table (p50 / p95 / p99 ms per variant) and, when given, the ratio table."""
    rows = []
    for stage, per in stages.items():
        if "host" in per:
            rows.append([stage, *([_cell(per["host"])] + ["(host)"] * (len(variants) - 1))])
        else:
            rows.append([stage, *[_cell(per.get(v)) for v in variants]])
    out = [markdown_table(["stage", *[f"{v} p50/p95/p99 ms" for v in variants]], rows)]
    if ratios:
        names = list(ratios)
        timed = [s for s in stages if s != "preprocess"]
        out += ["", "Ratios per stage (median of per-round ratios [p10-p90]; < 1 means the first is faster):", "",
                markdown_table(["stage", *names],
                               [[s, *[ratio_text(ratios[n][s]) if s in ratios[n] else "-" for n in names]]
                                for s in timed])]
    return "\n".join(out)
