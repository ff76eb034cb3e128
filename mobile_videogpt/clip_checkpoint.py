"""The CLIP directory: which of its tensors the vision tower uses, and whether it is the tower the model names.

The release builds ``CLIPVisionModel.from_pretrained("openai/clip-vit-base-patch16")``. That repository holds a full
``CLIPModel``: the vision tower (``vision_model.*``) plus the text tower (``text_model.*``), both projections,
``logit_scale`` and, in checkpoints saved by older transformers, the ``position_ids`` buffers. A vision-only model uses
none of the others. They are split off here by an explicit list (:func:`split_clip_tensors`) and named in one log
line, so nothing is dropped silently and anything else unexpected still fails the strict load by name.

:func:`check_vision_tower` compares the model's ``image_mm_vision_tower`` (config.json) with the geometry this model
needs (ViT-B/16 at 224 px, 768 wide) and with the CLIP directory's own identity (its HF cache repository name or its
config's ``_name_or_path``), audit point A9.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobile_videogpt.checkpoint_files import hf_cache_repo_id
from mobile_videogpt.config import ModelConfigError

logger = logging.getLogger(__name__)

VISION_PREFIX = "vision_model."
TEXT_PREFIX = "text_model."
CLIPMODEL_ONLY = ("text_projection.weight", "visual_projection.weight", "logit_scale")
"""Top-level tensors of a full ``CLIPModel`` that the vision tower does not use."""
POSITION_ID_BUFFERS = ("vision_model.embeddings.position_ids", "text_model.embeddings.position_ids")
"""Index buffers older transformers saved with the weights (recomputed by the model; not parameters)."""

RELEASE_TOWER = "openai/clip-vit-base-patch16"
_TOWER_NAME = re.compile(r"clip-vit-(?P<size>[a-z]+)-patch(?P<patch>\d+)(?:-(?P<res>\d+))?")


def is_full_clipmodel(raw: Mapping[str, Any]) -> bool:
    """Whether a CLIP ``config.json`` describes a full ``CLIPModel`` (text and vision) rather than a vision model."""
    return raw.get("model_type") == "clip" or "vision_config" in raw or "CLIPModel" in (raw.get("architectures") or [])


@dataclass(frozen=True)
class ClipTensorSplit:
    """The CLIP directory's tensor names, split by use.

    Attributes:
        vision: Names the vision tower loads (everything that is not intentionally unused; the strict load checks
            them against the module).
        unused: Names intentionally left unused (text tower, projections, ``logit_scale``, ``position_ids``).
    """

    vision: tuple[str, ...]
    unused: tuple[str, ...]

    def describe_unused(self) -> str:
        """The unused names in one line (the text tower as a count, everything else by name)."""
        text = [n for n in self.unused if n.startswith(TEXT_PREFIX) and n not in POSITION_ID_BUFFERS]
        named = sorted(n for n in self.unused if n not in text)
        parts = ([f"text_model.* ({len(text)} tensors)"] if text else []) + named
        return ", ".join(parts)


def split_clip_tensors(names: Iterable[str], full_clipmodel: bool) -> ClipTensorSplit:
    """Splits a CLIP directory's tensor names into what the vision tower loads and what it intentionally skips.

    Args:
        names: Every tensor name in the CLIP weight files.
        full_clipmodel: The config is a full ``CLIPModel`` (only then are the text tower and projections expected).

    Returns:
        The split; a name outside both lists stays in ``vision``, where the strict load rejects it by name.
    """
    vision, unused = [], []
    for name in sorted(names):
        skip = name in POSITION_ID_BUFFERS or (
            full_clipmodel and (name.startswith(TEXT_PREFIX) or name in CLIPMODEL_ONLY)
        )
        (unused if skip else vision).append(name)
    return ClipTensorSplit(tuple(vision), tuple(unused))


def clip_identity(clip_dir: Path, raw: Mapping[str, Any]) -> str | None:
    """The CLIP directory's own name: its HF cache repository (``org/name``), else its config's ``_name_or_path``."""
    cached = hf_cache_repo_id(Path(clip_dir))
    if cached:
        return cached
    name = raw.get("_name_or_path")
    return name if isinstance(name, str) and name and not Path(name).is_absolute() else None


@dataclass(frozen=True)
class TowerCheck:
    """What :func:`check_vision_tower` found.

    Attributes:
        named: The model's ``image_mm_vision_tower`` (None when config.json does not name one).
        identity: The CLIP directory's own name, when known.
        compatible: The named tower is a ViT-B/16 at 224 px (None when the name is not recognised).
        warnings: Readable lines for what could not be confirmed.
    """

    named: str | None
    identity: str | None
    compatible: bool | None
    warnings: tuple[str, ...]


def check_vision_tower(
    model_raw: Mapping[str, Any], clip_dir: Path | None = None, clip_raw: Mapping[str, Any] | None = None
) -> TowerCheck:
    """Checks the model's ``image_mm_vision_tower`` against ViT-B/16 and against the CLIP directory's identity.

    Args:
        model_raw: The checkpoint's config.json.
        clip_dir: The CLIP directory (None: the name alone is checked).
        clip_raw: The CLIP directory's config.json.

    Returns:
        The findings (the CLIP geometry itself is validated by ``load_clip_config``).

    Raises:
        ModelConfigError: If the model names a CLIP of another size, patch or resolution (its image projector was
            trained on that tower's features; this pipeline is built for 14 x 14 patches of 768).
    """
    named = model_raw.get("image_mm_vision_tower")
    named = named if isinstance(named, str) and named else None
    identity = clip_identity(clip_dir, clip_raw or {}) if clip_dir is not None else None
    warnings: list[str] = []
    compatible: bool | None = None
    if named is None:
        warnings.append("config.json names no image_mm_vision_tower; only the CLIP directory's geometry is checked")
    else:
        match = _TOWER_NAME.search(named.lower())
        if match:
            compatible = match["size"] == "base" and match["patch"] == "16" and match["res"] in (None, "224")
            if not compatible:
                raise ModelConfigError(
                    f"config.json image_mm_vision_tower is {named!r}, not a ViT-B/16 CLIP at 224 px "
                    f"(the release uses {RELEASE_TOWER!r}); this pipeline needs 14 x 14 patches of width 768"
                )
        else:
            warnings.append(
                f"config.json image_mm_vision_tower {named!r} is not a name recognised as a ViT-B/16 CLIP "
                f"(e.g. {RELEASE_TOWER!r}); only the CLIP directory's geometry is checked"
            )
    if named and identity and identity.lower() != named.lower():
        warnings.append(f"the CLIP directory is {identity!r} but config.json names {named!r}")
    return TowerCheck(named, identity, compatible, tuple(warnings))
