"""What every benchmark runs on: backend variants, the synthetic scene's windows, prompts and decoder contexts.

Nothing here computes a model stage: backends come from ``runtime.backends.create_backend``, frames from the
runtime's one synthetic scene (``runtime.sources.SyntheticSource``) sampled by ``runtime.windowing``, prompts from
``engine_format.prompt.streaming_prompt_ids(tokenizer.encode, instruction)`` and the streaming configuration from
``runtime.config``. The only thing made up is :func:`random_visual_rows`: feature rows of the right shape for
benchmarks whose cost depends only on the context *length* (decode steps, allocations), so that a 0.5B context can be
built on a 2-core CPU without minutes of vision encoders.

Variant specs are ``backend:precision[:device]``, e.g. ``onnxruntime:fp32``, ``pytorch:fp16:cuda``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine_format.prompt import StreamingPromptIds, streaming_prompt_ids
from runtime.backends import create_backend
from runtime.backends.base import ModelBackend
from runtime.backends.kv import KVCache
from runtime.config import BACKEND_NAMES, PRECISIONS, StreamingConfig, apply_overrides, load_config
from runtime.frames import Frame
from runtime.sources import SyntheticSource
from runtime.windowing import Window, WindowScheduler, sample_window_frames

logger = logging.getLogger(__name__)

#: Frame rate of the synthetic scene the benchmarks use.
SYNTHETIC_FPS = 30.0

#: Mean of |feature| of the random visual rows: the order of the projectors' outputs (the value does not change
#: what a decode call costs; finite, moderate values keep the logits finite).
FEATURE_STD = 0.5


@dataclass(frozen=True)
class Variant:
    """One backend configuration under test.

    Attributes:
        backend: ``pytorch``, ``onnxruntime`` or ``tensorrt``.
        precision: ``fp32`` or ``fp16``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
    """

    backend: str
    precision: str
    device: str = "cpu"

    @property
    def name(self) -> str:
        """``backend:precision``, plus ``:device`` when it is not the CPU (the report's key)."""
        base = f"{self.backend}:{self.precision}"
        return base if self.device == "cpu" else f"{base}:{self.device}"


def parse_variant(spec: str) -> Variant:
    """Parses ``backend:precision[:device]``.

    Raises:
        ValueError: Naming the spec and the allowed values.
    """
    parts = spec.split(":")
    if len(parts) == 4 and parts[2] == "cuda":  # pytorch:fp16:cuda:1
        parts = [parts[0], parts[1], f"cuda:{parts[3]}"]
    if len(parts) not in (2, 3) or parts[0] not in BACKEND_NAMES or parts[1] not in PRECISIONS:
        raise ValueError(
            f"variant {spec!r}: expected backend:precision[:device] with backend in {'|'.join(BACKEND_NAMES)} and "
            f"precision in {'|'.join(PRECISIONS)}, e.g. onnxruntime:fp32 or pytorch:fp16:cuda"
        )
    return Variant(parts[0], parts[1], parts[2] if len(parts) == 3 else "cpu")


def parse_variants(text: str) -> list[Variant]:
    """A comma-separated list of variant specs (see :func:`parse_variant`)."""
    return [parse_variant(s.strip()) for s in text.split(",") if s.strip()]


def build_backend(
    variant: Variant,
    preset: str,
    *,
    engines_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    threads: int = 2,
) -> ModelBackend:
    """Creates the backend of a variant through ``runtime.backends.create_backend``.

    Args:
        variant: The variant.
        preset: Synthetic preset (``tiny``, ``0.5b``, ``1.5b``).
        engines_dir: Exported engines of ``onnxruntime`` / ``tensorrt`` (default ``engines/<preset>``).
        checkpoint_dir: The ``pytorch`` backend's random-weight checkpoint (default ``checkpoints/<preset>``; written
            when missing).
        threads: Intra-op CPU threads (0 = the library's default).

    Returns:
        The backend.

    Raises:
        BackendError: If the backend cannot start (missing engines, unsupported device or precision).
    """
    if variant.backend == "pytorch":
        from mobile_videogpt.synthetic import ensure_synthetic_checkpoint  # torch: only for the pytorch backend

        model_dir, clip_dir = ensure_synthetic_checkpoint(preset, checkpoint_dir or Path("checkpoints") / preset)
        return create_backend("pytorch", model_dir=model_dir, clip_dir=clip_dir, precision=variant.precision,
                              device=variant.device, threads=threads)
    return create_backend(variant.backend, engines_dir=engines_dir or Path("engines") / preset,
                          precision=variant.precision, device=variant.device, threads=threads)


def bench_config(overrides: Mapping[str, Any] | None = None, config_path: Path | None = None) -> StreamingConfig:
    """The repository's ``streaming_config.yaml`` with a benchmark's overrides (validated as the CLI does)."""
    return apply_overrides(load_config(config_path), dict(overrides or {}))


def prompt_for(tokenizer: Any, config: StreamingConfig) -> StreamingPromptIds:
    """The streaming prompt the session builds: ``streaming_prompt_ids(tokenizer.encode, instruction)``."""
    return streaming_prompt_ids(tokenizer.encode, config.generation.instruction)


def scene_window(config: StreamingConfig, index: int) -> Window:
    """Window ``index`` of a stream starting at 0 s, as the session's scheduler numbers it."""
    scheduler = WindowScheduler(config.window.window_s, config.window.overlap_s, config.window.latest_wins)
    scheduler.set_origin(0.0)
    return scheduler.window(index)


def scene_frames(
    config: StreamingConfig, index: int, source: SyntheticSource | None = None
) -> tuple[Window, list[Frame]]:
    """The frames the session samples for window ``index`` of the synthetic scene (rendered at 30 fps).

    Args:
        config: Window length, overlap and frames per window.
        index: Window index.
        source: The scene (default a fresh ``SyntheticSource`` at 30 fps).

    Returns:
        The window and its sampled frames (their ``index`` is the stream frame number: the feature-cache key).
    """
    source = source or SyntheticSource(fps=SYNTHETIC_FPS, duration_s=600.0)
    window = scene_window(config, index)
    first, last = int(np.floor(window.t_start * source.fps)), int(np.ceil(window.t_end * source.fps))
    candidates = [Frame(i, i / source.fps, source.render(i)) for i in range(first, last + 1)]
    return window, sample_window_frames(candidates, window, config.window.frames_per_window)


def random_visual_rows(backend: ModelBackend, rng: np.random.Generator) -> list[np.ndarray]:
    """Image rows ``[F, 144, H]`` and video rows ``[C, 49, H]`` of random values, float32 on the host.

    Shapes come from ``backend.facts`` (2402 rows at the release geometry). Every backend's ``decode`` accepts host
    arrays; what a decode step costs depends on how many rows the context holds, not on their values.
    """
    f = backend.facts
    image = rng.standard_normal((f.num_frames, f.image_tokens_per_frame, f.hidden_size), dtype=np.float32)
    video = rng.standard_normal((f.num_chunks, f.video_tokens_per_chunk, f.hidden_size), dtype=np.float32)
    return [image * FEATURE_STD, video * FEATURE_STD]


def window_segments(prompt: StreamingPromptIds, visual: list[Any]) -> list[Any]:
    """One window's decoder segments as the decoder context appends them (without deferred closing tokens)."""
    return [list(prompt.window_prefix_ids), *visual, list(prompt.window_suffix_ids)]


def fill_context(
    backend: ModelBackend, kv: KVCache, prompt: StreamingPromptIds, windows: int, rng: np.random.Generator
) -> None:
    """Decodes the system prefix and ``windows`` windows of random visual rows into an empty ``kv``.

    The same ``decode`` calls the session makes (one per window), so the cache holds exactly the streaming context's
    positions. Each window after the first is preceded by its turn-closing ids (``<next><|im_end|>\\n``), as the
    context defers them.

    Raises:
        ValueError: If ``kv`` is not empty.
    """
    if kv.length:
        raise ValueError(f"fill_context needs an empty cache, got {kv.length} positions")
    backend.decode([list(prompt.system_ids)], kv)
    closing: list[int] = []
    for _ in range(windows):
        segments = window_segments(prompt, random_visual_rows(backend, rng))
        segments[0] = closing + segments[0]
        backend.decode(segments, kv)
        closing = [backend.action_token_ids.next, *prompt.turn_end_ids]
