"""The ``tensorrt`` backend: TensorRT engines built by ``python -m export --tensorrt`` behind the ModelBackend API.

Thin by design: each engine is bound **by tensor name** (TensorRT 10+ API), buffers are torch CUDA tensors sized from
the shapes the execution context infers once every input shape is set, and ``execute_async_v3`` runs on one torch
stream. Shape precedence: the caller's input shapes -> ``set_input_shape`` -> ``get_tensor_shape`` for outputs.
An empty tensor (the decoder's first prefill with Past = 0) is bound to a 1-element scratch buffer, since TensorRT
needs a valid address for it. Outputs are fresh tensors (never reused between calls). The decoder engine has two
optimization profiles (``export.tensorrt_builder``): 0 = prefill/append, 1 = single-token decode; one execution
context per profile. The KV cache stays on the GPU (:class:`~runtime.backends.kv.TorchKVState`). Host code: top-K
of the frame selector and the embedding lookup (the fp16/fp32 table memory-mapped from the decoder's ONNX data, see
``docs/export.md``). cuda-python is not needed.

TensorRT and torch CUDA are imported when the backend is created; without them a :class:`BackendError` says which.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.manifest import Manifest, ManifestError
from runtime.backends.base import (
    BackendError,
    Engine,
    ImageFeatures,
    KVState,
    ModelBackend,
    TensorSpec,
    check_decode_inputs,
    lookup_rows,
    select_top_k,
)
from runtime.backends.kv import RopeSpec, TorchKVState

logger = logging.getLogger(__name__)

GRAPHS = ("image_encoder", "frame_selector", "video_encoder", "decoder")
PREFILL_PROFILE = 0
DECODE_PROFILE = 1


def _import_runtime() -> tuple[Any, Any]:
    """Imports tensorrt and torch and checks for a CUDA device.

    Returns:
        ``(tensorrt, torch)``.

    Raises:
        BackendError: Naming what is missing.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(
            f"tensorrt backend: TensorRT is not importable ({exc}); it needs tensorrt>=10 and CUDA"
        ) from exc
    import torch

    if not torch.cuda.is_available():
        raise BackendError("tensorrt backend: no CUDA device is visible to torch (torch.cuda.is_available() is False)")
    return trt, torch


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
        if self.engine is None:
            raise BackendError(f"{name}: TensorRT could not deserialize {plan} (built with another TensorRT version?)")
        self.stream = torch.cuda.Stream()
        self.contexts = []
        for profile in range(max(1, self.engine.num_optimization_profiles)):
            context = self.engine.create_execution_context()
            if context is None:
                raise BackendError(f"{name}: could not create an execution context for profile {profile}")
            if self.engine.num_optimization_profiles > 1:
                context.set_optimization_profile_async(profile, self.stream.cuda_stream)
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

    def run_tensors(self, feeds: dict[str, Any], profile: int = 0) -> dict[str, Any]:
        """Runs on torch CUDA tensors (no host copies).

        Args:
            feeds: Input name -> CUDA tensor of the engine's dtype.
            profile: Optimization profile (execution context) to use.

        Returns:
            Output name -> new CUDA tensor.

        Raises:
            BackendError: For missing/unknown inputs, a wrong dtype, a shape outside the profile or a failed launch.
        """
        torch = self._torch
        expected = {s.name: s for s in self.inputs}
        if set(feeds) != set(expected):
            raise BackendError(f"{self.name}: inputs {sorted(feeds)} != engine inputs {sorted(expected)}")
        if not 0 <= profile < len(self.contexts):
            raise BackendError(f"{self.name}: profile {profile} does not exist ({len(self.contexts)} profiles)")
        context = self.contexts[profile]
        keep = []
        for name, tensor in feeds.items():
            if str(tensor.dtype).removeprefix("torch.") != expected[name].dtype:
                raise BackendError(
                    f"{self.name}: input {name} is {tensor.dtype}, engine expects {expected[name].dtype}"
                )
            tensor = tensor.contiguous()
            keep.append(tensor)
            if not context.set_input_shape(name, tuple(tensor.shape)):
                raise BackendError(f"{self.name}: shape {tuple(tensor.shape)} of {name} is outside profile {profile}")
            context.set_tensor_address(name, tensor.data_ptr() if tensor.numel() else self._scratch.data_ptr())
        outputs = {}
        for spec in self.outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise BackendError(f"{self.name}: output {spec.name} shape {shape} is not determined by the inputs")
            out = torch.empty(shape, dtype=getattr(torch, spec.dtype), device="cuda")
            outputs[spec.name] = out
            context.set_tensor_address(spec.name, out.data_ptr() if out.numel() else self._scratch.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream())
        start = time.perf_counter()
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError(f"{self.name}: execute_async_v3 failed (see the TensorRT log)")
        self.stream.synchronize()
        self.last_inference_ms = (time.perf_counter() - start) * 1e3
        return outputs

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
        precision: Engines to run ("fp16" or "fp32"); default fp16 when built, else fp32.

    Raises:
        BackendError: If TensorRT/CUDA is unavailable, the manifest has no engines, or an engine fails to load.
    """

    name = "tensorrt"

    def __init__(self, engines_dir: Path, precision: str | None = None) -> None:
        trt, torch = _import_runtime()
        self._torch = torch
        self.engines_dir = Path(engines_dir)
        try:
            self.manifest = Manifest.load(self.engines_dir)
            built = sorted(self.manifest.data.get("tensorrt", {}))
            self.precision = precision or ("fp16" if "fp16" in built else (built[0] if built else "fp16"))
            entries = self.manifest.tensorrt_engines(self.precision)
            self._table = self.manifest.embedding_table(self.precision).open()
        except ManifestError as exc:
            raise BackendError(f"tensorrt backend: {exc}") from exc
        missing = [g for g in GRAPHS if g not in entries]
        if missing:
            raise BackendError(f"tensorrt backend: no {self.precision} engine for {missing} in {self.engines_dir}")
        model = self.manifest.model
        self.hidden_size, self.vocab_size = self.manifest.hidden_size, self.manifest.vocab_size
        self.max_position_embeddings = int(model["max_position_embeddings"])
        self.action_token_ids = self.manifest.action_token_ids
        self.random_weights = self.manifest.random_weights
        self.tokenizer_dir = self.manifest.tokenizer_dir
        self.top_k, self.largest = int(model["top_k"]), bool(model["largest"])
        self.num_layers = int(model["num_layers"])
        self.rope = RopeSpec(head_dim=int(model["head_dim"]), theta=float(model["rope_theta"]))
        trt_logger = trt.Logger(trt.Logger.WARNING)
        self.engines = {
            g: TensorRTEngine(f"{g}[trt {self.precision}]", Path(entries[g]["file"]), trt, torch, trt_logger)
            for g in GRAPHS
        }
        decoder = self.engines["decoder"]
        past = [s for s in decoder.inputs if s.name.startswith("past_key_values.")]
        self._kv_dtype = getattr(torch, past[0].dtype)
        self._kv_heads, self._head_dim = int(past[0].shape[1]), int(past[0].shape[3])
        if len(decoder.contexts) < 2:
            raise BackendError("tensorrt backend: the decoder engine needs 2 optimization profiles (prefill, decode)")
        logger.info(
            "tensorrt backend: %s (%s)%s",
            self.engines_dir,
            self.precision,
            " [random weights]" if self.random_weights else "",
        )

    def _cuda(self, array: np.ndarray, dtype: Any) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(array)).to("cuda", dtype)

    def _numpy(self, tensor: Any) -> np.ndarray:
        return tensor.detach().to("cpu", self._torch.float32).numpy()

    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        """CLIP + image ETP per frame."""
        out = self.engines["image_encoder"].run_tensors(
            {"pixel_values": self._cuda(context_pixels, self._torch.float32)}
        )
        return ImageFeatures(
            clip_features=self._numpy(out["clip_features"]), image_tokens=self._numpy(out["image_tokens"])
        )

    def select_frames(self, clip_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame scores (engine) and the top-K (host)."""
        out = self.engines["frame_selector"].run_tensors(
            {"clip_features": self._cuda(clip_features, self._torch.float32)}
        )
        scores = self._numpy(out["frame_scores"])
        return scores, select_top_k(scores, self.top_k, self.largest)

    def encode_video(self, video_pixels: np.ndarray) -> np.ndarray:
        """VideoMamba + pooling + video ETP on the 8 selected frames."""
        out = self.engines["video_encoder"].run_tensors({"video_pixels": self._cuda(video_pixels, self._torch.float32)})
        return self._numpy(out["video_tokens"])

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Rows of the tied embedding table (float32).

        Raises:
            BackendError: If an id is outside ``[0, V)``.
        """
        return lookup_rows(self._table, ids, self.vocab_size)

    def decode(
        self, inputs_embeds: np.ndarray, past: KVState | None, position_ids: np.ndarray
    ) -> tuple[np.ndarray, KVState]:
        """Prefill/append (profile 0) or single-token decode (profile 1); the cache stays on the GPU.

        Raises:
            BackendError: For a wrong shape or a past that is not a TorchKVState.
        """
        torch = self._torch
        position_ids = check_decode_inputs(inputs_embeds, position_ids, self.hidden_size)
        if past is not None and not isinstance(past, TorchKVState):
            raise BackendError(f"decode: the tensorrt backend needs a TorchKVState past, got {type(past).__name__}")
        feeds: dict[str, Any] = {
            "inputs_embeds": self._cuda(inputs_embeds, torch.float32),
            "position_ids": self._cuda(position_ids, torch.int64),
        }
        if past is None:
            empty = torch.zeros((1, self._kv_heads, 0, self._head_dim), dtype=self._kv_dtype, device="cuda")
            layers = [(empty, empty)] * self.num_layers
        else:
            layers = [(k.to("cuda", self._kv_dtype), v.to("cuda", self._kv_dtype)) for k, v in past.layers]
        for i, (k, v) in enumerate(layers):
            feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = k, v
        profile = (
            DECODE_PROFILE if inputs_embeds.shape[1] == 1 and past is not None and past.length > 0 else PREFILL_PROFILE
        )
        out = self.engines["decoder"].run_tensors(feeds, profile)
        present = [(out[f"present.{i}.key"], out[f"present.{i}.value"]) for i in range(self.num_layers)]
        return self._numpy(out["logits"]), TorchKVState.after_decode(present, self.rope, past, position_ids)

    def stage_times_ms(self) -> dict[str, float]:
        """Duration of each engine's last call in ms (GPU work, synchronised)."""
        return {name: engine.last_inference_ms for name, engine in self.engines.items()}

    def close(self) -> None:
        """Releases every engine."""
        for engine in self.engines.values():
            engine.close()
        self.__dict__.pop("_table", None)
