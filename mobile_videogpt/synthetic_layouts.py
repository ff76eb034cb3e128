"""The published layouts a synthetic checkpoint can be written in (``mobile_videogpt.synthetic --help``).

What users download is not one layout: the model directory may be sharded, stored in BF16 or F32, with or without a
``generation_config.json``; the CLIP directory of ``openai/clip-vit-base-patch16`` is a full ``CLIPModel`` (text tower,
projections, ``logit_scale``, old ``position_ids`` buffers) in ``model.safetensors`` or ``pytorch_model.bin``; either
may sit in a Hugging Face cache (``models--org--name/{blobs,refs/main,snapshots/<rev>}``). :class:`LayoutOptions`
selects one; the defaults write the plain layout (F16, one file, vision-only CLIP) the golden recipe uses.

The full-CLIPModel config mirrors the openai file's shape: legacy ``PretrainedConfig`` keys inside ``text_config`` and
``vision_config``, plus ``text_config_dict`` / ``vision_config_dict``. The text tower's weights are random like the
rest (drawn after the vision ones, from their own seed, so the vision tensors equal the vision-only layout's).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

STORED_DTYPES = ("F16", "BF16", "F32")
GENERATION_CONFIGS = ("greedy", "qwen-instruct", "none")
CLIP_LAYOUTS = ("vision", "clipmodel")
CLIP_FORMATS = ("safetensors", "bin")
CLIP_TEXT_SEED = 3234
MODEL_REPO = "synthetic/Mobile-VideoGPT-{preset}"
CLIP_REPO = "openai/clip-vit-base-patch16"

QWEN_INSTRUCT_GENERATION = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.1,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "transformers_version": "4.37.0",
}
"""``Qwen/Qwen2.5-0.5B-Instruct``'s generation config as quoted by the fidelity audit (what the release most likely
saved; unverified for the Mobile-VideoGPT repository itself)."""


@dataclass(frozen=True)
class LayoutOptions:
    """How a synthetic checkpoint is laid out on disk.

    Attributes:
        dtype: Stored dtype of every float tensor (model and CLIP): ``F16``, ``BF16`` or ``F32``.
        shards: Model weight files; above 1, ``model-0000i-of-0000N.safetensors`` and ``model.safetensors.index.json``.
        generation_config: ``greedy`` (stop ids only, do_sample false), ``qwen-instruct`` (repetition penalty 1.1
            and sampling fields) or ``none`` (no file).
        clip_layout: ``vision`` (``CLIPVisionModel``) or ``clipmodel`` (the full ``CLIPModel`` of
            ``openai/clip-vit-base-patch16``).
        clip_format: ``safetensors`` (``model.safetensors``) or ``bin`` (``pytorch_model.bin``).
        hf_cache: Write both as Hugging Face cache repositories under ``out/hub`` (blobs, ``refs/main``, snapshot
            symlinks); the returned directories are the repository roots.
    """

    dtype: str = "F16"
    shards: int = 1
    generation_config: str = "greedy"
    clip_layout: str = "vision"
    clip_format: str = "safetensors"
    hf_cache: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("dtype", STORED_DTYPES), ("generation_config", GENERATION_CONFIGS),
                              ("clip_layout", CLIP_LAYOUTS), ("clip_format", CLIP_FORMATS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r}: choose one of {list(allowed)}")
        if isinstance(self.shards, bool) or not isinstance(self.shards, int) or not 1 <= self.shards <= 99:
            raise ValueError(f"shards {self.shards!r}: must be an integer in [1, 99]")

    def as_dict(self) -> dict[str, Any]:
        """JSON form (recorded in the synthetic marker)."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- tensors
def save_tensors(tensors: Mapping[str, np.ndarray], path: Path, dtype: str) -> None:
    """Writes tensors as safetensors or, for a ``.bin`` path, a ``torch.save`` state dict; floats stored as ``dtype``.

    F16 safetensors go through numpy (bit-identical to the golden files); BF16 and ``.bin`` need torch.
    """
    if path.suffix == ".safetensors" and dtype in ("F16", "F32"):
        target = np.float16 if dtype == "F16" else np.float32
        save_file({k: v.astype(target) if v.dtype.kind == "f" else v for k, v in tensors.items()}, str(path),
                  metadata={"format": "pt"})
        return
    import torch  # bf16 and pickled state dicts only

    torch_dtype = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}[dtype]
    state = {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch_dtype) if v.dtype.kind == "f"
             else torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    if path.suffix == ".bin":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file as save_torch

        save_torch(state, str(path), metadata={"format": "pt"})


