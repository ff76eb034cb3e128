"""Writes a fine-tuned checkpoint in the official layout, loadable by ``python -m export`` and the runtime unchanged.

``OUT/model``: ``model.safetensors`` (official key names, no ``lm_head``: tied; the merged decoder and the trained
action rows), ``config.json`` (``vocab_size`` grown by the action rows), ``action_tokens.json``, the source's
tokenizer and generation files (the exporter and the pytorch backend extend the tokenizer with ``<image>`` and the
action tokens at the recorded ids), the source's ``synthetic.json`` when it was random-weight (its outputs stay
labelled so), and ``training.json`` (what was trained on, how, and the loss history). ``OUT/clip``: a copy of the
CLIP directory (frozen).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from engine_format.vocab import ActionTokenIds, save_action_tokens
from mobile_videogpt.synthetic import SYNTHETIC_MARKER

logger = logging.getLogger(__name__)

SAVE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_COPIED = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
           "vocab.json", "merges.txt", "added_tokens.json", SYNTHETIC_MARKER)


def write_checkpoint(
    state: Mapping[str, torch.Tensor],
    source_model: Path,
    source_clip: Path,
    out: Path,
    action_ids: ActionTokenIds,
    provenance: Mapping[str, Any],
    dtype: str = "float16",
) -> tuple[Path, Path]:
    """Writes ``out/model`` and ``out/clip`` (see the module docstring).

    Raises:
        ValueError: For an unknown dtype or an embedding that does not end at the action rows.
    """
    if dtype not in SAVE_DTYPES:
        raise ValueError(f"dtype {dtype!r}: must be one of {sorted(SAVE_DTYPES)}")
    rows = int(state["model.embed_tokens.weight"].shape[0])
    if rows != action_ids.vocab_size:
        raise ValueError(f"embedding has {rows} rows; the action tokens {action_ids.as_dict()} need {action_ids.vocab_size}")
    model_dir, clip_dir = Path(out) / "model", Path(out) / "clip"
    model_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", SAVE_DTYPES[dtype]).contiguous() for k, v in state.items()}
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((Path(source_model) / "config.json").read_text())
    config["vocab_size"] = rows
    config["torch_dtype"] = dtype
    (model_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in _COPIED:
        if (Path(source_model) / name).is_file():
            shutil.copy2(Path(source_model) / name, model_dir / name)
    save_action_tokens(model_dir, action_ids)
    (model_dir / "training.json").write_text(json.dumps(provenance, indent=1, default=str) + "\n")
    if clip_dir.exists():
        shutil.rmtree(clip_dir)
    shutil.copytree(source_clip, clip_dir)
    logger.info("wrote fine-tuned checkpoint %s (+ %s)", model_dir, clip_dir)
    return model_dir, clip_dir
