"""The ``onnxruntime`` backend: the exported ONNX graphs of an engines directory behind the ModelBackend API.

Each graph is one :class:`OnnxRuntimeEngine` (an ``InferenceSession``); its I/O table comes from the session and is
checked against ``manifest.json`` at load, so a stale or foreign graph fails loudly. Host code: the frame selector's
top-K (:func:`runtime.backends.base.select_top_k`) and the embedding lookup, which reads rows of the decoder's own
tied table, memory-mapped from its external-data file (the table is stored once; see ``docs/export.md``). The KV
cache is a :class:`~runtime.backends.kv.NumpyKVState` in the decoder's KV dtype (float16 for the fp16 graphs).

Execution providers: the requested provider must be the one the session runs on; ONNX Runtime silently falls back to
the CPU when a GPU provider cannot load (missing CUDA/cuDNN libraries), which is detected here and raised. The fp16
graphs run on the CPU provider, but ONNX Runtime's CPU provider has no fp16 kernels for most ops and removes the
``fp32 -> fp16 -> fp32`` cast pairs it inserts around them (onnxruntime#8787, #17953), so the fp16 products
(MatMul, Gemm, Conv) are computed in fp32 there: a CPU run of the fp16 graphs checks their structure, fp16 weights
and fp16 KV cache, not fp16 arithmetic. A warning says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from export.manifest import GraphFile, Manifest, ManifestError
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
from runtime.backends.kv import NumpyKVState, RopeSpec

logger = logging.getLogger(__name__)

GRAPHS = ("image_encoder", "frame_selector", "video_encoder", "decoder")
CPU_PROVIDER = "CPUExecutionProvider"
_LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.InvalidArgument,
    ort_errors.NoSuchFile,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
    ort_errors.EPFail,
)
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
}


class OnnxRuntimeEngine(Engine):
    """One ONNX graph in an ONNX Runtime session.

    Args:
        graph: The manifest entry of the graph.
        options: Session options.
        provider: Execution provider that must run the session.

    Raises:
        BackendError: If the session cannot be created, runs on another provider than requested, or its I/O differs
            from the manifest.
    """

    def __init__(self, graph: GraphFile, options: ort.SessionOptions, provider: str = CPU_PROVIDER) -> None:
        self.name = f"{graph.name}[{graph.precision}]"
        available = ort.get_available_providers()
        if provider not in available:
            raise BackendError(f"{self.name}: provider {provider} is not in this onnxruntime build ({available})")
        try:
            self.session = ort.InferenceSession(str(graph.path), options, providers=[provider])
        except _LOAD_ERRORS as exc:
            raise BackendError(f"{self.name}: cannot load {graph.path}: {exc}") from exc
        active = self.session.get_providers()
        if not active or active[0] != provider:
            raise BackendError(
                f"{self.name}: requested {provider} but the session runs on {active} (onnxruntime fell back; check the "
                "provider's CUDA/cuDNN/TensorRT libraries)"
            )
        self.inputs = tuple(_spec(i) for i in self.session.get_inputs())
        self.outputs = tuple(_spec(o) for o in self.session.get_outputs())
        self._output_names = [o.name for o in self.outputs]
        for kind, have, want in (("inputs", self.inputs, graph.inputs), ("outputs", self.outputs, graph.outputs)):
            got = [(s.name, s.dtype) for s in have]
            expected = [(t.name, t.dtype) for t in want]
            if got != expected:
                raise BackendError(f"{self.name}: session {kind} {got} differ from the manifest's {expected}")

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the session on validated feeds."""
        return dict(zip(self._output_names, self.session.run(self._output_names, feeds)))

    def close(self) -> None:
        """Drops the session."""
        self.__dict__.pop("session", None)


