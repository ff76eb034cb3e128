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
cache are then re-rotated by the runtime's ``KVCache.shift_positions``).

The decoder's logits come from ``lm_head`` applied to the last position only (a [B,H] matrix), which the exporter
turns into one matrix product with the tied embedding table; ``export.onnx_export`` then stores that table once, in
[V,H] row layout, as the ``Gemm`` weight ``embed_tokens.weight``, which the runtime memory-maps for its embedding
lookups (see ``docs/export.md``).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import DynamicCache, Qwen2Model

from engine_format import io as engine_io
from engine_format.io import (  # noqa: F401 - re-exported: the one definition lives in engine_format
    DECODER,
    FRAME_SELECTOR,
    GRAPH_NAMES,
    IMAGE_ENCODER,
    VIDEO_ENCODER,
    GraphIO,
    TensorSpec,
    past_key_name,
    past_value_name,
    present_key_name,
    present_value_name,
)
from mobile_videogpt import frame_selection
from mobile_videogpt.facts import geometry
from mobile_videogpt.model import MobileVideoGPT
from mobile_videogpt.projector import pool_video_tokens

CACHE_KWARG = "cache" if "cache" in inspect.signature(Qwen2Model.forward).parameters else "past_key_values"
"""Keyword of the KV cache in ``Qwen2Model.forward`` (transformers renamed ``past_key_values`` to ``cache`` in 5.2x)."""

EMBED_TABLE_NAME = "embed_tokens.weight"
"""Initializer name of the tied embedding / lm_head table [V, H] inside the decoder graph."""


# ---------------------------------------------------------------------------------------------------------------- I/O
def io_tables(model: MobileVideoGPT) -> dict[str, GraphIO]:
    """The I/O table of every graph for one reference model (``engine_format.io.io_tables`` of its geometry)."""
    return engine_io.io_tables(geometry(model))


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
