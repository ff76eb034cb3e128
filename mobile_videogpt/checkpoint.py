"""Strict checkpoint loading from local directories in the official Hugging Face layout.

A model directory holds ``config.json``, ``model.safetensors`` (or shards with ``model.safetensors.index.json``) and,
for real checkpoints, the tokenizer files. A CLIP directory holds a ``CLIPVisionModel`` ``config.json``,
``model.safetensors`` (keys ``vision_model.*``) and ``preprocessor_config.json``.

Strict means: every checkpoint tensor is consumed and every parameter is loaded, with the right shape, or loading
fails with a ``CheckpointError`` that names every offending key and both shapes. A peer project dropped VideoMamba's
backward-direction weights without noticing; this loader cannot. ``lm_head.weight`` is tied to
``model.embed_tokens.weight``: it may be absent (HF drops tied keys) or present with identical values.
Tensors are upcast (F16 -> F32) exactly, as the release does when loading into fp32 parameters.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors import safe_open

from mobile_videogpt.config import load_config
from mobile_videogpt.model import MobileVideoGPT
from mobile_videogpt.preprocess import ClipPreprocessConfig
from mobile_videogpt.vocab import extend_embedding_matrix, load_action_tokens

logger = logging.getLogger(__name__)

TIED_KEY = "lm_head.weight"
EMBED_KEY = "model.embed_tokens.weight"
_VM_LAYER = re.compile(r"^model\.vision_tower\.vision_encoder\.layers\.(\d+)\.")


class CheckpointError(RuntimeError):
    """A checkpoint directory does not match the model: missing, unexpected or mis-shaped tensors, or bad files."""


def safetensors_files(model_dir: Path) -> list[Path]:
    """Lists the safetensors files of a directory (single file or an HF shard index).

    Args:
        model_dir: Directory to look in.

    Returns:
        The files, in load order.

    Raises:
        CheckpointError: If there are none, or the index names a missing shard.
    """
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise CheckpointError(f"{index} names shard(s) that do not exist: {missing}")
        return [model_dir / s for s in shards]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(p.name for p in model_dir.glob("*")) if model_dir.is_dir() else "directory does not exist"
    raise CheckpointError(f"no model.safetensors or model.safetensors.index.json in {model_dir} (found: {found})")


def read_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    """Reads every tensor of a directory's safetensors files.

    Args:
        model_dir: Checkpoint or CLIP directory.

    Returns:
        Name -> tensor (stored dtype).

    Raises:
        CheckpointError: If a key appears in two shards.
    """
    tensors: dict[str, torch.Tensor] = {}
    for path in safetensors_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key in tensors:
                    raise CheckpointError(f"tensor {key!r} appears in more than one shard ({path.name})")
                tensors[key] = f.get_tensor(key)
    return tensors


def infer_videomamba_depth(keys: list[str]) -> int | None:
    """Counts VideoMamba blocks from tensor names (``...vision_encoder.layers.{i}.``).

    Args:
        keys: Checkpoint tensor names.

    Returns:
        1 + the largest block index, or None when no VideoMamba block key exists.
    """
    indices = [int(m.group(1)) for k in keys if (m := _VM_LAYER.match(k))]
    return max(indices) + 1 if indices else None


def load_state_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str, tied: dict[str, str]) -> None:
    """Copies tensors into a module's parameters and buffers, refusing any mismatch.

    Args:
        module: Target module; its ``state_dict`` keys are the expected checkpoint keys.
        tensors: Checkpoint tensors.
        what: Name of the checkpoint for messages.
        tied: Keys that alias another key (``{alias: source}``); an alias may be absent, or present and identical.

    Raises:
        CheckpointError: Naming every missing, unexpected and mis-shaped key.
    """
    expected = module.state_dict()
    problems: list[str] = []
    for alias, source in tied.items():
        if alias in tensors:
            if source in tensors and not torch.equal(tensors[alias], tensors[source]):
                problems.append(f"{alias} is stored but differs from {source}, to which it is tied")
    missing = sorted(k for k in expected if k not in tensors and k not in tied)
    unexpected = sorted(k for k in tensors if k not in expected)
    shape_errors = sorted(
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)
    )
    if missing:
        problems.append(f"missing tensor(s) {missing}")
    if unexpected:
        problems.append(f"unexpected tensor(s) {unexpected}")
    if shape_errors:
        problems.append(f"shape mismatch: {shape_errors}")
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))
    with torch.no_grad():
        for key, target in expected.items():
            if key in tied and key not in tensors:
                continue
            target.copy_(tensors[key].to(target.dtype))  # exact upcast F16 -> F32


def load_model(
    model_dir: Path | str,
    clip_dir: Path | str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    scan_impl: str = "ref",
    extend_vocab: bool = False,
) -> MobileVideoGPT:
    """Loads a Mobile-VideoGPT checkpoint directory and a CLIP directory strictly.

    Args:
        model_dir: Checkpoint directory (config.json + safetensors).
        clip_dir: CLIP directory (config.json + safetensors + preprocessor_config.json).
        dtype: Parameter dtype after loading (float32 for the reference, float16 for GPU runs).
        device: Target device.
        scan_impl: Selective-scan implementation name.
        extend_vocab: Add the action-token rows (``mobile_videogpt.vocab``) if the checkpoint lacks them.

    Returns:
        The model in eval mode.

    Raises:
        CheckpointError: On any layout problem, naming the keys.
    """
    model_dir, clip_dir = Path(model_dir), Path(clip_dir)
    tensors = read_tensors(model_dir)
    depth = infer_videomamba_depth(list(tensors))
    raw_cfg = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    if "videomamba_depth" not in raw_cfg and depth is not None and depth != 32:
        logger.info("config.json does not give videomamba_depth; using the %d blocks found in the checkpoint", depth)
    config = load_config(model_dir, clip_dir, videomamba_depth=depth, scan_impl=scan_impl)
    action_ids = load_action_tokens(model_dir)
    if action_ids is not None and config.text.vocab_size != action_ids.vocab_size:
        raise CheckpointError(
            f"{model_dir}: action_tokens.json says vocab_size {action_ids.vocab_size}, config.json {config.text.vocab_size}"
        )
    model = MobileVideoGPT(config, ClipPreprocessConfig.from_dir(clip_dir))
    load_state_strict(model.lm, tensors, f"checkpoint {model_dir}", tied={TIED_KEY: EMBED_KEY})
    del tensors
    load_state_strict(model.clip, read_tensors(clip_dir), f"CLIP {clip_dir}", tied={})
    model.lm.lm_head.weight = model.lm.model.embed_tokens.weight
    if extend_vocab and action_ids is None:
        add_action_token_rows(model)
    model = model.to(device=device, dtype=dtype).eval()
    model.lm.lm_head.weight = model.lm.model.embed_tokens.weight
    logger.info(
        "loaded %s (%d LLM layers, %d VideoMamba blocks, vocab %d) and CLIP %s",
        model_dir, config.text.num_hidden_layers, config.videomamba.depth, model.vocab_size, clip_dir,
    )
    return model


def add_action_token_rows(model: MobileVideoGPT, n_new: int = 3) -> None:
    """Grows the tied embedding / lm_head by the action-token rows, initialised to the mean embedding.

    Args:
        model: Loaded model (modified in place).
        n_new: Number of rows to add (the three action tokens).
    """
    embed = model.lm.model.embed_tokens
    new_weight = extend_embedding_matrix(embed.weight.data, n_new)
    embed.weight = torch.nn.Parameter(new_weight, requires_grad=False)
    embed.num_embeddings = new_weight.shape[0]
    model.lm.lm_head.weight = embed.weight  # keep the tie
    model.lm.lm_head.out_features = new_weight.shape[0]
    model.lm.config.vocab_size = new_weight.shape[0]
    model.lm.vocab_size = new_weight.shape[0]
    model.config.raw["vocab_size"] = new_weight.shape[0]
