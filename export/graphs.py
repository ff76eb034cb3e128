"""Export graphs: thin ``nn.Module`` wrappers around the reference's own sub-modules, and their I/O tables.

Dimensions:
    F frames (dynamic), C = 2 chunks, T = 8 frames per chunk, K = 4 kept per chunk, P = 196 patches, E = 768 (CLIP),
    M = 576 (VideoMamba), H = LLM hidden size, V = vocabulary rows (after the action-token extension),
    L = decoder layers, Hkv = KV heads, D = head_dim, B batch, S new positions, Past = cached positions.

Graphs and cut points (one ONNX file each; the runtime caches per-frame outputs of ``image_encoder``):

    image_encoder   pixel_values [F,3,224,224] -> clip_features [F,196,768], image_tokens [F,144,H]
    frame_selector  clip_features [16,196,768] -> frame_scores [2,8]        (top-K on the host, see below)
    video_encoder   video_pixels [8,3,224,224] -> video_tokens [2,49,H]     (VideoMamba -> 2x2 pool -> video ETP)
    decoder         inputs_embeds [B,S,H], position_ids [B,S], past_key_values.{i}.key/value [B,Hkv,Past,D]
                    -> logits [B,V] (last position, fp32), present.{i}.key/value [B,Hkv,Past+S,D]

No wrapper copies model math: each ``forward`` calls the reference modules (``CLIPImageEncoder``, ``ETProjector``,
``VideoMambaTower``, ``frame_selection.score_frames``, ``pool_video_tokens``, the transformers Qwen2 backbone and the
tied ``lm_head``) in the order ``MobileVideoGPT`` does. The top-K of the frame selector (4 of 8 per chunk, sorted by
time) is host code (``runtime.backends.base.select_top_k``), tested equal to ``frame_selection.select_top_k``.

The decoder contract serves all three uses with the same graph: first prefill (Past = 0, empty past tensors),
appending a window of 2402+ rows onto a past (Past > 0, S > 1) and single-token decode (S = 1). The causal mask is
derived inside from Past and S (queries see every cached position and the new positions up to their own), so there is
no ``attention_mask`` input: rows of a batch must have equal lengths (the streaming runtime uses B = 1).
``position_ids`` only drives RoPE, so the runtime may pass shifted positions after evicting a window (keys in the
cache are then re-rotated by the runtime's ``KVState.shift_positions``).

The decoder's logits come from ``lm_head`` applied to the last position only (a [B,H] matrix), which the exporter
turns into one matrix product with the tied embedding table; ``export.onnx_export`` then stores that table once, in
[V,H] row layout, as the ``Gemm`` weight ``embed_tokens.weight``, which the runtime memory-maps for its embedding
lookups (see ``docs/export.md``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, Qwen2Model

from mobile_videogpt import frame_selection
from mobile_videogpt.model import MobileVideoGPT
from mobile_videogpt.projector import pool_video_tokens

IMAGE_ENCODER = "image_encoder"
FRAME_SELECTOR = "frame_selector"
VIDEO_ENCODER = "video_encoder"
DECODER = "decoder"
GRAPH_NAMES: tuple[str, ...] = (IMAGE_ENCODER, FRAME_SELECTOR, VIDEO_ENCODER, DECODER)

CACHE_KWARG = "cache" if "cache" in inspect.signature(Qwen2Model.forward).parameters else "past_key_values"
"""Keyword of the KV cache in ``Qwen2Model.forward`` (transformers renamed ``past_key_values`` to ``cache`` in 5.2x)."""

EMBED_TABLE_NAME = "embed_tokens.weight"
"""Initializer name of the tied embedding / lm_head table [V, H] inside the decoder graph."""


# ---------------------------------------------------------------------------------------------------------------- I/O
@dataclass(frozen=True)
class IOSpec:
    """One graph input or output as exported.

    Attributes:
        name: Graph tensor name.
        dtype: numpy dtype name in the fp32 graph ("float32", "int64"). In fp16 variants the names listed in
            ``GraphIO.fp16_io`` become "float16".
        shape: Dimensions; a str is a symbolic dimension (an ONNX ``dim_param``).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class GraphIO:
    """The I/O table of one graph.

    Attributes:
        graph: Graph name.
        inputs: Inputs in positional order (the wrapper's ``forward`` argument order).
        outputs: Outputs in order.
        fp16_io: Names whose dtype becomes float16 in the fp16 variant (the KV cache); every other float tensor stays
            float32 at the boundary.
    """

    graph: str
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
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
        """``torch.onnx.export`` dynamic axes: every symbolic dimension by tensor name."""
        axes: dict[str, dict[int, str]] = {}
        for spec in (*self.inputs, *self.outputs):
            sym = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
            if sym:
                axes[spec.name] = sym
        return axes

    def with_precision(self, precision: str) -> tuple[tuple[IOSpec, ...], tuple[IOSpec, ...]]:
        """The table as it holds for one precision ("fp32" or "fp16").

        Args:
            precision: "fp32" or "fp16".

        Returns:
            ``(inputs, outputs)`` with the ``fp16_io`` names retyped to float16 for "fp16".
        """
        if precision == "fp32":
            return self.inputs, self.outputs

        def retype(spec: IOSpec) -> IOSpec:
            return IOSpec(spec.name, "float16", spec.shape) if spec.name in self.fp16_io else spec

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


