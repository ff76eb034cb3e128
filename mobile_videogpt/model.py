"""Mobile-VideoGPT reference model: the whole inference path as separate, typed stages.

Dimensions:
    F = 16 frames, C = 2 chunks of T = 8, K = 4 kept per chunk, P = 196 patches, E = 768 (CLIP), M = 576 (VideoMamba),
    H = LLM hidden size, V = vocabulary rows, N = prompt length with 2402 visual rows.

Stage entry points (each callable alone, so export and the runtime can use any of them):
    ``preprocess``        RGB uint8 frames -> (video_pixels [F,3,224,224], context_pixels [F,3,224,224])
    ``encode_images``     context_pixels -> CLIP patch features [F, P, E]
    ``score_frames`` / ``select_frames``  features [F, P, E] -> scores [C, T] -> indices [C, K]
    ``encode_video``      the C*K selected video-branch frames -> VideoMamba tokens [C*K, P, M]
    ``project_video``     tokens -> pooled [C, K*49, M] -> video ETP [C, 49, H]
    ``project_images``    CLIP features -> image ETP [F, 144, H]
    ``merge_visual``      -> visual tokens [2402, H] (16 x 144 image rows, then 2 x 49 video rows)
    ``build_inputs_embeds`` prefix ids, visual rows, suffix ids -> inputs_embeds [N, H]
    ``forward_cached``    inputs_embeds [1, S, H] appended in place to a ``PreallocatedCache`` -> last-position logits [1, V]
    ``decode_step``       the same with flat per-layer KV in and out (checks; copies the past)
    ``generate``          greedy decoding with a preallocated KV cache

Module paths equal checkpoint keys: ``lm.model.embed_tokens`` / ``lm.model.layers`` / ``lm.model.norm`` (Qwen2 from
transformers), ``lm.model.vision_tower.vision_encoder.*`` (VideoMamba), ``lm.model.mm_projector.*`` and
``lm.model.image_mm_projector.*`` (ETP); ``lm.lm_head`` is tied to ``embed_tokens``. The checkpoint's keys are the
``lm`` state dict's keys; CLIP's keys (``vision_model.*``) are the ``clip`` state dict's keys.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import Qwen2ForCausalLM, Qwen2Model, Qwen2PreTrainedModel

try:  # transformers >= 5.x: skip random init of weights that the checkpoint overwrites anyway
    from transformers.initialization import no_init_weights
except ImportError:  # older 5.x releases keep it in modeling_utils
    from transformers.modeling_utils import no_init_weights

from engine_format.generation import apply_repetition_penalty
from mobile_videogpt import frame_selection
from mobile_videogpt.clip_encoder import CLIPImageEncoder
from mobile_videogpt.config import MobileVideoGPTConfig
from mobile_videogpt.kv_cache import PreallocatedCache
from mobile_videogpt.preprocess import ClipPreprocessConfig, preprocess_frames
from mobile_videogpt.projector import ETProjector, pool_video_tokens
from mobile_videogpt.videomamba import VideoMambaTower

logger = logging.getLogger(__name__)

# transformers 5.24 renamed the forward kwarg ``past_key_values`` to ``cache`` (old name deprecated until 5.40);
# the GPU image ships an older 5.x, so use whichever this version's signature has.
_CACHE_KWARG = "cache" if "cache" in inspect.signature(Qwen2ForCausalLM.forward).parameters else "past_key_values"

KVCache = list[tuple[torch.Tensor, torch.Tensor]]
"""Flat per-layer KV cache: ``[(key, value)] * layers``, each [B, kv_heads, P, head_dim] (BNSH, as HF)."""


class MobileVideoGPTQwenModel(Qwen2Model):
    """Qwen2 backbone plus the multimodal modules at the checkpoint's paths (release: ``MetaModel``)."""

    def __init__(self, config: MobileVideoGPTConfig) -> None:
        """Builds the decoder and the vision modules.

        Args:
            config: Full model configuration.
        """
        super().__init__(config.text)
        hidden = config.hidden_size
        p = config.pipeline
        self.vision_tower = VideoMambaTower(config.videomamba)
        # The release forces in_features to 576 (video) and 768 (image) whatever mm_hidden_size says.
        self.mm_projector = ETProjector(config.videomamba.embed_dim, hidden, out_side=p.video_pool)
        self.image_mm_projector = ETProjector(config.clip.hidden_size, hidden, out_side=p.image_pool)