def save_model_weights(tensors: Mapping[str, np.ndarray], model_dir: Path, options: LayoutOptions) -> list[Path]:
    """The model weights as one file or ``options.shards`` shards with an HF index (contiguous in sorted order)."""
    if options.shards == 1:
        path = model_dir / "model.safetensors"
        save_tensors(tensors, path, options.dtype)
        return [path]
    names = sorted(tensors)
    if len(names) < options.shards:
        raise ValueError(f"{len(names)} tensors cannot fill {options.shards} shards")
    itemsize = 4 if options.dtype == "F32" else 2
    total = sum(tensors[n].size * itemsize for n in names)
    groups: list[list[str]] = [[]]
    filled = 0
    for i, name in enumerate(names):  # like HF: a new shard once this one holds its share (every shard non-empty)
        still_needed = options.shards - len(groups)
        if groups[-1] and still_needed and (filled >= total * len(groups) / options.shards or len(names) - i <= still_needed):
            groups.append([])
        groups[-1].append(name)
        filled += tensors[name].size * itemsize
    weight_map: dict[str, str] = {}
    paths = []
    for i, group in enumerate(groups, start=1):
        file = f"model-{i:05d}-of-{options.shards:05d}.safetensors"
        save_tensors({n: tensors[n] for n in group}, model_dir / file, options.dtype)
        weight_map |= {n: file for n in group}
        paths.append(model_dir / file)
    index = {"metadata": {"total_size": int(total)}, "weight_map": weight_map}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


