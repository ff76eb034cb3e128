"""The ``onnxruntime`` backend: the exported ONNX graphs of an engines directory behind the ModelBackend API.

Each graph is one :class:`OnnxRuntimeEngine` (an ``InferenceSession``); its I/O is checked against the manifest's
table at load, so a stale or foreign graph fails loudly. Host code: the frame selector's top-K
(:func:`runtime.backends.base.select_top_k`) and the embedding lookup, which reads rows of the decoder's own tied
table, memory-mapped from its external-data file (the table is stored once; see ``docs/export.md``).

The decoder runs with **IO binding** on a :class:`~runtime.backends.kv.PingPongKV` in the decoder's KV dtype: the
``past`` inputs are bound to the live cache's buffers and the ``present`` outputs to the spare ones, so ONNX Runtime
writes the new cache in place and no KV tensor is allocated or copied to Python per call (the graph's own KV concat
is the only copy). Logits are written into a preallocated buffer.

Memory (``docs/design.md``, "Memory"): ONNX Runtime's CPU arena keeps the largest activations a session ever
allocated for its lifetime, so by default it is off (``cpu_mem_arena``); and a long append (a window of 2402 visual
rows onto several windows of context) runs as consecutive calls of at most ``decode_chunk_rows`` rows, because the
exported decoder's attention materialises ``[heads, rows, past + rows]`` scores at once (1.3 GB per matrix at the 0.5B
geometry with three windows of context). Causal attention makes the chunked append the same computation (each row
sees the same past); the graph's KV concat copies the past once per chunk.

Execution providers: the requested provider must be the one the session runs on; ONNX Runtime silently falls back to
the CPU when a GPU provider cannot load (missing CUDA/cuDNN libraries), which is detected here and raised. The fp16
graphs run on the CPU provider, but ONNX Runtime's CPU provider has no fp16 kernels for most ops and removes the
``fp32 -> fp16 -> fp32`` cast pairs it inserts around them (onnxruntime#8787, #17953), so the fp16 products
(MatMul, Gemm, Conv) are computed in fp32 there: a CPU run of the fp16 graphs checks their structure, fp16 weights
and fp16 KV cache, not fp16 arithmetic. A warning says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

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
from engine_format.manifest import GraphFile, Manifest, ManifestError
from runtime.backends.base import (
    BackendError,
    Engine,
    ImageFeatures,
    ModelBackend,
    Segment,
    check_token_ids,
    host_embeds,
    select_top_k,
)
from runtime.backends.kv import KVCache, KVCacheError, PingPongKV, numpy_kv

logger = logging.getLogger(__name__)

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


def _bind(binding: ort.IOBinding, name: str, array: np.ndarray, output: bool) -> None:
    """Binds a C-contiguous numpy array's memory to an input or output (no copy)."""
    if not array.flags.c_contiguous:
        raise BackendError(f"cannot bind {name}: array is not C-contiguous")
    bind = binding.bind_output if output else binding.bind_input
    bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