class MobileVideoGPTForCausalLM(Qwen2ForCausalLM):
    """The checkpoint's model: Qwen2 causal LM whose backbone carries VideoMamba and both projectors."""

    def __init__(self, config: MobileVideoGPTConfig) -> None:
        """Builds the model with a tied lm_head.

        Args:
            config: Full model configuration.
        """
        # Skip Qwen2ForCausalLM.__init__ so the plain Qwen2Model is not built and thrown away.
        Qwen2PreTrainedModel.__init__(self, config.text)
        self.model = MobileVideoGPTQwenModel(config)
        self.vocab_size = config.text.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.text.vocab_size, bias=False)
        self.post_init()
        self.lm_head.weight = self.model.embed_tokens.weight  # tie_word_embeddings: one matrix for both


@dataclass
class VisualFeatures:
    """Every intermediate of the visual path for one 16-frame clip.

    Attributes:
        clip_features: CLIP patch features [F, P, E].
        frame_scores: Scores [C, T].
        selected_frames: Indices within each chunk [C, K].
        videomamba_tokens: VideoMamba patch tokens [C*K, P, M].
        videomamba_cls: The CLS row of VideoMamba's output [M] (dropped by the release; kept for checks).
        video_pooled: Pooled per chunk [C, K*49, M].
        video_projected: Video ETP output [C, 49, H].
        image_projected: Image ETP output [F, 144, H].
        visual_tokens: Merged rows [2402, H].
    """

    clip_features: torch.Tensor
    frame_scores: torch.Tensor
    selected_frames: torch.Tensor
    videomamba_tokens: torch.Tensor
    videomamba_cls: torch.Tensor
    video_pooled: torch.Tensor
    video_projected: torch.Tensor
    image_projected: torch.Tensor
    visual_tokens: torch.Tensor