def clip_text_geometry(clip_layers: int) -> dict[str, int]:
    """The text tower's geometry: the real one (512 wide, 12 layers) with the real CLIP, a tiny one otherwise."""
    if clip_layers >= 12:
        return {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8, "num_hidden_layers": 12}
    return {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_hidden_layers": 1}


def clip_text_tensors(clip_layers: int, projection_dim: int = 512) -> Iterator[tuple[str, np.ndarray]]:
    """The full CLIPModel's tensors beyond ``vision_model.*``: text tower, projections, logit_scale, position_ids.

    Yields:
        ``(name, array)``: float16 weights (random), an int64 ``position_ids`` buffer per tower.
    """
    g = clip_text_geometry(clip_layers)
    d, f = g["hidden_size"], g["intermediate_size"]
    rng = np.random.default_rng(CLIP_TEXT_SEED)
    shapes: dict[str, tuple[int, ...]] = {
        "text_model.embeddings.token_embedding.weight": (49408, d),
        "text_model.embeddings.position_embedding.weight": (77, d),
        "text_model.final_layer_norm.weight": (d,),
        "text_model.final_layer_norm.bias": (d,),
        "text_projection.weight": (projection_dim, d),
        "visual_projection.weight": (projection_dim, 768),
    }
    for i in range(g["num_hidden_layers"]):
        lp = f"text_model.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes |= {lp + f"self_attn.{proj}.weight": (d, d), lp + f"self_attn.{proj}.bias": (d,)}
        for ln in ("layer_norm1", "layer_norm2"):
            shapes |= {lp + f"{ln}.weight": (d,), lp + f"{ln}.bias": (d,)}
        shapes |= {lp + "mlp.fc1.weight": (f, d), lp + "mlp.fc1.bias": (f,), lp + "mlp.fc2.weight": (d, f),
                   lp + "mlp.fc2.bias": (d,)}
    for name in sorted(shapes):
        yield name, (0.02 * rng.standard_normal(shapes[name])).astype(np.float16)
    yield "logit_scale", np.array(np.log(1 / 0.07), dtype=np.float16)
    yield "text_model.embeddings.position_ids", np.arange(77, dtype=np.int64)[None]
    yield "vision_model.embeddings.position_ids", np.arange(197, dtype=np.int64)[None]


# ---------------------------------------------------------------------------------------------------- configs
_LEGACY_SUBCONFIG_KEYS: dict[str, Any] = {
    "_name_or_path": "", "add_cross_attention": False, "architectures": None, "bad_words_ids": None,
    "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None, "decoder_start_token_id": None,
    "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False, "encoder_no_repeat_ngram_size": 0,
    "finetuning_task": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "is_decoder": False, "is_encoder_decoder": False,
    "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "length_penalty": 1.0, "max_length": 20, "min_length": 0,
    "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1, "num_return_sequences": 1,
    "output_attentions": False, "output_hidden_states": False, "output_scores": False, "prefix": None,
    "problem_type": None, "pruned_heads": {}, "remove_invalid_values": False, "repetition_penalty": 1.0,
    "return_dict": True, "return_dict_in_generate": False, "sep_token_id": None, "task_specific_params": None,
    "temperature": 1.0, "tie_encoder_decoder": False, "tie_word_embeddings": True, "tokenizer_class": None,
    "top_k": 50, "top_p": 1.0, "torch_dtype": None, "torchscript": False, "transformers_version": "4.21.0.dev0",
    "use_bfloat16": False,
}
"""The generic ``PretrainedConfig`` keys older transformers wrote into each sub-config of a CLIPModel config."""


def clipmodel_config_json(vision: Mapping[str, Any], clip_layers: int) -> dict[str, Any]:
    """A full ``CLIPModel`` config.json in the shape of ``openai/clip-vit-base-patch16``'s.

    Args:
        vision: The vision-only config (``synthetic.clip_config_json``), whose geometry it carries.
        clip_layers: CLIP encoder layers (selects the text tower's geometry).
    """
    text = clip_text_geometry(clip_layers)
    geometry = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "patch_size",
                "projection_dim")
    vision_config = {**_LEGACY_SUBCONFIG_KEYS, **{k: v for k, v in vision.items() if k != "architectures"},
                     "torch_dtype": None}
    text_config = {**_LEGACY_SUBCONFIG_KEYS, **text, "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
                   "eos_token_id": 2, "hidden_act": "quick_gelu", "initializer_factor": 1.0,
                   "initializer_range": 0.02, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
                   "model_type": "clip_text_model", "pad_token_id": 1, "projection_dim": 512, "vocab_size": 49408}
    return {
        "_name_or_path": CLIP_REPO,
        "architectures": ["CLIPModel"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": 512,
        "text_config": text_config,
        "text_config_dict": {**text, "projection_dim": 512},
        "torch_dtype": "float32",
        "transformers_version": None,
        "vision_config": vision_config,
        "vision_config_dict": {k: vision[k] for k in geometry},
    }


def generation_config_json(kind: str, bos: int) -> dict[str, Any] | None:
    """The model directory's generation_config.json for ``LayoutOptions.generation_config`` (None: no file)."""
    if kind == "none":
        return None
    if kind == "qwen-instruct":
        return dict(QWEN_INSTRUCT_GENERATION)
    return {"bos_token_id": bos, "eos_token_id": [151645, 151643], "do_sample": False}


# ---------------------------------------------------------------------------------------------------- HF cache
def move_into_hf_cache(directory: Path, cache_root: Path, repo_id: str) -> Path:
    """Moves a written directory into an HF cache repository: content-addressed blobs, a snapshot of symlinks.

    Args:
        directory: The written checkpoint directory (removed afterwards).
        cache_root: The hub cache (``.../hub``).
        repo_id: ``org/name``.

    Returns:
        The repository root ``cache_root/models--org--name`` (``refs/main`` names the snapshot).
    """
    org, name = repo_id.split("/", 1)
    repo = cache_root / f"models--{org}--{name}"
    if repo.exists():
        shutil.rmtree(repo)
    digest = hashlib.sha1()
    blobs: dict[str, str] = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        blobs[path.name] = content
        digest.update(f"{path.name}:{content}".encode())
    revision = digest.hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file, content in blobs.items():
        blob = repo / "blobs" / content
        if not blob.exists():
            shutil.move(str(directory / file), blob)
        os.symlink(Path("..") / ".." / "blobs" / content, snapshot / file)
    (repo / "refs" / "main").write_text(revision)
    shutil.rmtree(directory)
    return repo
