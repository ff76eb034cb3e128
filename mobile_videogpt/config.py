"""Typed configuration of the Mobile-VideoGPT reference model.

The checkpoint's ``config.json`` (Hugging Face layout, ``model_type: MobileVideoGPT_qwen``) is read once, validated, and
turned into three typed parts: the Qwen2 decoder config (a transformers ``Qwen2Config``), the VideoMamba-M config and
the pipeline constants (frames, chunks, top-K, pooling). The CLIP vision config comes from the CLIP directory.

Values the release hard-codes rather than reading from ``config.json`` (VideoMamba geometry, CHUNK_SIZE, K) are fixed
here with the release's values; ``videomamba_depth`` is the one the golden vectors change (32 -> 2), so it can be given
in ``config.json`` (our synthetic checkpoints write it) or inferred from the checkpoint's tensor names by the loader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import CLIPVisionConfig, Qwen2Config

from engine_format import read_json_object

MODEL_TYPE = "MobileVideoGPT_qwen"


class ModelConfigError(ValueError):
    """A checkpoint or CLIP configuration is missing a field or has a value this model cannot run."""


@dataclass(frozen=True)
class VideoMambaConfig:
    """VideoMamba-M hyperparameters (release: ``videomamba/config.py``, "videomamba_middle").

    Attributes:
        depth: Number of bidirectional Mamba blocks (32 in the release).
        embed_dim: Model width d_model (576).
        d_state: SSM state size N (16).
        d_conv: Causal depthwise conv width (4).
        expand: Inner expansion factor (2, so d_inner = 1152).
        img_size: Input resolution (224).
        patch_size: Spatial patch size (16, so 14x14 patches).
        num_frames: Temporal positions (8; the temporal embedding has exactly 8 rows).
        norm_eps: RMSNorm epsilon (1e-5).
        clip_decoder_dim: Width of the unused ``clip_decoder`` head kept for strict loading (512).
        scan_impl: Name of the selective-scan implementation (``mobile_videogpt.selective_scan.SCAN_IMPLS``).
    """

    depth: int = 32
    embed_dim: int = 576
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    img_size: int = 224
    patch_size: int = 16
    num_frames: int = 8
    norm_eps: float = 1e-5
    clip_decoder_dim: int = 512
    scan_impl: str = "ref"

    @property
    def d_inner(self) -> int:
        """Inner width of the mixer (expand * d_model)."""
        return self.expand * self.embed_dim

    @property
    def dt_rank(self) -> int:
        """Rank of the step-size projection (ceil(d_model / 16))."""
        return math.ceil(self.embed_dim / 16)

    @property
    def grid(self) -> int:
        """Patches per side (14)."""
        return self.img_size // self.patch_size


@dataclass(frozen=True)
class PipelineConfig:
    """Release constants of the multimodal pipeline (``constants.py``, ``arch.py``).

    Attributes:
        num_frames: Frames per clip, for both branches (NUM_FRAMES = NUM_CONTEXT_IMAGES = 16).
        chunk_size: Frames per scoring chunk (CHUNK_SIZE = 8).
        top_k: Frames kept per chunk (num_select_k_frames_in_chunk = 4).
        largest: Keep the largest scores (``topk=True``).
        select_layer: CLIP hidden-state index (mm_vision_select_layer = -2).
        image_pool: Image ETP pooled grid side (12).
        video_pool: Video pooled grid side, both per frame and in the ETP (7).
        image_size: Input resolution of both branches (224).
    """

    num_frames: int = 16
    chunk_size: int = 8
    top_k: int = 4
    largest: bool = True
    select_layer: int = -2
    image_pool: int = 12
    video_pool: int = 7
    image_size: int = 224

    @property
    def num_chunks(self) -> int:
        """Chunks per clip (16 // 8 = 2)."""
        return self.num_frames // self.chunk_size

    @property
    def num_visual_tokens(self) -> int:
        """Visual rows spliced into the prompt: 16 x 144 + 2 x 49 = 2402."""
        return self.num_frames * self.image_pool**2 + self.num_chunks * self.video_pool**2


@dataclass(frozen=True)
class MobileVideoGPTConfig:
    """Everything needed to build the reference model.

    Attributes:
        text: The Qwen2 decoder config.
        videomamba: VideoMamba-M config.
        clip: CLIP vision tower config.
        pipeline: Frame/chunk/pooling constants.
        raw: The checkpoint's config.json as read (kept for re-saving).
    """

    text: Qwen2Config
    videomamba: VideoMambaConfig
    clip: CLIPVisionConfig
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        """LLM hidden size H (896 for 0.5B, 1536 for 1.5B)."""
        return int(self.text.hidden_size)

    def __post_init__(self) -> None:
        p = self.pipeline
        if p.num_chunks * p.top_k != self.videomamba.num_frames:
            raise ModelConfigError(
                f"num_chunks ({p.num_chunks}) x top_k ({p.top_k}) must equal VideoMamba's {self.videomamba.num_frames}"
                " temporal positions"
            )
        self.check_clip(self.clip, p.image_size, self.videomamba.patch_size)

    @staticmethod
    def check_clip(clip: CLIPVisionConfig, image_size: int = 224, patch_size: int = 16) -> None:
        """Checks that a CLIP vision config is the ViT-B/16 geometry the pipeline needs (224 px, patch 16, 768 wide).

        Raises:
            ModelConfigError: Naming the value that differs.
        """
        if clip.image_size != image_size or clip.patch_size != patch_size:
            raise ModelConfigError(
                f"CLIP geometry image_size={clip.image_size}, patch_size={clip.patch_size} is not the"
                f" {image_size}/{patch_size} this model needs"
            )
        if clip.hidden_size != 768:
            raise ModelConfigError(f"CLIP hidden_size is {clip.hidden_size}; the image projector expects 768")


_REQUIRED_TEXT_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "rms_norm_eps",
    "rope_theta",
    "max_position_embeddings",
)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """Reads a JSON object from ``path``, raising ModelConfigError that names ``what`` on failure."""
    return read_json_object(path, what, ModelConfigError)


