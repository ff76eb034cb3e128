"""The ``tensorrt`` backend: TensorRT engines built by ``python -m export --tensorrt`` behind the ModelBackend API.

Thin by design: each engine is bound **by tensor name** (TensorRT 10+ API, names from ``engine_format.io``), buffers
are torch CUDA tensors, and ``execute_async_v3`` runs on one torch stream. Shape precedence: the caller's input
shapes -> ``set_input_shape`` -> ``get_tensor_shape`` for outputs. An empty tensor (the decoder's first prefill with
Past = 0) is bound to a 1-element scratch buffer, since TensorRT needs a valid address for it.

Persistent buffers: the KV cache is a :class:`~runtime.backends.kv.PingPongKV` of CUDA buffers (``past`` bound to
the live prefix, ``present`` to the spare one, swapped after each call: nothing is allocated per token), the logits
buffer is preallocated, and the tied embedding table is uploaded once, so token rows are gathered on the device.
Visual features stay on the device from ``encode_images`` to ``decode``. The vision engines' outputs are fresh
tensors per call (the caller keeps them in its feature cache).

The decoder engine has two optimization profiles (``export.tensorrt_builder``): 0 = prefill/append, 1 = single-token
decode; one execution context per profile. Every TensorRT call that reports success is checked by :func:`_check`.

TensorRT and torch CUDA are imported when the backend is created; without them a :class:`BackendError` says which.
**Not run in this project's build environment** (TensorRT cannot be installed there); its tests skip with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine_format.io import (
    DECODER,
    FRAME_SELECTOR,
    GRAPH_NAMES,
    IMAGE_ENCODER,
    VIDEO_ENCODER,
    TensorSpec,
    past_key_name,
    past_value_name,
    present_key_name,
    present_value_name,
)
from engine_format.manifest import Manifest, ManifestError
from runtime.backends.base import (
    BackendError,
    Engine,
    ImageFeatures,
    ModelBackend,
    Segment,
    check_token_ids,
    select_top_k,
)
from runtime.backends.kv import KVCache, PingPongKV

logger = logging.getLogger(__name__)

PREFILL_PROFILE = 0
DECODE_PROFILE = 1


def _import_runtime() -> tuple[Any, Any]:
    """Imports tensorrt and torch and checks for a CUDA device.

    Raises:
        BackendError: Naming what is missing.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(f"tensorrt backend: TensorRT is not importable ({exc}); it needs tensorrt>=10 and CUDA") from exc
    import torch

    if not torch.cuda.is_available():
        raise BackendError("tensorrt backend: no CUDA device is visible to torch (torch.cuda.is_available() is False)")
    return trt, torch


def _check(ok: object, what: str) -> None:
    """Raises BackendError when a TensorRT call reports failure (False or None)."""
    if ok is None or ok is False:
        raise BackendError(f"tensorrt: {what} failed (see the TensorRT log above)")


