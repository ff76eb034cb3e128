"""The engine-format facts of a reference model: its graph geometry and the manifest's ``model`` section.

The exporter records these in ``manifest.json``; the PyTorch backend builds the same record from the loaded model, so
every backend describes its model through one type (:class:`engine_format.geometry.ModelFacts`).
"""

from __future__ import annotations

from pathlib import Path

from engine_format.generation import load_generation_config
from engine_format.geometry import GraphGeometry, ModelFacts
from mobile_videogpt.model import MobileVideoGPT


def geometry(model: MobileVideoGPT) -> GraphGeometry:
    """The graph geometry of a reference model (what the I/O tables depend on)."""
    cfg = model.config
    p, text = cfg.pipeline, cfg.text
    return GraphGeometry(
        hidden_size=cfg.hidden_size,
        vocab_size=model.vocab_size,
        num_layers=int(text.num_hidden_layers),
        num_key_value_heads=int(text.num_key_value_heads),
        head_dim=int(getattr(text, "head_dim", None) or cfg.hidden_size // int(text.num_attention_heads)),
        image_size=p.image_size,
        clip_patches=(p.image_size // cfg.videomamba.patch_size) ** 2,
        clip_hidden_size=int(cfg.clip.hidden_size),
        num_frames=p.num_frames,
        chunk_size=p.chunk_size,
        top_k=p.top_k,
        image_tokens_per_frame=p.image_pool**2,
        video_tokens_per_chunk=p.video_pool**2,
    )


def stop_token_ids(model_dir: Path, config_eos: int | list[int] | None) -> list[int]:
    """Stop ids: ``generation_config.json``'s eos list if shipped, else config.json's eos.

    Args:
        model_dir: Checkpoint directory.
        config_eos: eos_token_id from config.json.

    Raises:
        FormatError: If generation_config.json is invalid (naming the file and field).
    """
    eos = load_generation_config(model_dir, log=False).eos_token_ids
    if eos is not None:
        return list(eos)
    if config_eos is None:
        return []
    return [int(e) for e in (config_eos if isinstance(config_eos, list) else [config_eos])]


def model_facts(model: MobileVideoGPT, model_dir: Path, tokenizer_size: int, image_token_id: int) -> ModelFacts:
    """The manifest's ``model`` section: the graph geometry plus vocabulary, RoPE and stop-token facts.

    Args:
        model: The loaded reference (with the action-token rows).
        model_dir: Its checkpoint directory (for ``generation_config.json``).
        tokenizer_size: Entries of the extended tokenizer.
        image_token_id: Id of ``<image>``.
    """
    text = model.config.text
    theta = getattr(text, "rope_theta", None) or (getattr(text, "rope_parameters", None) or {}).get("rope_theta")
    inv_freq = model.lm.model.rotary_emb.inv_freq.detach().cpu().float().numpy()
    return ModelFacts(
        **vars(geometry(model)),
        tokenizer_size=int(tokenizer_size),
        num_attention_heads=int(text.num_attention_heads),
        rope_theta=float(theta),
        # The model's own buffer: recomputing it in numpy differs from torch's fp32 pow in the last bit.
        rope_inv_freq=tuple(float(x) for x in inv_freq),
        rms_norm_eps=float(text.rms_norm_eps),
        max_position_embeddings=int(text.max_position_embeddings),
        largest=model.config.pipeline.largest,
        videomamba_depth=model.config.videomamba.depth,
        eos_token_ids=tuple(stop_token_ids(model_dir, text.eos_token_id)),
        image_token_id=int(image_token_id),
    )