def _spec(arg: ort.NodeArg) -> TensorSpec:
    """A session input/output as a TensorSpec (unknown dims become "?")."""
    if arg.type not in _ORT_DTYPES:
        raise BackendError(f"graph tensor {arg.name} has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, (int, str)) else "?" for d in arg.shape)
    return TensorSpec(arg.name, _ORT_DTYPES[arg.type], shape)


class OnnxRuntimeBackend(ModelBackend):
    """Exported graphs run by ONNX Runtime.

    Args:
        engines_dir: Directory written by ``python -m export`` (``manifest.json``).
        precision: "fp32" or "fp16" (must have been exported).
        intra_op_threads: Threads per session (0 = onnxruntime's default).
        provider: Execution provider (default the CPU one); a fallback to another provider is an error.

    Raises:
        BackendError: For a missing/invalid manifest, an unexported precision, or a graph that fails to load.
    """

    name = "onnxruntime"

    def __init__(
        self, engines_dir: Path, precision: str = "fp32", intra_op_threads: int = 0, *, provider: str = CPU_PROVIDER
    ) -> None:
        self.engines_dir = Path(engines_dir)
        try:
            self.manifest = Manifest.load(self.engines_dir)
        except ManifestError as exc:
            raise BackendError(f"onnxruntime backend: {exc}") from exc
        if precision not in self.manifest.precisions:
            raise BackendError(
                f"onnxruntime backend: precision {precision!r} was not exported to {self.engines_dir} "
                f"(have {self.manifest.precisions}; export with --precision {precision})"
            )
        if intra_op_threads < 0:
            raise BackendError(f"onnxruntime backend: intra_op_threads = {intra_op_threads}: must be >= 0")
        self.precision = precision
        self.provider = provider
        model = self.manifest.model
        self.hidden_size = self.manifest.hidden_size
        self.vocab_size = self.manifest.vocab_size
        self.max_position_embeddings = int(model["max_position_embeddings"])
        self.action_token_ids = self.manifest.action_token_ids
        self.random_weights = self.manifest.random_weights
        self.tokenizer_dir = self.manifest.tokenizer_dir
        self.top_k, self.largest = int(model["top_k"]), bool(model["largest"])
        self.num_layers = int(model["num_layers"])
        self.rope = RopeSpec(head_dim=int(model["head_dim"]), theta=float(model["rope_theta"]))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        try:
            self.engines = {g: OnnxRuntimeEngine(self.manifest.graph(precision, g), options, provider) for g in GRAPHS}
            self._table = self.manifest.embedding_table(precision).open()
        except ManifestError as exc:
            raise BackendError(f"onnxruntime backend: {exc}") from exc
        if self._table.shape != (self.vocab_size, self.hidden_size):
            raise BackendError(
                f"embedding table {self._table.shape} != manifest [{self.vocab_size}, {self.hidden_size}]"
            )
        decoder = self.engines["decoder"]
        past_specs = [s for s in decoder.inputs if s.name.startswith("past_key_values.")]
        self._kv_dtype = np.dtype(past_specs[0].dtype)
        self._kv_shape = tuple(past_specs[0].shape)  # (batch, kv_heads, past, head_dim)
        if precision == "fp16" and provider == CPU_PROVIDER:
            logger.warning(
                "onnxruntime CPU provider computes the fp16 products of the fp16 graphs in fp32 (no fp16 MatMul/Gemm/"
                "Conv kernels; it drops the fp32->fp16->fp32 casts): fp16 weights and KV cache are exercised, fp16 "
                "arithmetic is not"
            )
        logger.info(
            "onnxruntime backend: %s (%s, %s)%s",
            self.engines_dir,
            precision,
            provider,
            " [random weights]" if self.random_weights else "",
        )

    # ------------------------------------------------------------------ stages
    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        """CLIP + image ETP per frame: ``[F,3,224,224]`` -> features ``[F,196,768]``, tokens ``[F,144,H]``."""
        out = self.engines["image_encoder"].infer({"pixel_values": _f32(context_pixels)})
        return ImageFeatures(clip_features=out["clip_features"], image_tokens=out["image_tokens"])

    def select_frames(self, clip_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame scores ``[2,8]`` (graph) and the top-4 per chunk ``[2,4]`` ascending (host)."""
        scores = self.engines["frame_selector"].infer({"clip_features": _f32(clip_features)})["frame_scores"]
        return scores, select_top_k(scores, self.top_k, self.largest)

    def encode_video(self, video_pixels: np.ndarray) -> np.ndarray:
        """VideoMamba + pooling + video ETP on the 8 selected frames -> ``[2,49,H]``."""
        return self.engines["video_encoder"].infer({"video_pixels": _f32(video_pixels)})["video_tokens"]

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Rows of the tied embedding table ``[S,H]`` (float32; rows of the fp16 table are upcast exactly).

        Raises:
            BackendError: If an id is outside ``[0, V)``.
        """
        return lookup_rows(self._table, ids, self.vocab_size)

    def decode(
        self, inputs_embeds: np.ndarray, past: KVState | None, position_ids: np.ndarray
    ) -> tuple[np.ndarray, KVState]:
        """Prefill / append / single-token decode; returns last-position logits ``[1,V]`` and the new cache.

        Raises:
            BackendError: For a wrong shape or a past that is not a NumpyKVState of this decoder.
        """
        position_ids = check_decode_inputs(inputs_embeds, position_ids, self.hidden_size)
        feeds: dict[str, np.ndarray] = {"inputs_embeds": _f32(inputs_embeds), "position_ids": position_ids}
        if past is None:
            _, kv_heads, _, head_dim = self._kv_shape
            empty = np.zeros((1, int(kv_heads), 0, int(head_dim)), dtype=self._kv_dtype)
            layers = [(empty, empty)] * self.num_layers
        elif isinstance(past, NumpyKVState):
            if len(past.layers) != self.num_layers:
                raise BackendError(f"decode: past has {len(past.layers)} layers, the decoder {self.num_layers}")
            layers = [
                (k.astype(self._kv_dtype, copy=False), v.astype(self._kv_dtype, copy=False)) for k, v in past.layers
            ]
        else:
            raise BackendError(f"decode: the onnxruntime backend needs a NumpyKVState past, got {type(past).__name__}")
        for i, (k, v) in enumerate(layers):
            feeds[f"past_key_values.{i}.key"] = k
            feeds[f"past_key_values.{i}.value"] = v
        out = self.engines["decoder"].infer(feeds)
        present = [(out[f"present.{i}.key"], out[f"present.{i}.value"]) for i in range(self.num_layers)]
        return out["logits"], NumpyKVState.after_decode(present, self.rope, past, position_ids)

    def stage_times_ms(self) -> dict[str, float]:
        """Duration of each graph's last call in ms."""
        return {name: engine.last_inference_ms for name, engine in self.engines.items()}

    def close(self) -> None:
        """Closes every session and unmaps the embedding table."""
        for engine in self.engines.values():
            engine.close()
        self.__dict__.pop("_table", None)


def _f32(array: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 view or copy."""
    return np.ascontiguousarray(array, dtype=np.float32)