def text_config_from_dict(raw: dict[str, Any]) -> Qwen2Config:
    """Builds the Qwen2 decoder config from a Mobile-VideoGPT config.json dict.

    Args:
        raw: The parsed config.json.

    Returns:
        A ``Qwen2Config`` with the checkpoint's geometry.

    Raises:
        ModelConfigError: If a required field is missing or the projector/tower types are not the released ones.
    """
    if raw.get("model_type") != MODEL_TYPE:
        raise ModelConfigError(f"config.json: model_type is {raw.get('model_type')!r}, expected {MODEL_TYPE!r}")
    missing = [k for k in _REQUIRED_TEXT_FIELDS if k not in raw]
    if missing:
        raise ModelConfigError(f"config.json: missing field(s) {missing}")
    for key in ("mm_projector_type", "image_mm_projector_type"):
        if raw.get(key, "etp") != "etp":
            raise ModelConfigError(f"config.json: {key} is {raw.get(key)!r}; only 'etp' (the released projector) is supported")
    if raw.get("mm_vision_select_layer", -2) != -2:
        raise ModelConfigError(f"config.json: mm_vision_select_layer is {raw['mm_vision_select_layer']}, expected -2")
    if raw.get("mm_vision_select_feature", "patch") != "patch":
        raise ModelConfigError("config.json: mm_vision_select_feature must be 'patch'")
    if raw.get("rope_scaling") not in (None, {}):
        # The release forces rope_scaling=None in qwen.py; say so rather than silently differ.
        raise ModelConfigError("config.json: rope_scaling must be null (the release forces it to None)")
    return Qwen2Config(
        hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"],
        num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"],
        num_key_value_heads=raw["num_key_value_heads"],
        vocab_size=raw["vocab_size"],
        rms_norm_eps=raw["rms_norm_eps"],
        rope_theta=raw["rope_theta"],
        max_position_embeddings=raw["max_position_embeddings"],
        hidden_act=raw.get("hidden_act", "silu"),
        attention_dropout=raw.get("attention_dropout", 0.0),
        tie_word_embeddings=raw.get("tie_word_embeddings", True),
        bos_token_id=raw.get("bos_token_id"),
        eos_token_id=raw.get("eos_token_id"),
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=raw.get("max_window_layers", raw["num_hidden_layers"]),
        attn_implementation=raw.get("attn_implementation", "sdpa"),
    )


