"""Graph names and the one I/O table per graph: the names, dtypes and dims every exported graph has.

Dimensions: F frames (dynamic), C chunks, T frames per chunk, K kept per chunk, P CLIP patches, E CLIP width,
H decoder width, V vocabulary rows, L layers, Hkv KV heads, D head_dim, B batch, S new positions, Past cached ones.

    image_encoder   pixel_values [F,3,224,224] -> clip_features [F,P,E], image_tokens [F,144,H]
    frame_selector  clip_features [C*T,P,E] -> frame_scores [C,T]                (top-K on the host)
    video_encoder   video_pixels [C*K,3,224,224] -> video_tokens [C,49,H]
    decoder         inputs_embeds [B,S,H], position_ids [B,S], past_key_values.{i}.key/value [B,Hkv,Past,D]
                    -> logits [B,V] (last position, fp32), present.{i}.key/value [B,Hkv,Past+S,D]

The exporter declares the graphs with these tables; the runtime checks sessions and engines against them and binds
tensors by these names (never retyped as f-strings elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine_format import FormatError
from engine_format.geometry import GraphGeometry

IMAGE_ENCODER = "image_encoder"
FRAME_SELECTOR = "frame_selector"
VIDEO_ENCODER = "video_encoder"
DECODER = "decoder"
GRAPH_NAMES: tuple[str, ...] = (IMAGE_ENCODER, FRAME_SELECTOR, VIDEO_ENCODER, DECODER)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Attributes:
        name: Graph tensor name.
        dtype: numpy dtype name ("float32", "float16", "int64", ...).
        shape: Dimensions; a str is a symbolic (dynamic) dimension.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TensorSpec:
        """Inverse of :meth:`as_dict`.

        Raises:
            FormatError: For a malformed entry.
        """
        if not isinstance(data, dict) or not {"name", "dtype", "shape"} <= set(data):
            raise FormatError(f"{where}: a tensor entry needs name, dtype and shape, got {data!r}")
        shape = data["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, (int, str)) for d in shape):
            raise FormatError(f"{where}: tensor {data['name']!r} has an invalid shape {shape!r}")
        return cls(str(data["name"]), str(data["dtype"]), tuple(shape))


@dataclass(frozen=True)
class GraphIO:
    """The I/O table of one graph.

    Attributes:
        graph: Graph name.
        inputs: Inputs in positional order (the export wrapper's ``forward`` argument order).
        outputs: Outputs in order.
        fp16_io: Names whose dtype becomes float16 in the fp16 variant (the KV cache); every other float tensor stays
            float32 at the boundary.
    """

    graph: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    fp16_io: tuple[str, ...] = ()

    @property
    def input_names(self) -> list[str]:
        """Input names in order."""
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """Output names in order."""
        return [s.name for s in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Every symbolic dimension by tensor name (``torch.onnx.export``'s ``dynamic_axes``)."""
        axes: dict[str, dict[int, str]] = {}
        for spec in (*self.inputs, *self.outputs):
            sym = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
            if sym:
                axes[spec.name] = sym
        return axes

    def with_precision(self, precision: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """``(inputs, outputs)`` as they hold for one precision (``fp16_io`` retyped to float16 for "fp16").

        Raises:
            FormatError: For an unknown precision.
        """
        if precision not in PRECISIONS:
            raise FormatError(f"precision {precision!r} is not one of {PRECISIONS}")
        if precision == "fp32":
            return self.inputs, self.outputs

        def retype(spec: TensorSpec) -> TensorSpec:
            return TensorSpec(spec.name, "float16", spec.shape) if spec.name in self.fp16_io else spec

        return tuple(map(retype, self.inputs)), tuple(map(retype, self.outputs))


def past_key_name(layer: int) -> str:
    """Input name of layer ``layer``'s cached keys."""
    return f"past_key_values.{layer}.key"


def past_value_name(layer: int) -> str:
    """Input name of layer ``layer``'s cached values."""
    return f"past_key_values.{layer}.value"


def present_key_name(layer: int) -> str:
    """Output name of layer ``layer``'s keys after the call."""
    return f"present.{layer}.key"


def present_value_name(layer: int) -> str:
    """Output name of layer ``layer``'s values after the call."""
    return f"present.{layer}.value"


def io_tables(facts: GraphGeometry) -> dict[str, GraphIO]:
    """The I/O table of every graph for one model geometry.

    Args:
        facts: The model geometry (a ``ModelFacts`` is one).

    Returns:
        Graph name -> table, in :data:`GRAPH_NAMES` order.
    """
    h, v, size = facts.hidden_size, facts.vocab_size, facts.image_size
    kv_heads, head_dim = facts.num_key_value_heads, facts.head_dim
    image = GraphIO(
        IMAGE_ENCODER,
        inputs=(TensorSpec("pixel_values", "float32", ("frames", 3, size, size)),),
        outputs=(
            TensorSpec("clip_features", "float32", ("frames", facts.clip_patches, facts.clip_hidden_size)),
            TensorSpec("image_tokens", "float32", ("frames", facts.image_tokens_per_frame, h)),
        ),
    )
    selector = GraphIO(
        FRAME_SELECTOR,
        inputs=(TensorSpec("clip_features", "float32", (facts.num_frames, facts.clip_patches, facts.clip_hidden_size)),),
        outputs=(TensorSpec("frame_scores", "float32", (facts.num_chunks, facts.chunk_size)),),
    )
    video = GraphIO(
        VIDEO_ENCODER,
        inputs=(TensorSpec("video_pixels", "float32", (facts.selected_frames, 3, size, size)),),
        outputs=(TensorSpec("video_tokens", "float32", (facts.num_chunks, facts.video_tokens_per_chunk, h)),),
    )
    past = tuple(
        TensorSpec(name(i), "float32", ("batch", kv_heads, "past_sequence", head_dim))
        for i in range(facts.num_layers)
        for name in (past_key_name, past_value_name)
    )
    present = tuple(
        TensorSpec(name(i), "float32", ("batch", kv_heads, "total_sequence", head_dim))
        for i in range(facts.num_layers)
        for name in (present_key_name, present_value_name)
    )
    decoder = GraphIO(
        DECODER,
        inputs=(
            TensorSpec("inputs_embeds", "float32", ("batch", "sequence", h)),
            TensorSpec("position_ids", "int64", ("batch", "sequence")),
            *past,
        ),
        outputs=(TensorSpec("logits", "float32", ("batch", v)), *present),
        fp16_io=tuple(s.name for s in (*past, *present)),
    )
    return {g.graph: g for g in (image, selector, video, decoder)}