class MobileVideoGPT(nn.Module):
    """The full reference: checkpoint model (``lm``) plus CLIP (``clip``) and the pipeline around them."""

    def __init__(self, config: MobileVideoGPTConfig, clip_preprocess: ClipPreprocessConfig) -> None:
        """Builds the model with uninitialised weights (load them with ``mobile_videogpt.checkpoint``).

        Args:
            config: Full model configuration.
            clip_preprocess: The CLIP directory's preprocessing values (``preprocessor_config.json``).
        """
        super().__init__()
        self.config = config
        self.clip_preprocess = clip_preprocess
        with no_init_weights():  # weights come from the checkpoint; random init of 0.5B params would cost ~10 s
            self.lm = MobileVideoGPTForCausalLM(config)
            self.clip = CLIPImageEncoder(config.clip, config.pipeline.select_layer)
        self.lm.lm_head.weight = self.lm.model.embed_tokens.weight

    # ---------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.lm.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Working dtype of the LLM weights."""
        return self.lm.model.embed_tokens.weight.dtype

    @property
    def vocab_size(self) -> int:
        """Embedding rows V (the logits width every backend must agree on)."""
        return int(self.lm.model.embed_tokens.weight.shape[0])

    # ---------------------------------------------------------------- visual stages
    def preprocess(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Both preprocessing branches.

        Args:
            frames: RGB uint8 frames [F, H, W, 3].

        Returns:
            ``(video_pixels, context_pixels)``, float32 [F, 3, 224, 224] each, on CPU.
        """
        return preprocess_frames(frames, self.clip_preprocess)

    @torch.no_grad()
    def encode_images(self, context_pixels: torch.Tensor) -> torch.Tensor:
        """CLIP patch features (``hidden_states[-2]``, CLS dropped).

        Args:
            context_pixels: CLIP-branch pixels [F, 3, 224, 224].

        Returns:
            Features [F, 196, 768].
        """
        return self.clip(context_pixels.to(self.device))

    @torch.no_grad()
    def score_frames(self, clip_features: torch.Tensor) -> torch.Tensor:
        """Attention-mass score of every frame, per chunk.

        Args:
            clip_features: CLIP patch features [F, P, E] with F = C * T.

        Returns:
            Scores [C, T].
        """
        p = self.config.pipeline
        f = clip_features.shape[0]
        if f % p.chunk_size:
            raise ValueError(f"{f} frames do not split into chunks of {p.chunk_size}")
        return frame_selection.score_frames(clip_features.reshape(f // p.chunk_size, p.chunk_size, *clip_features.shape[1:]))

    def select_frames(self, frame_scores: torch.Tensor) -> torch.Tensor:
        """Top-K frames per chunk, sorted by time.

        Args:
            frame_scores: Scores [C, T].

        Returns:
            Indices [C, K].
        """
        p = self.config.pipeline
        return frame_selection.select_top_k(frame_scores, p.top_k, p.largest)

    @torch.no_grad()
    def encode_video(self, selected_video_pixels: torch.Tensor) -> torch.Tensor:
        """VideoMamba on the selected frames as one clip, CLS dropped.

        Args:
            selected_video_pixels: Video-branch pixels of the C*K selected frames [8, 3, 224, 224], slot order.

        Returns:
            Tokens per frame slot [8, 196, 576].
        """
        return self.encode_video_with_cls(selected_video_pixels)[0]

    @torch.no_grad()
    def encode_video_with_cls(self, selected_video_pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VideoMamba on the selected frames, returning the patch tokens and the CLS row.

        Args:
            selected_video_pixels: [8, 3, 224, 224], slot order.

        Returns:
            ``(tokens [8, 196, 576], cls [576])``.
        """
        encoder = self.lm.model.vision_tower.vision_encoder
        clip = selected_video_pixels.to(self.device, encoder.pos_embed.dtype)
        x_vis = encoder(clip)  # [1, 1 + T*P, M]
        return x_vis[0, 1:].reshape(clip.shape[0], -1, x_vis.shape[-1]), x_vis[0, 0]

    @torch.no_grad()
    def pool_video(self, videomamba_tokens: torch.Tensor) -> torch.Tensor:
        """2x2 pooling per frame, regrouped per chunk.

        Args:
            videomamba_tokens: [C*K, 196, M].

        Returns:
            [C, K*49, M].
        """
        p = self.config.pipeline
        return pool_video_tokens(videomamba_tokens, p.video_pool, p.num_chunks)

    @torch.no_grad()
    def project_video(self, video_pooled: torch.Tensor) -> torch.Tensor:
        """Video ETP.

        Args:
            video_pooled: [C, 196, M].

        Returns:
            [C, 49, H].
        """
        proj = self.lm.model.mm_projector
        return proj(video_pooled.to(proj.mlp.mlp[0].weight.dtype))

    @torch.no_grad()
    def project_images(self, clip_features: torch.Tensor) -> torch.Tensor:
        """Image ETP.

        Args:
            clip_features: [F, 196, 768].

        Returns:
            [F, 144, H].
        """
        proj = self.lm.model.image_mm_projector
        return proj(clip_features.to(proj.mlp.mlp[0].weight.dtype))

    @staticmethod
    def merge_visual(image_projected: torch.Tensor, video_projected: torch.Tensor) -> torch.Tensor:
        """Merges the visual rows in the release's order: all image tokens, then the video chunks.

        Args:
            image_projected: [F, 144, H].
            video_projected: [C, 49, H].

        Returns:
            Visual tokens [F*144 + C*49, H] (2402 rows by default).
        """
        h = image_projected.shape[-1]
        return torch.cat([image_projected.reshape(-1, h), video_projected.reshape(-1, h)], dim=0)

    @torch.no_grad()
    def encode_clip(self, video_pixels: torch.Tensor, context_pixels: torch.Tensor) -> VisualFeatures:
        """Runs every visual stage on one clip.

        Args:
            video_pixels: Video-branch pixels [F, 3, 224, 224].
            context_pixels: CLIP-branch pixels [F, 3, 224, 224].

        Returns:
            All visual intermediates.
        """
        p = self.config.pipeline
        if video_pixels.shape[0] != p.num_frames or context_pixels.shape[0] != p.num_frames:
            raise ValueError(
                f"expected {p.num_frames} frames in both branches, got {video_pixels.shape[0]} and {context_pixels.shape[0]}"
            )
        clip_features = self.encode_images(context_pixels)
        scores = self.score_frames(clip_features)
        selected = self.select_frames(scores)
        tokens, cls = self.encode_video_with_cls(frame_selection.gather_selected_frames(video_pixels, selected.cpu()))
        pooled = self.pool_video(tokens)
        video_projected = self.project_video(pooled)
        image_projected = self.project_images(clip_features)
        return VisualFeatures(
            clip_features=clip_features,
            frame_scores=scores,
            selected_frames=selected,
            videomamba_tokens=tokens,
            videomamba_cls=cls,
            video_pooled=pooled,
            video_projected=video_projected,
            image_projected=image_projected,
            visual_tokens=self.merge_visual(image_projected, video_projected),
        )

    # ---------------------------------------------------------------- decoder stages
    @torch.no_grad()
    def embed_tokens(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Looks up token embeddings.

        Args:
            ids: Token ids [S].

        Returns:
            Embeddings [S, H].
        """
        ids_t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if ids_t.numel() and (int(ids_t.min()) < 0 or int(ids_t.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}); got min {int(ids_t.min())}, max {int(ids_t.max())}")
        return self.lm.model.embed_tokens(ids_t)

    @torch.no_grad()
    def build_inputs_embeds(
        self, prefix_ids: Sequence[int], visual_tokens: torch.Tensor, suffix_ids: Sequence[int]
    ) -> torch.Tensor:
        """Splices the visual rows between the prompt pieces (the whole ``<image>`` run becomes 2402 rows).

        Args:
            prefix_ids: Ids before the ``<image>`` placeholders.
            visual_tokens: [Nv, H].
            suffix_ids: Ids after the placeholders.

        Returns:
            inputs_embeds [len(prefix) + Nv + len(suffix), H].
        """
        parts = [self.embed_tokens(prefix_ids), visual_tokens.to(self.device, self.dtype), self.embed_tokens(suffix_ids)]
        return torch.cat(parts, dim=0)

    def allocate_cache(self, capacity: int) -> PreallocatedCache:
        """A preallocated KV cache for ``capacity`` positions in the model's dtype and device (batch 1)."""
        return PreallocatedCache.for_model(self.lm.config, capacity, self.dtype, self.device)

    @torch.no_grad()
    def forward_cached(
        self,
        inputs_embeds: torch.Tensor,
        cache: PreallocatedCache,
        position_ids: torch.Tensor | None = None,
        all_logits: bool = False,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The one decoder call: first prefill, append onto a past, or single-token decode, in place.

        The S new positions are written into ``cache`` (no copy of the past, no reallocation).

        Args:
            inputs_embeds: [B, S, H].
            cache: The cache (P live positions before the call, P + S after).
            position_ids: [B, S]; defaults to P .. P+S-1.
            all_logits: Return logits for every new position instead of the last one.
            attention_mask: A prepared 4-D boolean mask ``[B, 1, S, KV]`` used as it is (the CUDA-graph decode step
                over a static-write cache); default: the causal mask transformers builds from the cache.

        Returns:
            Logits [B, V] (or [B, S, V]) in fp32.
        """
        if position_ids is None:
            s, p = inputs_embeds.shape[1], cache.length
            position_ids = torch.arange(p, p + s, device=inputs_embeds.device)[None].expand(inputs_embeds.shape[0], -1)
        out = self.lm(
            inputs_embeds=inputs_embeds.to(self.device, self.dtype),
            position_ids=position_ids.to(self.device),
            attention_mask=attention_mask,
            use_cache=True,
            logits_to_keep=0 if all_logits else 1,
            **{_CACHE_KWARG: cache},
        )
        logits = out.logits.float()
        return logits if all_logits else logits[:, -1]

    @torch.no_grad()
    def decode_step(
        self,
        inputs_embeds: torch.Tensor,
        past: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
        all_logits: bool = False,
    ) -> tuple[torch.Tensor, KVCache]:
        """:meth:`forward_cached` with flat per-layer KV in and out (checks and conformance; copies the past).

        Args:
            inputs_embeds: [B, S, H].
            past: Per-layer (key, value) [B, kv_heads, P, head_dim], or None for an empty past.
            position_ids: [B, S]; defaults to P .. P+S-1.
            all_logits: Return logits for every position instead of the last one.

        Returns:
            ``(logits, present)``: logits [B, V] (or [B, S, V]) in fp32 and the per-layer present KV with P+S
            positions (views of a fresh cache).
        """
        past_len = past[0][0].shape[2] if past else 0
        cache = self.allocate_cache(past_len + inputs_embeds.shape[1])
        if past:
            for (key_buf, value_buf), (k, v) in zip(cache.buffers(), past):
                key_buf[:, :, :past_len].copy_(k)
                value_buf[:, :, :past_len].copy_(v)
            cache.set_length(past_len)
        logits = self.forward_cached(inputs_embeds, cache, position_ids, all_logits)
        return logits, cache.views()

    @torch.no_grad()
    def generate(
        self,
        inputs_embeds: torch.Tensor,
        max_new_tokens: int,
        eos_token_ids: Sequence[int] = (),
        repetition_penalty: float = 1.0,
    ) -> tuple[list[int], torch.Tensor]:
        """Greedy decoding with a preallocated KV cache (HF ``generate`` with do_sample=False, num_beams=1).

        The reference's one decode loop (the runtime has its own over its backends). A repetition penalty is HF's
        ``RepetitionPenaltyLogitsProcessor`` over the generated ids only (the prompt is given as embeddings, so HF's
        ``input_ids`` start empty), applied before the arg-max by the one shared function
        (:func:`engine_format.generation.apply_repetition_penalty`).

        Args:
            inputs_embeds: Prompt embeddings [N, H] or [1, N, H].
            max_new_tokens: Maximum new tokens.
            eos_token_ids: Ids that stop decoding (included in the output, as HF returns them).
            repetition_penalty: The checkpoint's ``generation_config.json`` value (1.0: plain arg-max).

        Returns:
            ``(new_ids, step_logits [n, V])``: the raw logits (before the penalty) at each step.
        """
        embeds = inputs_embeds if inputs_embeds.dim() == 3 else inputs_embeds[None]
        cache = self.allocate_cache(embeds.shape[1] + max_new_tokens)
        stop = {int(i) for i in eos_token_ids}
        ids: list[int] = []
        step_logits = []
        for _ in range(max_new_tokens):
            logits = self.forward_cached(embeds, cache)[0]
            scores = logits
            if repetition_penalty != 1.0 and ids:
                scores = torch.from_numpy(apply_repetition_penalty(logits.cpu().numpy(), ids, repetition_penalty))
            token = int(torch.argmax(scores))
            ids.append(token)
            step_logits.append(logits)
            if token in stop:
                break
            embeds = self.embed_tokens([token])[None]
        stacked = torch.stack(step_logits) if step_logits else torch.empty(0, self.vocab_size)
        return ids, stacked