def clip_vision_fields(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """The vision-tower fields of a CLIP ``config.json``: a ``CLIPVisionModel`` config, or a full ``CLIPModel`` one.

    A ``CLIPModel`` config (``openai/clip-vit-base-patch16``) nests them in ``vision_config``; older files also carry
    ``vision_config_dict``, whose values win (as in transformers' ``CLIPConfig``).

    Args:
        raw: The parsed config.json.
        where: The file, for messages.

    Raises:
        ModelConfigError: If the file is neither layout.
    """
    if raw.get("model_type") == "clip" or "vision_config" in raw or "vision_config_dict" in raw:
        fields = raw.get("vision_config") or {}
        override = raw.get("vision_config_dict") or {}
        if not isinstance(fields, dict) or not isinstance(override, dict):
            raise ModelConfigError(f"CLIP config {where}: vision_config / vision_config_dict must be objects")
        fields = {**fields, **override}
        if not fields:
            raise ModelConfigError(f"CLIP config {where}: a CLIPModel config without a vision_config")
        return fields
    return raw


def load_clip_config(clip_dir: Path) -> CLIPVisionConfig:
    """Reads and validates the CLIP vision config of a CLIP directory (``CLIPVisionModel`` or full ``CLIPModel``).

    Args:
        clip_dir: Directory with config.json.

    Returns:
        The CLIP vision config.
    """
    path = Path(clip_dir) / "config.json"
    raw = clip_vision_fields(_read_json(path, "CLIP config"), str(path))
    if raw.get("model_type", "clip_vision_model") not in ("clip_vision_model", "clip"):
        raise ModelConfigError(f"CLIP config {path}: model_type {raw.get('model_type')!r} is not a CLIP vision model")
    try:
        cfg = CLIPVisionConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(f"CLIP config {path}: not a valid CLIP vision config ({exc})") from exc
    cfg._attn_implementation = "sdpa"
    return cfg


def load_config(
    model_dir: Path,
    clip_dir: Path | None,
    videomamba_depth: int | None = None,
    scan_impl: str = "ref",
    clip: CLIPVisionConfig | None = None,
) -> MobileVideoGPTConfig:
    """Loads the full model configuration from a checkpoint directory and a CLIP directory.

    Args:
        model_dir: Checkpoint directory with config.json.
        clip_dir: CLIP directory with config.json (None when ``clip`` is given).
        videomamba_depth: VideoMamba depth when config.json does not say (the loader infers it from tensor names).
        scan_impl: Selective-scan implementation name (a run-time choice, not a checkpoint property).
        clip: The CLIP vision config itself, instead of reading ``clip_dir`` (header-only checks of a model
            directory).

    Returns:
        The validated configuration.
    """
    path = Path(model_dir) / "config.json"
    raw = _read_json(path, "checkpoint config")
    try:
        text = text_config_from_dict(raw)
    except ModelConfigError as exc:
        raise ModelConfigError(f"{path}: {str(exc).removeprefix('config.json: ')}") from exc
    except (TypeError, ValueError) as exc:  # a field of the wrong type, refused by Qwen2Config
        raise ModelConfigError(f"{path}: not a valid Qwen2 text config ({exc})") from exc
    depth = raw.get("videomamba_depth", videomamba_depth if videomamba_depth is not None else 32)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ModelConfigError(f"{path}: videomamba_depth = {depth!r}: must be an integer >= 1")
    vm = VideoMambaConfig(depth=depth, scan_impl=scan_impl)
    if clip is None:
        if clip_dir is None:
            raise ValueError("load_config needs clip_dir or clip")
        clip = load_clip_config(clip_dir)
    return MobileVideoGPTConfig(text=text, videomamba=vm, clip=clip, raw=raw)
