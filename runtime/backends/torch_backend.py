"""The ``pytorch`` backend: the reference model's stage methods behind the ModelBackend API, on CPU or CUDA.

It is the numerical reference the exported backends are compared with, and the backend that runs without exported
engines. ``device`` (``cpu``, ``cuda``, ``cuda:N``) is an ordinary setting: on a GPU the visual features stay
device-resident torch tensors from ``encode_images`` to ``decode`` (only pixels go up, only logits come down), and the
KV cache is a preallocated in-place cache on the device (:class:`~runtime.backends.kv_torch.TorchCacheKV`).

The GPU fast path (``docs/gpu.md``) is a set of settings, each tested against the reference path and off by default:
``scan_impl: triton`` (the fused scan kernel), ``preprocess: device`` (both preprocessing branches on the device from
uint8 frames uploaded once, :mod:`mobile_videogpt.preprocess_device`), ``cuda_graphs: true`` (the encoders per batch
size and the decode step replayed from CUDA graphs, :mod:`runtime.backends.torch_graphs`), ``attention: sdpa_causal``
(no mask tensor, so the window append can use the flash kernel, :mod:`mobile_videogpt.attention`) and
``precision: fp16``.

This module (with ``kv_torch`` and ``torch_graphs``) is the only part of the runtime that imports torch, transformers
and the reference package.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from engine_format import FormatError
from engine_format.generation import load_generation_config
from engine_format.manifest import Manifest, ManifestError
from engine_format.tokenizer import Tokenizer
from engine_format.vocab import IMAGE_TOKEN, ActionTokenIds, load_action_tokens, plan_action_token_ids
from mobile_videogpt import attention as causal_attention
from mobile_videogpt.checkpoint import CheckpointError, load_model, resolve_checkpoint_dir
from mobile_videogpt.config import ModelConfigError
from mobile_videogpt.facts import model_facts
from mobile_videogpt.preprocess_device import clip_branch_device, upload_frames, video_branch_device
from mobile_videogpt.selective_scan import get_scan_impl, interpreter_enabled
from mobile_videogpt.synthetic import is_synthetic
from mobile_videogpt.vocab import extend_tokenizer
from runtime.backends.base import BackendError, ImageFeatures, ModelBackend, Segment, check_token_ids
from runtime.backends.kv import KVCache
from runtime.backends.kv_torch import TorchCacheKV
from runtime.config import ATTENTION_NAMES, PREPROCESS_NAMES, SCAN_IMPL_NAMES

logger = logging.getLogger(__name__)

PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class TorchBackend(ModelBackend):
    """The reference model (``mobile_videogpt.model.MobileVideoGPT``) as a streaming backend.

    Args:
        model_dir: Checkpoint directory (config.json, safetensors, tokenizer files).
        clip_dir: CLIP directory.
        precision: ``fp32`` or ``fp16``; fp16 needs a CUDA device (CPU half matmuls are slow and not the reference).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        scan_impl: Selective-scan implementation: ``chunked`` (fast PyTorch), ``ref`` (the golden loop) or
            ``triton`` (the fused kernel; CUDA, or the CPU under ``TRITON_INTERPRET=1`` for tests).
        threads: torch intra-op threads for this process (0 keeps torch's default).
        tokenizer_dir: Where the extended tokenizer is (an engines directory's ``tokenizer``); default: the
            checkpoint's tokenizer, extended with the action tokens in memory.
        preprocess: ``cpu`` (the reference, ``engine_format.preprocess`` on the host) or ``device`` (uint8 frames
            uploaded once, both branches in torch on ``device``).
        cuda_graphs: Replay the encoders (per batch size) and the decode step from CUDA graphs (CUDA only).
        attention: ``sdpa`` (transformers' SDPA with its mask) or ``sdpa_causal`` (no mask tensor).

    Raises:
        BackendError: For an unknown precision, scan, preprocessing or attention name, fp16 or CUDA graphs or the
            Triton scan on a CPU, a missing CUDA device, a missing package or an unloadable checkpoint.
    """

    name = "pytorch"

    def __init__(
        self,
        model_dir: str | Path,
        clip_dir: str | Path,
        precision: str = "fp32",
        device: str = "cpu",
        scan_impl: str = "chunked",
        threads: int = 0,
        tokenizer_dir: str | Path | None = None,
        preprocess: str = "cpu",
        cuda_graphs: bool = False,
        attention: str = "sdpa",
    ) -> None:
        if precision not in PRECISION_DTYPES:
            raise BackendError(f"pytorch backend: precision {precision!r} is not one of {sorted(PRECISION_DTYPES)}")
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise BackendError(f"pytorch backend: device {device!r} is not a torch device ({exc})") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"pytorch backend: device {device!r} requested but CUDA is not available")
        if precision == "fp16" and dev.type != "cuda":
            raise BackendError(
                f"pytorch backend: precision fp16 needs a CUDA device, got device {device!r} (use precision fp32 on CPU)"
            )
        if threads < 0:
            raise BackendError(f"pytorch backend: threads = {threads}: must be >= 0 (0 = torch default)")
        _check_fast_path(dev, scan_impl, preprocess, cuda_graphs, attention)
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-module thread pool
        self.model_dir, self.clip_dir = Path(model_dir), Path(clip_dir)
        for what, path in (("model", self.model_dir), ("CLIP", self.clip_dir)):
            if not path.is_dir():
                raise BackendError(f"pytorch backend: {what} directory {path} does not exist")
        try:  # an HF cache repository root resolves to the snapshot refs/main names
            self.model_dir, self.clip_dir = resolve_checkpoint_dir(self.model_dir), resolve_checkpoint_dir(self.clip_dir)
        except CheckpointError as exc:
            raise BackendError(f"pytorch backend: {exc}") from exc
        self.precision = precision
        self.scan_impl, self.preprocess, self.cuda_graphs, self.attention = scan_impl, preprocess, cuda_graphs, attention
        self._device = dev
        self.device = str(dev)
        self._dtype = PRECISION_DTYPES[precision]
        self._stage_ms: dict[str, float] = {}
        try:
            # extend_vocab: the action tokens must exist as embedding rows whether or not the checkpoint was trained.
            self.model = load_model(
                self.model_dir, self.clip_dir, self._dtype, dev, scan_impl=scan_impl, extend_vocab=True
            )
            recorded = load_action_tokens(self.model_dir)
            self.generation = load_generation_config(self.model_dir, log=False)  # the session logs its notes once
        except (CheckpointError, ModelConfigError, FormatError, OSError) as exc:
            raise BackendError(f"pytorch backend: cannot load {self.model_dir} + {self.clip_dir}: {exc}") from exc
        # A checkpoint without action_tokens.json got the rows appended by load_model: the last three.
        self.action_token_ids: ActionTokenIds = recorded or plan_action_token_ids(self.model.vocab_size - 3)
        self._tokenizer = self._load_tokenizer(Path(tokenizer_dir) if tokenizer_dir is not None else None)
        self.tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else self.model_dir
        self.facts = model_facts(
            self.model, self.model_dir, len(self._tokenizer), int(self._tokenizer.token_to_id(IMAGE_TOKEN) or 0)
        )
        self.rope = self.facts.rope
        self.random_weights = is_synthetic(self.model_dir)
        self.clip_preprocess = self.model.clip_preprocess  # the CLIP directory's preprocessor_config.json
        if attention != "sdpa":
            self.model.lm.set_attn_implementation(causal_attention.register())
        self._graph_pool: object | None = None
        if cuda_graphs:
            from runtime.backends.torch_graphs import GraphedCall

            self._graph_pool = torch.cuda.graph_pool_handle()
            self._image_graph = GraphedCall(self._image_compute, "image encoder", self._graph_pool)
            self._video_graph = GraphedCall(self._video_compute, "video encoder", self._graph_pool)
        logger.info(
            "pytorch backend: %s on %s (%s, scan %s, preprocess %s, attention %s%s)%s",
            self.model_dir,
            dev,
            precision,
            scan_impl,
            preprocess,
            attention,
            ", CUDA graphs" if cuda_graphs else "",
            " [random weights]" if self.random_weights else "",
        )

    def _load_tokenizer(self, tokenizer_dir: Path | None) -> Tokenizer:
        """The extended tokenizer: saved beside engines, or the checkpoint's extended in memory."""
        try:
            if tokenizer_dir is not None:
                tokenizer = Tokenizer.from_dir(tokenizer_dir)
            else:
                from transformers import PreTrainedTokenizerFast

                if not (self.model_dir / "tokenizer.json").is_file():
                    raise FormatError(f"no tokenizer.json in {self.model_dir}: the runtime needs the model's tokenizer")
                hf = PreTrainedTokenizerFast.from_pretrained(str(self.model_dir))
                extend_tokenizer(hf, self.action_token_ids.next)  # idempotent for an already extended tokenizer
                tokenizer = Tokenizer(hf.backend_tokenizer, self.model_dir / "tokenizer.json")
            tokenizer.check_action_tokens(self.action_token_ids)
        except (FormatError, ValueError, OSError) as exc:
            raise BackendError(f"pytorch backend: tokenizer: {exc}") from exc
        return tokenizer

    @classmethod
    def from_engines(cls, engines_dir: str | Path, **kwargs: object) -> TorchBackend:
        """Builds the reference for the checkpoint an engines directory was exported from (and its tokenizer).

        Raises:
            BackendError: If the manifest is missing or does not record the checkpoint directories.
        """
        try:
            manifest = Manifest.load(engines_dir)
        except ManifestError as exc:
            raise BackendError(str(exc)) from exc
        model_dir, clip_dir = manifest_checkpoint_dirs(manifest)
        return cls(model_dir, clip_dir, tokenizer_dir=manifest.tokenizer_dir, **kwargs)  # type: ignore[arg-type]

    def load_tokenizer(self) -> Tokenizer:
        """The model's tokenizer with the action tokens at this backend's ids."""
        return self._tokenizer

    # ------------------------------------------------------------------ stages
    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)  # CUDA calls are async; time the work, not the launch
        self._stage_ms[stage] = (time.perf_counter() - start) * 1e3

    def _to_model(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(array, torch.Tensor):  # device-preprocessed pixels: already there
            return array.to(self._device, self._dtype)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self._device, self._dtype)

    def upload_frames(self, images: Sequence[np.ndarray]) -> object:
        """With ``preprocess: device``, the window's uint8 frames as one ``[F, H, W, 3]`` tensor on the device."""
        if self.preprocess != "device":
            return super().upload_frames(images)
        with self._timed("preprocess"):
            return upload_frames(images, self._device)

    def preprocess_images(self, uploaded: object, positions: Sequence[int]) -> np.ndarray | torch.Tensor:
        """CLIP-branch pixels of the uploaded frames (on the device with ``preprocess: device``)."""
        if self.preprocess != "device":
            return super().preprocess_images(uploaded, positions)
        with self._timed("preprocess"):
            frames = uploaded[torch.as_tensor(list(positions), device=self._device)]  # type: ignore[index]
            return clip_branch_device(frames, self.clip_preprocess)

    def preprocess_video(self, uploaded: object, positions: Sequence[int]) -> np.ndarray | torch.Tensor:
        """Video-branch pixels of the uploaded frames (on the device with ``preprocess: device``)."""
        if self.preprocess != "device":
            return super().preprocess_video(uploaded, positions)
        with self._timed("preprocess"):
            frames = uploaded[torch.as_tensor(list(positions), device=self._device)]  # type: ignore[index]
            return video_branch_device(frames)

    def _image_compute(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CLIP + image ETP + per-frame mean feature, on the device (what the image graph records)."""
        features = self.model.encode_images(pixels)
        return features, self.model.project_images(features), features.float().mean(dim=1)

    def _video_compute(self, pixels: torch.Tensor) -> torch.Tensor:
        """VideoMamba + pooling + video ETP, on the device (what the video graph records)."""
        return self.model.project_video(self.model.pool_video(self.model.encode_video(pixels)))

    @staticmethod
    def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to("cpu", torch.float32).numpy()

    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        """CLIP + image ETP per frame: ``[F,3,224,224]`` -> device tensors ``[F,196,768]`` and ``[F,144,H]``."""
        _check_pixels("encode_images", context_pixels, None)
        with self._timed("image_encoder"), torch.no_grad():
            compute = self._image_graph if self.cuda_graphs else self._image_compute
            features, tokens, mean = compute(self._to_model(context_pixels))
            clip_mean = self._to_numpy(mean)
        return ImageFeatures(clip_features=features, image_tokens=tokens, clip_mean=clip_mean)

    def select_frames(self, clip_features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Frame scores ``[2,8]`` and the top-4 per chunk ``[2,4]`` (ascending)."""
        with self._timed("frame_selection"):
            scores = self.model.score_frames(torch.as_tensor(clip_features).to(self._device, self._dtype))
            selected = self.model.select_frames(scores)
        return self._to_numpy(scores), selected.detach().cpu().numpy().astype(np.int64)

    def encode_video(self, video_pixels: np.ndarray) -> torch.Tensor:
        """VideoMamba + pooling + video ETP on the 8 selected frames -> device tensor ``[2,49,H]``."""
        _check_pixels("encode_video", video_pixels, self.facts.selected_frames)
        with self._timed("video_encoder"), torch.no_grad():
            compute = self._video_graph if self.cuda_graphs else self._video_compute
            projected = compute(self._to_model(video_pixels))
        return projected

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Rows of the tied embedding table ``[S,H]``."""
        return self._to_numpy(self.model.embed_tokens(check_token_ids(ids, self.vocab_size).tolist()))

    def allocate_kv(self, capacity: int) -> TorchCacheKV:
        """A preallocated in-place cache on the model's device, in its dtype."""
        return TorchCacheKV(self.model.allocate_cache(capacity), self.rope)

    def decode(self, segments: Sequence[Segment], kv: KVCache) -> np.ndarray:
        """Prefill / append / single-token decode in place; returns last-position logits ``[V]`` float32.

        Raises:
            BackendError: For a cache of another backend, ids out of range or rows that do not fit.
        """
        if not isinstance(kv, TorchCacheKV):
            raise BackendError(f"decode: the pytorch backend needs its own TorchCacheKV, got {type(kv).__name__}")
        parts = []
        for segment in segments:
            if isinstance(segment, (list, tuple)):
                if segment:
                    parts.append(self.model.embed_tokens(check_token_ids(segment, self.vocab_size).tolist()))
                continue
            rows = torch.as_tensor(segment)
            if rows.shape[-1] != self.hidden_size:
                raise BackendError(f"decode: a feature segment has width {rows.shape[-1]}, the decoder {self.hidden_size}")
            parts.append(rows.reshape(-1, self.hidden_size).to(self._device, self._dtype))
        if not parts:
            raise BackendError("decode: no input rows (every segment is empty)")
        embeds = torch.cat(parts, dim=0)[None]
        positions = kv.new_positions(embeds.shape[1])
        if kv.length + embeds.shape[1] > kv.capacity:
            raise BackendError(f"decode: {kv.length} + {embeds.shape[1]} positions exceed the KV capacity {kv.capacity}")
        with self._timed("decoder"), torch.no_grad():
            if self.cuda_graphs and embeds.shape[1] == 1:
                logits = self._decode_graph(kv)(embeds, positions[0])
                kv.cache.set_length(kv.length + 1)  # the graph wrote the slot; the Python length follows
            else:
                logits = self.model.forward_cached(embeds, kv.cache, torch.from_numpy(positions).to(self._device))
        kv.record_append(positions)
        return self._to_numpy(logits[0])

    def _decode_graph(self, kv: TorchCacheKV) -> object:
        """The cache's graphed decode step (captured on its first single-position call)."""
        if kv.decode_graph is None:
            from runtime.backends.torch_graphs import GraphedDecodeStep

            kv.decode_graph = GraphedDecodeStep(
                lambda e, p, m, c: self.model.forward_cached(e, c, p, attention_mask=m),
                kv, self.hidden_size, self._dtype, self._graph_pool,
            )
        return kv.decode_graph

    def stack(self, arrays: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stacks per-frame device tensors."""
        return torch.stack(list(arrays))

    def to_host(self, array: torch.Tensor | np.ndarray) -> np.ndarray:
        """A float32 numpy copy."""
        return self._to_numpy(torch.as_tensor(array))

    def stage_times_ms(self) -> dict[str, float]:
        """Duration of the last call of each stage in ms."""
        return dict(self._stage_ms)

    def close(self) -> None:
        """Drops the model (frees its memory once no other reference holds it)."""
        self.__dict__.pop("model", None)


def _check_pixels(stage: str, pixels: np.ndarray | torch.Tensor, frames: int | None) -> None:
    shape = tuple(pixels.shape)
    if len(shape) != 4 or shape[1:] != (3, 224, 224) or (frames is not None and shape[0] != frames):
        want = f"[{frames if frames is not None else 'F'}, 3, 224, 224]"
        raise BackendError(f"{stage}: pixels have shape {shape}, expected {want}")


def _check_fast_path(dev: torch.device, scan_impl: str, preprocess: str, cuda_graphs: bool, attention: str) -> None:
    """Validates the fast-path settings for ``dev`` (each error names the setting and what it needs).

    Raises:
        BackendError: For an unknown name, a CUDA-only setting on another device, or a missing package.
    """
    for key, value, names in (("scan_impl", scan_impl, SCAN_IMPL_NAMES), ("preprocess", preprocess, PREPROCESS_NAMES),
                              ("attention", attention, ATTENTION_NAMES)):
        if value not in names:
            raise BackendError(f"pytorch backend: {key} {value!r} is not one of {'|'.join(names)}")
    if cuda_graphs and dev.type != "cuda":
        raise BackendError(f"pytorch backend: cuda_graphs needs a CUDA device, got device {str(dev)!r}")
    try:
        get_scan_impl(scan_impl)
    except ValueError as exc:  # the package the name needs is missing
        raise BackendError(f"pytorch backend: {exc}") from exc
    if scan_impl == "triton" and dev.type != "cuda":
        if not interpreter_enabled():
            raise BackendError(
                f"pytorch backend: scan_impl 'triton' needs a CUDA device, got device {str(dev)!r} (use chunked on a "
                "CPU; TRITON_INTERPRET=1 runs Triton's interpreter, for tests)"
            )


def manifest_checkpoint_dirs(manifest: Manifest) -> tuple[Path, Path]:
    """The checkpoint and CLIP directories an engines directory was exported from (``source`` in the manifest).

    Relative paths are resolved against the current directory first, then against the engines directory.

    Raises:
        BackendError: If the manifest does not record them.
    """
    source = manifest.source
    if "model_dir" not in source or "clip_dir" not in source:
        raise BackendError(
            f"{manifest.root / 'manifest.json'}: no source.model_dir / source.clip_dir recorded; "
            "pass --model/--clip to run the pytorch backend"
        )

    def resolve(value: object) -> Path:
        path = Path(str(value))
        if path.is_absolute() or path.exists():
            return path
        return manifest.root / path

    return resolve(source["model_dir"]), resolve(source["clip_dir"])