class TensorRTEngine(Engine):
    """One deserialized TensorRT engine with one execution context per optimization profile.

    Args:
        name: Engine name (for messages).
        plan: The ``.plan`` file.
        trt: The tensorrt module.
        torch: The torch module.
        logger_: TensorRT logger.

    Raises:
        BackendError: If the engine cannot be deserialized or a context cannot be created.
    """

    def __init__(self, name: str, plan: Path, trt: Any, torch: Any, logger_: Any) -> None:
        self.name = name
        self._trt, self._torch = trt, torch
        if not plan.is_file():
            raise BackendError(f"{name}: engine file {plan} does not exist (python -m export --tensorrt)")
        self.runtime = trt.Runtime(logger_)
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        _check(self.engine, f"{name}: deserializing {plan} (built with another TensorRT version?)")
        self.stream = torch.cuda.Stream()
        self.contexts = []
        for profile in range(max(1, self.engine.num_optimization_profiles)):
            context = self.engine.create_execution_context()
            _check(context, f"{name}: creating an execution context for profile {profile}")
            if self.engine.num_optimization_profiles > 1:
                _check(
                    context.set_optimization_profile_async(profile, self.stream.cuda_stream),
                    f"{name}: selecting optimization profile {profile}",
                )
            self.contexts.append(context)
        self.stream.synchronize()
        self._dtypes = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int64: torch.int64,
            trt.int32: torch.int32,
            trt.bool: torch.bool,
        }
        specs_in, specs_out = [], []
        for i in range(self.engine.num_io_tensors):
            tname = self.engine.get_tensor_name(i)
            dtype = self._dtypes.get(self.engine.get_tensor_dtype(tname))
            if dtype is None:
                raise BackendError(f"{name}: tensor {tname} has unsupported type {self.engine.get_tensor_dtype(tname)}")
            shape = tuple(d if d >= 0 else "?" for d in self.engine.get_tensor_shape(tname))
            spec = TensorSpec(tname, str(dtype).removeprefix("torch."), shape)
            (specs_in if self.engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT else specs_out).append(spec)
        self.inputs, self.outputs = tuple(specs_in), tuple(specs_out)
        self._scratch = torch.zeros(1, dtype=torch.float32, device="cuda")

    def run_tensors(
        self, feeds: dict[str, Any], profile: int = 0, outputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Runs on CUDA tensors (no host copies), writing into ``outputs`` where given.

        Args:
            feeds: Input name -> contiguous CUDA tensor of the engine's dtype.
            profile: Optimization profile (execution context) to use.
            outputs: Output name -> preallocated contiguous CUDA tensor of the inferred shape; the others are
                allocated for this call.

        Returns:
            Output name -> tensor.

        Raises:
            BackendError: For missing/unknown inputs, a wrong dtype or shape, a shape outside the profile or a failed
                launch.
        """
        torch = self._torch
        self.check_feeds(feeds)
        if not 0 <= profile < len(self.contexts):
            raise BackendError(f"{self.name}: profile {profile} does not exist ({len(self.contexts)} profiles)")
        context = self.contexts[profile]
        for name, tensor in feeds.items():
            if not tensor.is_contiguous():
                raise BackendError(f"{self.name}: input {name} is not contiguous")
            _check(context.set_input_shape(name, tuple(tensor.shape)), f"{self.name}: shape {tuple(tensor.shape)} of {name} in profile {profile}")
            _check(
                context.set_tensor_address(name, tensor.data_ptr() if tensor.numel() else self._scratch.data_ptr()),
                f"{self.name}: binding {name}",
            )
        results = dict(outputs or {})
        for spec in self.outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise BackendError(f"{self.name}: output {spec.name} shape {shape} is not determined by the inputs")
            out = results.get(spec.name)
            if out is None:
                out = results[spec.name] = torch.empty(shape, dtype=getattr(torch, spec.dtype), device="cuda")
            elif tuple(out.shape) != shape or not out.is_contiguous():
                raise BackendError(f"{self.name}: output buffer {spec.name} is {tuple(out.shape)}, the engine writes {shape}")
            _check(
                context.set_tensor_address(spec.name, out.data_ptr() if out.numel() else self._scratch.data_ptr()),
                f"{self.name}: binding {spec.name}",
            )
        self.stream.wait_stream(torch.cuda.current_stream())
        start = time.perf_counter()
        _check(context.execute_async_v3(self.stream.cuda_stream), f"{self.name}: execute_async_v3")
        self.stream.synchronize()
        self.last_inference_ms = (time.perf_counter() - start) * 1e3
        return results

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """numpy in/out through ``run_tensors`` with profile 0."""
        torch = self._torch
        out = self.run_tensors({k: torch.from_numpy(np.ascontiguousarray(v)).cuda() for k, v in feeds.items()})
        return {k: v.cpu().numpy() for k, v in out.items()}

    def close(self) -> None:
        """Releases contexts and the engine."""
        self.__dict__.pop("contexts", None)
        self.__dict__.pop("engine", None)


class TensorRTBackend(ModelBackend):
    """TensorRT engines of an engines directory.

    Args:
        engines_dir: Directory written by ``python -m export --tensorrt``.
        precision: Engines to run (``fp16`` or ``fp32``); they must have been built.

    Raises:
        BackendError: If TensorRT/CUDA is unavailable, the precision was not built, or an engine fails to load.
    """

    name = "tensorrt"

    def __init__(self, engines_dir: Path, precision: str = "fp16") -> None:
        trt, torch = _import_runtime()
        self._torch = torch
        self.engines_dir = Path(engines_dir)
        try:
            self.manifest = Manifest.load(self.engines_dir)
            entries = self.manifest.tensorrt_engines(precision)
            table = self.manifest.embedding_table(precision).open()
        except ManifestError as exc:
            raise BackendError(f"tensorrt backend: {exc}") from exc
        missing = [g for g in GRAPH_NAMES if g not in entries]
        if missing:
            raise BackendError(f"tensorrt backend: no {precision} engine for {missing} in {self.engines_dir}")
        self.precision = precision
        self.device = "cuda:0"
        self.facts = self.manifest.model
        self.clip_preprocess = self.manifest.clip_preprocess
        self.action_token_ids = self.manifest.action_token_ids
        self.random_weights = self.manifest.random_weights
        self.tokenizer_dir = self.manifest.tokenizer_dir
        self.generation = self.manifest.generation
        self.rope = self.facts.rope
        trt_logger = trt.Logger(trt.Logger.WARNING)
        self.engines = {
            g: TensorRTEngine(f"{g}[trt {precision}]", Path(entries[g]["file"]), trt, torch, trt_logger)
            for g in GRAPH_NAMES
        }
        decoder = self.engines[DECODER]
        past = next(s for s in decoder.inputs if s.name == past_key_name(0))
        self._kv_dtype = getattr(torch, past.dtype)
        if len(decoder.contexts) < 2:
            raise BackendError("tensorrt backend: the decoder engine needs 2 optimization profiles (prefill, decode)")
        self._table = torch.from_numpy(np.asarray(table, dtype=np.float32)).to("cuda")  # uploaded once
        self._logits = torch.empty((1, self.vocab_size), dtype=torch.float32, device="cuda")
        logger.info(
            "tensorrt backend: %s (%s)%s", self.engines_dir, precision, " [random weights]" if self.random_weights else ""
        )

    def _cuda(self, array: np.ndarray, dtype: Any) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(array)).to("cuda", dtype)

    def _numpy(self, tensor: Any) -> np.ndarray:
        return tensor.detach().to("cpu", self._torch.float32).numpy()

    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        """CLIP + image ETP per frame (device tensors)."""
        out = self.engines[IMAGE_ENCODER].run_tensors({"pixel_values": self._cuda(context_pixels, self._torch.float32)})
        features = out["clip_features"]
        return ImageFeatures(features, out["image_tokens"], self._numpy(features.mean(dim=1)))

    def select_frames(self, clip_features: Any) -> tuple[np.ndarray, np.ndarray]:
        """Frame scores (engine) and the top-K (host)."""
        feats = self._torch.as_tensor(clip_features, device="cuda").float().contiguous()
        scores = self._numpy(self.engines[FRAME_SELECTOR].run_tensors({"clip_features": feats})["frame_scores"])
        return scores, select_top_k(scores, self.facts.top_k, self.facts.largest)

    def encode_video(self, video_pixels: np.ndarray) -> Any:
        """VideoMamba + pooling + video ETP on the 8 selected frames (device tensor)."""
        pixels = self._cuda(video_pixels, self._torch.float32)
        return self.engines[VIDEO_ENCODER].run_tensors({"video_pixels": pixels})["video_tokens"]

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Rows of the tied embedding table (float32)."""
        return self._numpy(self._rows(ids))

    def _rows(self, ids: Sequence[int]) -> Any:
        index = self._torch.from_numpy(check_token_ids(ids, self.vocab_size)).to("cuda")
        return self._table.index_select(0, index)

    def allocate_kv(self, capacity: int) -> PingPongKV:
        """A ping-pong cache of CUDA buffers in the engines' KV dtype."""
        from runtime.backends.kv_torch import torch_ping_pong_kv

        f = self.facts
        return torch_ping_pong_kv(self.rope, f.num_layers, f.num_key_value_heads, capacity, self._kv_dtype, "cuda")

    def decode(self, segments: Sequence[Segment], kv: KVCache) -> np.ndarray:
        """Prefill/append (profile 0) or single-token decode (profile 1) in place; the cache stays on the GPU.

        Raises:
            BackendError: For a cache of another backend or rows that do not fit it.
        """
        torch = self._torch
        if not isinstance(kv, PingPongKV):
            raise BackendError(f"decode: the tensorrt backend needs its own PingPongKV, got {type(kv).__name__}")
        parts = []
        for segment in segments:
            if isinstance(segment, (list, tuple)):
                if segment:
                    parts.append(self._rows(segment))
            else:
                parts.append(torch.as_tensor(segment, device="cuda").float().reshape(-1, self.hidden_size))
        if not parts:
            raise BackendError("decode: no input rows (every segment is empty)")
        embeds = torch.cat(parts, dim=0)[None].contiguous()
        positions = kv.new_positions(embeds.shape[1])
        feeds: dict[str, Any] = {"inputs_embeds": embeds, "position_ids": self._cuda(positions, torch.int64)}
        outputs: dict[str, Any] = {"logits": self._logits}
        for i, ((k, v), (pk, pv)) in enumerate(zip(kv.layer_views(), kv.output_views(embeds.shape[1]))):
            feeds[past_key_name(i)], feeds[past_value_name(i)] = k, v
            outputs[present_key_name(i)], outputs[present_value_name(i)] = pk, pv
        profile = DECODE_PROFILE if embeds.shape[1] == 1 and kv.length > 0 else PREFILL_PROFILE
        self.engines[DECODER].run_tensors(feeds, profile, outputs)
        kv.commit(positions)
        return self._numpy(self._logits[0])

    def stack(self, arrays: Sequence[Any]) -> Any:
        """Stacks per-frame device tensors."""
        return self._torch.stack(list(arrays))

    def to_host(self, array: Any) -> np.ndarray:
        """A float32 numpy copy."""
        return self._numpy(self._torch.as_tensor(array))

    def stage_times_ms(self) -> dict[str, float]:
        """Duration of each engine's last call in ms (GPU work, synchronised)."""
        keys = {IMAGE_ENCODER: "image_encoder", FRAME_SELECTOR: "frame_selection", VIDEO_ENCODER: "video_encoder",
                DECODER: "decoder"}
        return {keys[name]: engine.last_inference_ms for name, engine in self.engines.items()}

    def close(self) -> None:
        """Releases every engine and buffer."""
        for engine in getattr(self, "engines", {}).values():
            engine.close()
        for attr in ("_table", "_logits"):
            self.__dict__.pop(attr, None)