class OnnxRuntimeBackend(ModelBackend):
    """Exported graphs run by ONNX Runtime.

    Args:
        engines_dir: Directory written by ``python -m export`` (``manifest.json``).
        precision: "fp32" or "fp16" (must have been exported).
        intra_op_threads: Threads per session (0 = onnxruntime's default).
        provider: Execution provider (default the CPU one); a fallback to another provider is an error.
        cpu_mem_arena: Keep ONNX Runtime's CPU memory arena (faster allocation, but it retains each session's
            largest activations for good).
        decode_chunk_rows: Most rows per decoder call; longer appends run as consecutive calls (0 = one call).

    Raises:
        BackendError: For a missing/invalid manifest, an unexported precision, a negative option, or a graph that
            fails to load.
    """

    name = "onnxruntime"

    def __init__(
        self,
        engines_dir: Path,
        precision: str = "fp32",
        intra_op_threads: int = 0,
        *,
        provider: str = CPU_PROVIDER,
        cpu_mem_arena: bool = False,
        decode_chunk_rows: int = 512,
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
        if decode_chunk_rows < 0:
            raise BackendError(f"onnxruntime backend: decode_chunk_rows = {decode_chunk_rows}: must be >= 0")
        self.decode_chunk_rows = decode_chunk_rows
        self.precision = precision
        self.provider = provider
        self.device = "cpu" if provider == CPU_PROVIDER else provider
        self.facts = self.manifest.model
        self.clip_preprocess = self.manifest.clip_preprocess
        self.action_token_ids = self.manifest.action_token_ids
        self.random_weights = self.manifest.random_weights
        self.tokenizer_dir = self.manifest.tokenizer_dir
        self.generation = self.manifest.generation
        self.rope = self.facts.rope
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        options.enable_cpu_mem_arena = cpu_mem_arena
        try:
            self.engines = {g: OnnxRuntimeEngine(self.manifest.graph(precision, g), options, provider) for g in GRAPH_NAMES}
            self._table = self.manifest.embedding_table(precision).open()
        except ManifestError as exc:
            raise BackendError(f"onnxruntime backend: {exc}") from exc
        if self._table.shape != (self.vocab_size, self.hidden_size):
            raise BackendError(f"embedding table {self._table.shape} != manifest [{self.vocab_size}, {self.hidden_size}]")
        past = next(s for s in self.engines[DECODER].inputs if s.name == past_key_name(0))
        self._kv_dtype = np.dtype(past.dtype)
        self._decoder = self.engines[DECODER].session
        self._binding = self._decoder.io_binding()
        self._logits = np.zeros((1, self.vocab_size), dtype=np.float32)
        self._decoder_ms = 0.0
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
        out = self.engines[IMAGE_ENCODER].infer({"pixel_values": _f32(context_pixels)})
        features = out["clip_features"]
        return ImageFeatures(features, out["image_tokens"], features.mean(axis=1, dtype=np.float32))

    def select_frames(self, clip_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame scores ``[2,8]`` (graph) and the top-4 per chunk ``[2,4]`` ascending (host)."""
        scores = self.engines[FRAME_SELECTOR].infer({"clip_features": _f32(clip_features)})["frame_scores"]
        return scores, select_top_k(scores, self.facts.top_k, self.facts.largest)

    def encode_video(self, video_pixels: np.ndarray) -> np.ndarray:
        """VideoMamba + pooling + video ETP on the 8 selected frames -> ``[2,49,H]``."""
        return self.engines[VIDEO_ENCODER].infer({"video_pixels": _f32(video_pixels)})["video_tokens"]

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Rows of the tied embedding table ``[S,H]`` (float32; rows of the fp16 table are upcast exactly).

        Raises:
            BackendError: If an id is outside ``[0, V)``.
        """
        return np.asarray(self._table[check_token_ids(ids, self.vocab_size)], dtype=np.float32)

    def allocate_kv(self, capacity: int) -> PingPongKV:
        """A ping-pong numpy cache in the decoder's KV dtype (float16 for the fp16 graphs)."""
        f = self.facts
        return numpy_kv(self.rope, f.num_layers, f.num_key_value_heads, capacity, self._kv_dtype)

    def decode(self, segments: Sequence[Segment], kv: KVCache) -> np.ndarray:
        """Prefill / append / single-token decode in place; returns last-position logits ``[V]`` float32.

        Appends longer than ``decode_chunk_rows`` run as consecutive calls (see the module docstring).

        Raises:
            BackendError: For a cache of another backend or layout, or rows that do not fit it.
        """
        if not isinstance(kv, PingPongKV) or kv.num_layers != self.facts.num_layers:
            raise BackendError(f"decode: the onnxruntime backend needs its own PingPongKV, got {type(kv).__name__}")
        if kv.head_dim != self.facts.head_dim or kv.itemsize != self._kv_dtype.itemsize:
            raise BackendError("decode: the KV cache was allocated for another decoder")
        embeds = host_embeds(self._table, segments, self.hidden_size)
        rows = embeds.shape[1]
        try:
            kv.check_room(rows)
        except KVCacheError as exc:  # the context's max_tokens was exceeded
            raise BackendError(f"decode: {exc}") from exc
        step = self.decode_chunk_rows or rows
        elapsed = 0.0
        for start in range(0, rows, step):
            elapsed += self._decode_rows(np.ascontiguousarray(embeds[:, start : start + step]), kv)
        self._decoder_ms = elapsed
        return self._logits[0].copy()

    def _decode_rows(self, embeds: np.ndarray, kv: PingPongKV) -> float:
        """One decoder call on ``embeds [1, S, H]`` (room checked); returns its milliseconds."""
        positions = kv.new_positions(embeds.shape[1])
        outputs = kv.output_views(embeds.shape[1])
        b = self._binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        _bind(b, "inputs_embeds", embeds, output=False)
        _bind(b, "position_ids", positions, output=False)
        for i, ((k, v), (pk, pv)) in enumerate(zip(kv.layer_views(), outputs)):
            _bind(b, past_key_name(i), k, output=False)
            _bind(b, past_value_name(i), v, output=False)
            _bind(b, present_key_name(i), pk, output=True)
            _bind(b, present_value_name(i), pv, output=True)
        _bind(b, "logits", self._logits, output=True)
        start = time.perf_counter()
        self._decoder.run_with_iobinding(b)
        elapsed = (time.perf_counter() - start) * 1e3
        kv.commit(positions)
        return elapsed

    def stage_times_ms(self) -> dict[str, float]:
        """Duration of each graph's last call in ms."""
        return {
            "image_encoder": self.engines[IMAGE_ENCODER].last_inference_ms,
            "frame_selection": self.engines[FRAME_SELECTOR].last_inference_ms,
            "video_encoder": self.engines[VIDEO_ENCODER].last_inference_ms,
            "decoder": self._decoder_ms,
        }

    def close(self) -> None:
        """Closes every session and unmaps the embedding table."""
        for engine in getattr(self, "engines", {}).values():
            engine.close()
        for attr in ("_table", "_decoder", "_binding"):
            self.__dict__.pop(attr, None)


def _f32(array: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 view or copy."""
    return np.ascontiguousarray(array, dtype=np.float32)