def io_tables(model: MobileVideoGPT) -> dict[str, GraphIO]:
    """The I/O table of every graph for one model geometry: the one place names, dtypes and dims are declared.

    Args:
        model: The reference model (its config gives H, V, L, Hkv, D).

    Returns:
        Graph name -> table.
    """
    cfg = model.config
    p = cfg.pipeline
    h, v = cfg.hidden_size, model.vocab_size
    text = cfg.text
    layers, kv_heads = int(text.num_hidden_layers), int(text.num_key_value_heads)
    head_dim = int(getattr(text, "head_dim", None) or h // int(text.num_attention_heads))
    size = p.image_size
    n_patch = (size // cfg.videomamba.patch_size) ** 2
    e = int(cfg.clip.hidden_size)
    image = GraphIO(
        IMAGE_ENCODER,
        inputs=(IOSpec("pixel_values", "float32", ("frames", 3, size, size)),),
        outputs=(
            IOSpec("clip_features", "float32", ("frames", n_patch, e)),
            IOSpec("image_tokens", "float32", ("frames", p.image_pool**2, h)),
        ),
    )
    selector = GraphIO(
        FRAME_SELECTOR,
        inputs=(IOSpec("clip_features", "float32", (p.num_frames, n_patch, e)),),
        outputs=(IOSpec("frame_scores", "float32", (p.num_chunks, p.chunk_size)),),
    )
    video = GraphIO(
        VIDEO_ENCODER,
        inputs=(IOSpec("video_pixels", "float32", (p.num_chunks * p.top_k, 3, size, size)),),
        outputs=(IOSpec("video_tokens", "float32", (p.num_chunks, p.video_pool**2, h)),),
    )
    past = tuple(
        IOSpec(name(i), "float32", ("batch", kv_heads, "past_sequence", head_dim))
        for i in range(layers)
        for name in (past_key_name, past_value_name)
    )
    present = tuple(
        IOSpec(name(i), "float32", ("batch", kv_heads, "total_sequence", head_dim))
        for i in range(layers)
        for name in (present_key_name, present_value_name)
    )
    decoder = GraphIO(
        DECODER,
        inputs=(
            IOSpec("inputs_embeds", "float32", ("batch", "sequence", h)),
            IOSpec("position_ids", "int64", ("batch", "sequence")),
            *past,
        ),
        outputs=(IOSpec("logits", "float32", ("batch", v)), *present),
        fp16_io=tuple(s.name for s in (*past, *present)),
    )
    return {g.graph: g for g in (image, selector, video, decoder)}


# ---------------------------------------------------------------------------------------------------------- wrappers
class ImageEncoderGraph(nn.Module):
    """CLIP (penultimate layer, CLS dropped) and the image ETP, per frame."""

    def __init__(self, model: MobileVideoGPT) -> None:
        """Holds the reference's CLIP encoder and image projector.

        Args:
            model: The reference model.
        """
        super().__init__()
        self.clip = model.clip
        self.image_projector = model.lm.model.image_mm_projector

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodes frames.

        Args:
            pixel_values: CLIP-normalised pixels [F, 3, 224, 224].

        Returns:
            ``(clip_features [F, 196, 768], image_tokens [F, 144, H])``.
        """
        features = self.clip(pixel_values)  # [F, 196, 768]
        return features, self.image_projector(features)


class FrameSelectorGraph(nn.Module):
    """Attention-mass frame scores per chunk (``frame_selection.score_frames``); weight-free."""

    def __init__(self, model: MobileVideoGPT) -> None:
        """Reads the chunk geometry.

        Args:
            model: The reference model.
        """
        super().__init__()
        self.chunk_size = model.config.pipeline.chunk_size

    def forward(self, clip_features: torch.Tensor) -> torch.Tensor:
        """Scores frames.

        Args:
            clip_features: CLIP patch features [C*T, 196, 768].

        Returns:
            Scores [C, T] in fp32.
        """
        f, p, e = clip_features.shape
        return frame_selection.score_frames(clip_features.reshape(f // self.chunk_size, self.chunk_size, p, e))


class VideoEncoderGraph(nn.Module):
    """VideoMamba-M (bidirectional) on the 8 selected frames, 2x2 pooling per frame, video ETP."""

    def __init__(self, model: MobileVideoGPT) -> None:
        """Holds the reference's VideoMamba tower and video projector.

        The selective-scan formulation is the one the model was loaded with (``load_model(scan_impl=...)``).

        Args:
            model: The reference model.
        """
        super().__init__()
        self.tower = model.lm.model.vision_tower
        self.video_projector = model.lm.model.mm_projector
        self.video_pool = model.config.pipeline.video_pool
        self.num_chunks = model.config.pipeline.num_chunks

    def forward(self, video_pixels: torch.Tensor) -> torch.Tensor:
        """Encodes the selected frames.

        Args:
            video_pixels: Video-branch pixels of the C*K selected frames [8, 3, 224, 224], slot order.

        Returns:
            Video tokens [C, 49, H].
        """
        tokens = self.tower(video_pixels)  # [C*K, 196, M], CLS dropped
        pooled = pool_video_tokens(tokens, self.video_pool, self.num_chunks)  # [C, K*49, M]
        return self.video_projector(pooled)  # [C, 49, H]


class DecoderGraph(nn.Module):
    """Qwen2 with flat per-layer KV tensors: one contract for prefill, append and decode."""

    def __init__(self, model: MobileVideoGPT) -> None:
        """Holds the reference's Qwen2 backbone and tied lm_head.

        Args:
            model: The reference model.
        """
        super().__init__()
        self.backbone = model.lm.model
        self.lm_head = model.lm.lm_head
        self.text_config = model.lm.config
        self.num_layers = int(model.lm.config.num_hidden_layers)

    def forward(
        self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """One decoder call.

        Args:
            inputs_embeds: [B, S, H].
            position_ids: [B, S] int64 RoPE positions.
            *past: ``2 * L`` tensors, ``key_0, value_0, key_1, ...``, each [B, Hkv, Past, D] (Past may be 0).

        Returns:
            ``(logits [B, V] fp32, present key_0 [B, Hkv, Past+S, D], value_0, key_1, ...)``.

        Raises:
            ValueError: If the number of past tensors is not ``2 * L``.
        """
        if len(past) != 2 * self.num_layers:
            raise ValueError(f"expected {2 * self.num_layers} past tensors (key and value per layer), got {len(past)}")
        # Rebuild the transformers cache from the flat tensors (transformers 5 takes no tuple caches).
        cache = DynamicCache(config=self.text_config)
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.backbone(
            inputs_embeds=inputs_embeds, position_ids=position_ids, use_cache=True, **{CACHE_KWARG: cache}
        )
        logits = self.lm_head(out.last_hidden_state[:, -1]).float()  # [B, V]: last position only
        out_cache = out.cache if CACHE_KWARG == "cache" else out.past_key_values
        present = [t for layer in out_cache.layers for t in (layer.keys, layer.values)]
        return (logits, *present)


def build_graph(name: str, model: MobileVideoGPT) -> nn.Module:
    """Builds the wrapper for one graph.

    Args:
        name: One of :data:`GRAPH_NAMES`.
        model: The reference model.

    Returns:
        The wrapper module in eval mode.

    Raises:
        ValueError: For an unknown graph name.
    """
    wrappers: dict[str, type[nn.Module]] = {
        IMAGE_ENCODER: ImageEncoderGraph,
        FRAME_SELECTOR: FrameSelectorGraph,
        VIDEO_ENCODER: VideoEncoderGraph,
        DECODER: DecoderGraph,
    }
    if name not in wrappers:
        raise ValueError(f"unknown graph {name!r}; choose one of {list(GRAPH_NAMES)}")
    return wrappers[name](model).eval()
