"""Synthetic random-weight checkpoints in the exact official layout, written offline.

``python -m mobile_videogpt.synthetic --preset {tiny,tiny-golden,0.5b,1.5b} --out DIR`` writes::

    DIR/model/  config.json, model.safetensors (F16, official key names, no lm_head: tied), generation_config.json,
                tokenizer files (the real Qwen2.5 tokenizer rebuilt locally; not for tiny-golden), synthetic.json
    DIR/clip/   config.json (CLIPVisionModel), model.safetensors (``vision_model.*``), preprocessor_config.json

Options write the other published layouts (``mobile_videogpt.synthetic_layouts``): ``--dtype BF16|F32``,
``--shards N``, ``--generation-config qwen-instruct|none``, ``--clip-layout clipmodel`` (the full CLIPModel of
``openai/clip-vit-base-patch16``), ``--clip-format bin`` (``pytorch_model.bin``) and ``--hf-cache`` (both as Hugging
Face cache repositories under ``DIR/hub``).

Everything produced from these weights is meaningless and must be labelled "random weights"; ``synthetic.json``
marks the directory so tools can say so.

The weights follow the recipe of the golden conformance vectors (``../shared/golden/*/README.md``, "Weights"):
numpy ``default_rng(seed)`` visiting tensor names in sorted order, Mamba-style ``A_log``/``dt_proj.bias``/``D`` init,
norm weights ``1 + 0.02 N(0,1)``, scaled normals elsewhere, rounded to float16. With the ``tiny-golden`` preset the
output is bit-identical to the golden checkpoint (a test checks it), which proves the layout. The real-geometry
presets use the HF initializer range (0.02) for the LLM instead of the golden 0.2, so activations stay in a
realistic range for fp16 checks.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_videogpt.synthetic_layouts import (
    CLIP_FORMATS,
    CLIP_LAYOUTS,
    CLIP_REPO,
    GENERATION_CONFIGS,
    MODEL_REPO,
    STORED_DTYPES,
    LayoutOptions,
    clip_text_tensors,
    clipmodel_config_json,
    generation_config_json,
    move_into_hf_cache,
    save_model_weights,
    save_tensors,
)

logger = logging.getLogger(__name__)

SYNTHETIC_MARKER = "synthetic.json"
CHECKPOINT_SEED = 1234
CLIP_SEED = 2234


@dataclass(frozen=True)
class Preset:
    """Geometry of one synthetic checkpoint.

    Attributes:
        name: Preset name.
        hidden: LLM hidden size.
        intermediate: LLM MLP width.
        layers: LLM layers.
        heads: Attention heads.
        kv_heads: KV heads.
        vocab: Embedding rows.
        max_positions: max_position_embeddings.
        videomamba_depth: VideoMamba blocks.
        clip_layers: CLIP encoder layers.
        clip_intermediate: CLIP MLP width.
        llm_std: Std of LLM weight draws.
        tokenizer: Whether to write the real Qwen2.5 tokenizer.
        bos: bos_token_id.
        eos: eos_token_id.
    """

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    max_positions: int
    videomamba_depth: int
    clip_layers: int
    clip_intermediate: int
    llm_std: float
    tokenizer: bool
    bos: int
    eos: int


PRESETS: dict[str, Preset] = {
    # The golden vectors' geometry with raw-id prompts (no tokenizer): reproduces the golden checkpoint bit for bit.
    "tiny-golden": Preset("tiny-golden", 128, 256, 2, 4, 2, 1000, 4096, 2, 2, 256, 0.2, False, 998, 999),
    # Same tiny towers, real Qwen2.5 vocabulary and tokenizer: what tests, export and the demo use.
    "tiny": Preset("tiny", 128, 256, 2, 4, 2, 151666, 32768, 2, 2, 256, 0.2, True, 151643, 151645),
    # Real geometries (random weights) for benchmarks.
    "0.5b": Preset("0.5b", 896, 4864, 24, 14, 2, 151666, 32768, 32, 12, 3072, 0.02, True, 151643, 151645),
    "1.5b": Preset("1.5b", 1536, 8960, 28, 12, 2, 151666, 32768, 32, 12, 3072, 0.02, True, 151643, 151645),
}


def checkpoint_shapes(p: Preset) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model checkpoint with its shape (official key names).

    Args:
        p: Preset.

    Returns:
        Name -> shape.
    """
    h, kv = p.hidden, p.kv_heads * (p.hidden // p.heads)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (p.vocab, h), "model.norm.weight": (h,)}
    for i in range(p.layers):
        pre = f"model.layers.{i}."
        shapes |= {
            pre + "input_layernorm.weight": (h,),
            pre + "post_attention_layernorm.weight": (h,),
            pre + "self_attn.q_proj.weight": (h, h),
            pre + "self_attn.q_proj.bias": (h,),
            pre + "self_attn.k_proj.weight": (kv, h),
            pre + "self_attn.k_proj.bias": (kv,),
            pre + "self_attn.v_proj.weight": (kv, h),
            pre + "self_attn.v_proj.bias": (kv,),
            pre + "self_attn.o_proj.weight": (h, h),
            pre + "mlp.gate_proj.weight": (p.intermediate, h),
            pre + "mlp.up_proj.weight": (p.intermediate, h),
            pre + "mlp.down_proj.weight": (h, p.intermediate),
        }
    for name, in_dim in (("mm_projector", 576), ("image_mm_projector", 768)):
        pre = f"model.{name}."
        shapes |= {
            pre + "mlp.mlp.0.weight": (h, in_dim),
            pre + "mlp.mlp.0.bias": (h,),
            pre + "mlp.mlp.2.weight": (h, h),
            pre + "mlp.mlp.2.bias": (h,),
            pre + "peg.peg.0.weight": (h, 1, 3, 3),
            pre + "peg.peg.0.bias": (h,),
        }
    vm = "model.vision_tower.vision_encoder."
    m, di, n, r = 576, 1152, 16, 36
    shapes |= {
        vm + "patch_embed.proj.weight": (m, 3, 1, 16, 16),
        vm + "patch_embed.proj.bias": (m,),
        vm + "cls_token": (1, 1, m),
        vm + "pos_embed": (1, 197, m),
        vm + "temporal_pos_embedding": (1, 8, m),
        vm + "norm.weight": (m,),
        vm + "clip_decoder.0.head.weight": (512, m),
        vm + "clip_decoder.0.head.bias": (512,),
        vm + "clip_decoder.0.norm.weight": (512,),
        vm + "clip_decoder.0.norm.bias": (512,),
    }
    for i in range(p.videomamba_depth):
        pre = f"{vm}layers.{i}."
        shapes[pre + "norm.weight"] = (m,)
        mx = pre + "mixer."
        shapes |= {mx + "in_proj.weight": (2 * di, m), mx + "out_proj.weight": (m, di)}
        for sfx in ("", "_b"):
            shapes |= {
                f"{mx}conv1d{sfx}.weight": (di, 1, 4),
                f"{mx}conv1d{sfx}.bias": (di,),
                f"{mx}x_proj{sfx}.weight": (r + 2 * n, di),
                f"{mx}dt_proj{sfx}.weight": (di, r),
                f"{mx}dt_proj{sfx}.bias": (di,),
                f"{mx}A{sfx}_log": (di, n),
                f"{mx}D{sfx}": (di,),
            }
    return shapes


def clip_shapes(p: Preset) -> dict[str, tuple[int, ...]]:
    """Every tensor of the CLIP vision checkpoint (``vision_model.*``).

    Args:
        p: Preset.

    Returns:
        Name -> shape.
    """
    e, f = 768, p.clip_intermediate
    pre = "vision_model."
    shapes: dict[str, tuple[int, ...]] = {
        pre + "embeddings.class_embedding": (e,),
        pre + "embeddings.patch_embedding.weight": (e, 3, 16, 16),
        pre + "embeddings.position_embedding.weight": (197, e),
        pre + "pre_layrnorm.weight": (e,),
        pre + "pre_layrnorm.bias": (e,),
        pre + "post_layernorm.weight": (e,),
        pre + "post_layernorm.bias": (e,),
    }
    for i in range(p.clip_layers):
        lp = f"{pre}encoder.layers.{i}."
        for ln in ("layer_norm1", "layer_norm2"):
            shapes |= {lp + f"{ln}.weight": (e,), lp + f"{ln}.bias": (e,)}
        shapes |= {lp + "mlp.fc1.weight": (f, e), lp + "mlp.fc1.bias": (f,), lp + "mlp.fc2.weight": (e, f), lp + "mlp.fc2.bias": (e,)}
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes |= {lp + f"self_attn.{proj}.weight": (e, e), lp + f"self_attn.{proj}.bias": (e,)}
    return shapes


_MIXER_STD = {
    "in_proj.weight": 0.04,
    "conv1d.weight": 0.3,
    "conv1d.bias": 0.3,
    "conv1d_b.weight": 0.3,
    "conv1d_b.bias": 0.3,
    "x_proj.weight": 0.08,
    "x_proj_b.weight": 0.08,
    "dt_proj.weight": 0.1,
    "dt_proj_b.weight": 0.1,
    "out_proj.weight": 0.05,
}


def draw_tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...], llm_std: float) -> np.ndarray:
    """Draws one tensor by the golden recipe's first matching rule, rounded to float16.

    Args:
        rng: The file's single generator stream.
        name: Tensor name.
        shape: Tensor shape.
        llm_std: Std for LLM tensors (rule 5).

    Returns:
        Float16 array.
    """
    parts = name.split(".")
    last = parts[-1]
    if name.endswith("A_log") or name.endswith("A_b_log"):
        value = np.log(np.arange(1, shape[-1] + 1, dtype=np.float64))[None, :] + 0.02 * rng.standard_normal(shape)
    elif name.endswith("dt_proj.bias") or name.endswith("dt_proj_b.bias"):
        u = rng.random(shape)
        dt = np.exp(u * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        dt = np.maximum(dt, 1e-4)
        value = dt + np.log(-np.expm1(-dt))  # inverse softplus
    elif last in ("D", "D_b"):
        value = np.ones(shape)
    elif last == "weight" and len(parts) >= 2 and "norm" in parts[-2]:
        value = 1.0 + 0.02 * rng.standard_normal(shape)
    elif name.startswith("model.embed_tokens.") or name.startswith("model.layers."):
        value = llm_std * rng.standard_normal(shape)
    elif ".mixer." in name:
        suffix = name.split(".mixer.")[1]
        value = _MIXER_STD[suffix] * rng.standard_normal(shape)
    else:
        value = 0.02 * rng.standard_normal(shape)
    return value.astype(np.float16)


def draw_tensors(shapes: dict[str, tuple[int, ...]], seed: int, llm_std: float) -> Iterator[tuple[str, np.ndarray]]:
    """Draws all tensors of one file in sorted-name order from one generator.

    Args:
        shapes: Name -> shape.
        seed: Generator seed.
        llm_std: Std for LLM tensors.

    Yields:
        ``(name, float16 array)``.
    """
    rng = np.random.default_rng(seed)
    for name in sorted(shapes):
        yield name, draw_tensor(rng, name, shapes[name], llm_std)


def model_config_json(p: Preset) -> dict[str, object]:
    """The checkpoint's config.json with the real field names.

    Args:
        p: Preset.

    Returns:
        The config dict.
    """
    cfg: dict[str, object] = {
        "_name_or_path": f"mobile-videogpt-synthetic-{p.name}",
        "architectures": ["MobileVideoGPTQwenForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": p.bos,
        "eos_token_id": p.eos,
        "freeze_mm_mlp_adapter": False,
        "hidden_act": "silu",
        "hidden_size": p.hidden,
        "image_aspect_ratio": "pad",
        "image_grid_pinpoints": None,
        "image_mm_hidden_size": 768,
        "image_mm_projector_type": "etp",
        "image_mm_vision_tower": "openai/clip-vit-base-patch16",
        "initializer_range": 0.02,
        "intermediate_size": p.intermediate,
        "max_position_embeddings": p.max_positions,
        "max_window_layers": p.layers if p.name == "tiny-golden" else 21,
        "mm_hidden_size": 768,
        "mm_projector_lr": 2e-05,
        "mm_projector_type": "etp",
        "mm_use_box_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "OpenGVLab/VideoMamba/videomamba_m16_25M_f8_res224.pth",
        "model_type": "MobileVideoGPT_qwen",
        "num_attention_heads": p.heads,
        "num_hidden_layers": p.layers,
        "num_key_value_heads": p.kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": p.max_positions,
        "tie_word_embeddings": True,
        "torch_dtype": "float16",
        "transformers_version": "4.41.0",
        "tune_mm_mlp_adapter": False,
        "use_cache": True,
        "use_mm_proj": True,
        "use_sliding_window": False,
        "vocab_size": p.vocab,
    }
    return cfg


def clip_config_json(p: Preset) -> dict[str, object]:
    """The CLIP directory's config.json (openai/clip-vit-base-patch16 vision geometry).

    Args:
        p: Preset.

    Returns:
        The config dict.
    """
    return {
        "architectures": ["CLIPVisionModel"],
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "quick_gelu",
        "hidden_size": 768,
        "image_size": 224,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": p.clip_intermediate,
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": 12,
        "num_channels": 3,
        "num_hidden_layers": p.clip_layers,
        "patch_size": 16,
        "projection_dim": 512,
        "torch_dtype": "float32",
    }


CLIP_PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}


def _write_json(path: Path, data: object) -> None:
    """Writes pretty JSON."""
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_synthetic_checkpoint(
    preset: str, out: Path, with_tokenizer: bool = True, layout: LayoutOptions | None = None
) -> tuple[Path, Path]:
    """Writes a random-weight model directory and CLIP directory.

    Args:
        preset: One of ``PRESETS``.
        out: Output directory; ``out/model`` and ``out/clip`` are created (with ``layout.hf_cache``, the HF cache
            repositories ``out/hub/models--synthetic--Mobile-VideoGPT-<preset>`` and
            ``out/hub/models--openai--clip-vit-base-patch16``).
        with_tokenizer: Write the tokenizer files for presets that have a real vocabulary (False on machines
            without the ``dashscope`` vocabulary file, e.g. a GPU box that only measures numerics).
        layout: The on-disk layout (default: F16, one file, vision-only CLIP in safetensors).

    Returns:
        ``(model_dir, clip_dir)``: the directories, or the HF cache repository roots.

    Raises:
        ValueError: For an unknown preset.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    layout = layout or LayoutOptions()
    p = PRESETS[preset]
    model_dir, clip_dir = Path(out) / "model", Path(out) / "clip"
    model_dir.mkdir(parents=True, exist_ok=True)
    clip_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*model_dir.glob("model*.safetensors*"), *clip_dir.glob("model.safetensors"),
                  *clip_dir.glob("pytorch_model.bin"), model_dir / "generation_config.json"]:
        stale.unlink(missing_ok=True)  # another layout written here before
    logger.info("drawing %s checkpoint tensors (random weights)", preset)
    save_model_weights(dict(draw_tensors(checkpoint_shapes(p), CHECKPOINT_SEED, p.llm_std)), model_dir, layout)
    _write_json(model_dir / "config.json", model_config_json(p))
    clip_tensors = dict(draw_tensors(clip_shapes(p), CLIP_SEED, p.llm_std))
    clip_config: dict[str, object] = clip_config_json(p)
    if layout.clip_layout == "clipmodel":
        clip_tensors |= dict(clip_text_tensors(p.clip_layers))
        clip_config = clipmodel_config_json(clip_config, p.clip_layers)
    weights = "pytorch_model.bin" if layout.clip_format == "bin" else "model.safetensors"
    save_tensors(clip_tensors, clip_dir / weights, layout.dtype)
    _write_json(clip_dir / "config.json", clip_config)
    _write_json(clip_dir / "preprocessor_config.json", CLIP_PREPROCESSOR)
    if p.tokenizer and with_tokenizer:
        from mobile_videogpt.tokenizer import build_qwen2_tokenizer  # only presets with a real vocabulary need it

        build_qwen2_tokenizer(model_dir)
    generation = generation_config_json(layout.generation_config, p.bos)
    if p.tokenizer and generation is not None:  # Qwen stop ids: only for the real vocabulary
        _write_json(model_dir / "generation_config.json", generation)
    marker = {"random_weights": True, "preset": preset, "checkpoint_seed": CHECKPOINT_SEED, "clip_seed": CLIP_SEED,
              "layout": layout.as_dict()}
    for d in (model_dir, clip_dir):
        _write_json(d / SYNTHETIC_MARKER, marker)
    if layout.hf_cache:
        hub = Path(out) / "hub"
        model_dir = move_into_hf_cache(model_dir, hub, MODEL_REPO.format(preset=preset))
        clip_dir = move_into_hf_cache(clip_dir, hub, CLIP_REPO)
    logger.info("wrote %s and %s", model_dir, clip_dir)
    return model_dir, clip_dir


def is_synthetic(model_dir: Path) -> bool:
    """Whether a model directory was written by this module (its outputs come from random weights).

    Args:
        model_dir: Checkpoint directory (an HF cache repository root is looked into: ``refs/main``'s snapshot).

    Returns:
        True when the synthetic marker is present.
    """
    model_dir = Path(model_dir)
    ref = model_dir / "refs" / "main"
    if ref.is_file():
        model_dir = model_dir / "snapshots" / ref.read_text(encoding="utf-8").strip()
    return (model_dir / SYNTHETIC_MARKER).is_file()


def ensure_synthetic_checkpoint(preset: str, out: Path, with_tokenizer: bool = True) -> tuple[Path, Path]:
    """Returns the synthetic checkpoint at ``out``, writing it first if it is missing or incomplete.

    Args:
        preset: Preset name.
        out: Output directory.
        with_tokenizer: See ``write_synthetic_checkpoint``.

    Returns:
        ``(model_dir, clip_dir)``.
    """
    model_dir, clip_dir = Path(out) / "model", Path(out) / "clip"
    marker = model_dir / SYNTHETIC_MARKER
    if marker.is_file() and (clip_dir / SYNTHETIC_MARKER).is_file():
        written = json.loads(marker.read_text())
        # Markers written before layouts existed describe the default layout.
        if written.get("preset") == preset and written.get("layout", LayoutOptions().as_dict()) == LayoutOptions().as_dict():
            return model_dir, clip_dir
    return write_synthetic_checkpoint(preset, out, with_tokenizer)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (defaults to sys.argv).

    Returns:
        Exit code.
    """
    parser = argparse.ArgumentParser(description="Write a random-weight Mobile-VideoGPT checkpoint (official layout).")
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, type=Path, help="output directory (model/ and clip/ are created)")
    layout = parser.add_argument_group("layout (default: F16, one safetensors file, vision-only CLIP)")
    layout.add_argument("--dtype", default="F16", choices=STORED_DTYPES, help="stored dtype of every float tensor")
    layout.add_argument("--shards", type=int, default=1, help="model weight files (> 1: sharded with an index)")
    layout.add_argument("--generation-config", default="greedy", choices=GENERATION_CONFIGS,
                        help="greedy: stop ids only; qwen-instruct: Qwen2.5-Instruct's (repetition_penalty 1.1); "
                        "none: no file")
    layout.add_argument("--clip-layout", default="vision", choices=CLIP_LAYOUTS,
                        help="clipmodel: the full CLIPModel of openai/clip-vit-base-patch16 (text tower included)")
    layout.add_argument("--clip-format", default="safetensors", choices=CLIP_FORMATS,
                        help="bin: pytorch_model.bin (torch.save) instead of model.safetensors")
    layout.add_argument("--hf-cache", action="store_true", help="write both as HF cache repositories under OUT/hub")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = LayoutOptions(args.dtype, args.shards, args.generation_config, args.clip_layout, args.clip_format,
                                args.hf_cache)
    except ValueError as exc:
        parser.error(str(exc))
    model_dir, clip_dir = write_synthetic_checkpoint(args.preset, args.out, layout=options)
    print(f"wrote random-weight checkpoint: model={model_dir} clip={clip_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
