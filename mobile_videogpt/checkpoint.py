"""Strict checkpoint loading from local directories in the layouts Hugging Face publishes.

A model directory holds ``config.json``, the weights (``model.safetensors``, or shards with
``model.safetensors.index.json``; F32, F16 or BF16), optionally ``generation_config.json`` and, for real
checkpoints, the tokenizer files. A CLIP directory holds a ``config.json`` (a ``CLIPVisionModel`` one or the full
``CLIPModel`` one of ``openai/clip-vit-base-patch16``), the weights (``model.safetensors`` or ``pytorch_model.bin``,
the latter read weights-only) and ``preprocessor_config.json``. Either may be a Hugging Face cache path
(``mobile_videogpt.checkpoint_files``).

Strict means: every checkpoint tensor is consumed and every parameter is loaded, with the right shape and a float
stored dtype, or loading fails with a ``CheckpointError`` that names every offending key. A peer project dropped
VideoMamba's backward-direction weights without noticing; this loader cannot. The one exception is explicit: the
text-tower tensors of a full ``CLIPModel`` (``mobile_videogpt.clip_checkpoint``), named in one log line.
``lm_head.weight`` is tied to ``model.embed_tokens.weight``: it may be absent (HF drops tied keys) or present with
identical values. Tensors are upcast (F16/BF16 -> F32) exactly, as the release does when loading into fp32
parameters; integer, bool and quantized (I8, F8 ...) stored dtypes are refused by name.

:func:`check_directories` runs the same checks on the file headers only, on a model built on the ``meta`` device
(no weights in memory): ``python -m mobile_videogpt.inspect`` reports it before an export.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPVisionConfig

from engine_format import read_json_object
from engine_format.generation import CheckpointGeneration, load_generation_config
from mobile_videogpt.checkpoint_files import (  # noqa: F401 - CheckpointError re-exported: the loader's error type
    FLOAT_DTYPES,
    CheckpointError,
    TensorInfo,
    WeightLayout,
    dtype_name,
    find_weight_files,
    read_tensors,
    resolve_checkpoint_dir,
    tensor_infos,
)
from mobile_videogpt.clip_checkpoint import TowerCheck, check_vision_tower, is_full_clipmodel, split_clip_tensors
from mobile_videogpt.clip_encoder import CLIPImageEncoder
from mobile_videogpt.config import MobileVideoGPTConfig, ModelConfigError, load_clip_config, load_config
from mobile_videogpt.model import MobileVideoGPT, MobileVideoGPTForCausalLM, no_init_weights
from mobile_videogpt.preprocess import ClipPreprocessConfig
from mobile_videogpt.vocab import extend_embedding_matrix, load_action_tokens

logger = logging.getLogger(__name__)

TIED_KEY = "lm_head.weight"
EMBED_KEY = "model.embed_tokens.weight"
_VM_LAYER = re.compile(r"^model\.vision_tower\.vision_encoder\.layers\.(\d+)\.")
_SHOWN = 8  # keys listed per problem before "and N more": a wrong-dtype checkpoint would otherwise list every key

Expected = Mapping[str, tuple[tuple[int, ...], torch.dtype]]
"""Parameter/buffer name -> (shape, dtype) of a module (its ``state_dict``)."""


def infer_videomamba_depth(keys: list[str]) -> int | None:
    """Counts VideoMamba blocks from tensor names (``...vision_encoder.layers.{i}.``).

    Args:
        keys: Checkpoint tensor names.

    Returns:
        1 + the largest block index, or None when no VideoMamba block key exists.
    """
    indices = [int(m.group(1)) for k in keys if (m := _VM_LAYER.match(k))]
    return max(indices) + 1 if indices else None


def _listed(keys: list[str]) -> str:
    shown = keys[:_SHOWN]
    return f"{shown}" + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def header_problems(expected: Expected, stored: Mapping[str, TensorInfo], tied: Mapping[str, str]) -> list[str]:
    """The strict checks that need only names, shapes and stored dtypes.

    Args:
        expected: The module's tensors (name -> shape, dtype).
        stored: The checkpoint's tensors.
        tied: Keys that alias another key (``{alias: source}``); an alias may be absent.

    Returns:
        One readable problem per kind (missing, unexpected, shape, dtype), empty when the checkpoint fits.
    """
    problems: list[str] = []
    missing = sorted(k for k in expected if k not in stored and k not in tied)
    unexpected = sorted(k for k in stored if k not in expected)
    shape_errors = sorted(
        f"{k}: checkpoint {stored[k].shape} vs model {expected[k][0]}"
        for k in expected
        if k in stored and stored[k].shape != expected[k][0]
    )
    by_dtype: dict[str, list[str]] = {}
    for k, (_, dtype) in expected.items():
        if k in stored and dtype.is_floating_point and stored[k].dtype not in FLOAT_DTYPES:
            by_dtype.setdefault(stored[k].dtype, []).append(k)
    if missing:
        problems.append(f"missing tensor(s) {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s) {_listed(unexpected)}")
    if shape_errors:
        problems.append(f"shape mismatch: {_listed(shape_errors)}")
    for stored_dtype, keys in sorted(by_dtype.items()):
        problems.append(
            f"{len(keys)} tensor(s) stored as {stored_dtype} where floats (F32/F16/BF16) are expected: "
            f"{_listed(sorted(keys))} (integer, bool and quantized weights are not loaded)"
        )
    return problems


def _infos_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, TensorInfo]:
    return {k: TensorInfo(k, dtype_name(t.dtype), tuple(t.shape), "") for k, t in tensors.items()}


def load_state_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str, tied: dict[str, str]) -> None:
    """Copies tensors into a module's parameters and buffers, refusing any mismatch.

    Args:
        module: Target module; its ``state_dict`` keys are the expected checkpoint keys.
        tensors: Checkpoint tensors.
        what: Name of the checkpoint for messages.
        tied: Keys that alias another key (``{alias: source}``); an alias may be absent, or present and identical.

    Raises:
        CheckpointError: Naming every missing, unexpected, mis-shaped and wrongly typed key.
    """
    state = module.state_dict()
    problems = [
        f"{alias} is stored but differs from {source}, to which it is tied"
        for alias, source in tied.items()
        if alias in tensors and source in tensors and not torch.equal(tensors[alias], tensors[source])
    ]
    problems += header_problems({k: (tuple(v.shape), v.dtype) for k, v in state.items()}, _infos_of(tensors), tied)
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))
    with torch.no_grad():
        for key, target in state.items():
            if key in tied and key not in tensors:
                continue
            target.copy_(tensors[key].to(target.dtype))  # exact upcast F16/BF16 -> F32


# ---------------------------------------------------------------------------------------------------- header checks
def expected_lm_tensors(config: MobileVideoGPTConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The checkpoint model's tensors (names, shapes, dtypes), from a model built on the meta device (no memory)."""
    with torch.device("meta"), no_init_weights():
        lm = MobileVideoGPTForCausalLM(config)
    return {k: (tuple(v.shape), v.dtype) for k, v in lm.state_dict().items()}


def expected_clip_tensors(clip: CLIPVisionConfig, select_layer: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The CLIP vision tower's tensors, from a tower built on the meta device."""
    with torch.device("meta"), no_init_weights():
        tower = CLIPImageEncoder(clip, select_layer)
    return {k: (tuple(v.shape), v.dtype) for k, v in tower.state_dict().items()}


# The image projector needs a 768-wide CLIP; a model directory checked alone is checked against the release's.
RELEASE_CLIP = CLIPVisionConfig(hidden_size=768, image_size=224, patch_size=16, num_hidden_layers=1)


@dataclass
class DirectoryCheck:
    """The strict checks of one model and/or CLIP directory, run on file headers.

    Attributes:
        directory: The resolved directory.
        kind: ``model`` or ``clip``.
        layout: Its weight files (None when they could not be found).
        tensors: Name -> stored tensor info (empty when unreadable).
        raw_config: Its parsed config.json (empty when unreadable).
        problems: Why it will not load (empty: it will).
        notes: What loading will log (unused CLIP tensors, tower-name findings).
        unused: Tensor names intentionally not loaded (a full CLIPModel's text tower).
        tower: The ``image_mm_vision_tower`` findings (model directories).
        generation: The model directory's generation config (None when invalid or not a model directory).
    """

    directory: Path
    kind: str
    layout: WeightLayout | None = None
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    raw_config: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unused: tuple[str, ...] = ()
    tower: TowerCheck | None = None
    generation: CheckpointGeneration | None = None

    @property
    def loadable(self) -> bool:
        """No problem found."""
        return not self.problems


def _read_headers(check: DirectoryCheck) -> None:
    try:
        check.layout = find_weight_files(check.directory)
        check.tensors = tensor_infos(check.layout)
    except CheckpointError as exc:
        check.problems.append(str(exc))


def check_model_dir(model_dir: Path | str, clip: DirectoryCheck | None = None) -> DirectoryCheck:
    """Runs the strict model-directory checks on headers: config, files, names, shapes, dtypes (no weights read).

    Args:
        model_dir: Checkpoint directory (or HF cache path).
        clip: The checked CLIP directory it will be paired with (its geometry sets the image projector's input, its
            identity is compared with ``image_mm_vision_tower``); None checks against the release's CLIP.
    """
    check = DirectoryCheck(resolve_checkpoint_dir(model_dir), "model")
    _read_headers(check)
    clip_config = RELEASE_CLIP
    if clip is not None and clip.loadable:
        clip_config = load_clip_config(clip.directory)
    try:
        check.raw_config = read_json_object(check.directory / "config.json", "checkpoint config", ModelConfigError)
        depth = infer_videomamba_depth(list(check.tensors))
        config = load_config(check.directory, None, videomamba_depth=depth, clip=clip_config)
        action_ids = load_action_tokens(check.directory)
        if action_ids is not None and action_ids.vocab_size != config.text.vocab_size:
            check.problems.append(
                f"action_tokens.json says vocab_size {action_ids.vocab_size}, config.json {config.text.vocab_size}"
            )
        check.tower = check_vision_tower(
            check.raw_config, clip.directory if clip else None, clip.raw_config if clip else None
        )
        check.generation = load_generation_config(check.directory, log=False)
    except (ModelConfigError, ValueError) as exc:
        check.problems.append(str(exc))
        return check
    if check.tensors:
        check.problems += header_problems(expected_lm_tensors(config), check.tensors, {TIED_KEY: EMBED_KEY})
    return check


def check_clip_dir(clip_dir: Path | str) -> DirectoryCheck:
    """Runs the strict CLIP-directory checks on headers (the text tower of a full CLIPModel is set aside, by name)."""
    check = DirectoryCheck(resolve_checkpoint_dir(clip_dir), "clip")
    _read_headers(check)
    try:
        check.raw_config = read_json_object(check.directory / "config.json", "CLIP config", ModelConfigError)
        clip = load_clip_config(check.directory)
        ClipPreprocessConfig.from_dir(check.directory)
        MobileVideoGPTConfig.check_clip(clip)
    except (ModelConfigError, ValueError) as exc:
        check.problems.append(str(exc))
        return check
    split = split_clip_tensors(check.tensors, is_full_clipmodel(check.raw_config))
    check.unused = split.unused
    if split.unused:
        check.notes.append(f"intentionally unused ({len(split.unused)} tensors): {split.describe_unused()}")
    if check.tensors:
        vision = {k: check.tensors[k] for k in split.vision}
        check.problems += header_problems(expected_clip_tensors(clip, -2), vision, {})
    return check


def check_directories(model_dir: Path | str, clip_dir: Path | str) -> tuple[DirectoryCheck, DirectoryCheck]:
    """Both directories' header checks, paired (CLIP geometry and the ``image_mm_vision_tower`` check, audit A9)."""
    clip = check_clip_dir(clip_dir)
    return check_model_dir(model_dir, clip), clip


# ---------------------------------------------------------------------------------------------------- loading
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
        model_dir: Checkpoint directory (config.json + weights), or an HF cache path.
        clip_dir: CLIP directory (config.json + weights + preprocessor_config.json), or an HF cache path.
        dtype: Parameter dtype after loading (float32 for the reference, float16 for GPU runs).
        device: Target device.
        scan_impl: Selective-scan implementation name.
        extend_vocab: Add the action-token rows (``mobile_videogpt.vocab``) if the checkpoint lacks them.

    Returns:
        The model in eval mode.

    Raises:
        CheckpointError: On any layout or file problem, naming the keys or the file.
        ModelConfigError: On a missing, corrupt or unsupported config.json (naming the file).
    """
    model_dir, clip_dir = resolve_checkpoint_dir(model_dir), resolve_checkpoint_dir(clip_dir)
    layout = find_weight_files(model_dir)  # first: an empty or wrong directory says what it holds
    model_raw = read_json_object(model_dir / "config.json", "checkpoint config", ModelConfigError)
    clip_raw = read_json_object(clip_dir / "config.json", "CLIP config", ModelConfigError)
    tensors = read_tensors(layout)
    depth = infer_videomamba_depth(list(tensors))
    if "videomamba_depth" not in model_raw and depth is not None and depth != 32:
        logger.info("config.json does not give videomamba_depth; using the %d blocks found in the checkpoint", depth)
    config = load_config(model_dir, clip_dir, videomamba_depth=depth, scan_impl=scan_impl)
    tower = check_vision_tower(model_raw, clip_dir, clip_raw)
    for warning in tower.warnings:
        logger.warning("%s: %s", model_dir, warning)
    action_ids = load_action_tokens(model_dir)
    if action_ids is not None and config.text.vocab_size != action_ids.vocab_size:
        raise CheckpointError(
            f"{model_dir}: action_tokens.json says vocab_size {action_ids.vocab_size}, config.json {config.text.vocab_size}"
        )
    model = MobileVideoGPT(config, ClipPreprocessConfig.from_dir(clip_dir))
    load_state_strict(model.lm, tensors, f"checkpoint {model_dir}", tied={TIED_KEY: EMBED_KEY})
    del tensors
    clip_tensors = read_tensors(find_weight_files(clip_dir))
    split = split_clip_tensors(clip_tensors, is_full_clipmodel(clip_raw))
    if split.unused:
        logger.info(
            "CLIP %s: %d tensors intentionally unused by the vision tower: %s",
            clip_dir, len(split.unused), split.describe_unused(),
        )
    load_state_strict(model.clip, {k: clip_tensors[k] for k in split.vision}, f"CLIP {clip_dir}", tied={})
    del clip_tensors
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
