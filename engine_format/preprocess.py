"""The two preprocessing branches of Mobile-VideoGPT, on RGB uint8 frames, in numpy (the one implementation).

The release preprocesses the same frames twice:

* **video branch** (VideoMamba, ``VideoTrainProcessor``): ``cv2.resize`` straight to 224x224 (INTER_LINEAR, no crop,
  aspect ratio not kept), ``/255`` and ImageNet mean/std, in float64, HWC -> CHW.
* **CLIP branch** (``CLIPImageProcessor`` of openai/clip-vit-base-patch16): PIL bicubic resize of the shortest side
  to 224 on uint8, centre crop 224, ``x * (1/255)`` in float64 cast to float32, CLIP mean/std in float32, HWC -> CHW.

Both recipes are reproduced bit for bit (the golden vectors check it through the reference package, which calls these
functions): OpenCV's fixed-point INTER_LINEAR and PIL's two-pass uint8 bicubic differ from a float resize by up to 1
and 12 grey levels. The CLIP values come from the checkpoint's ``preprocessor_config.json``; the exporter records
them in the manifest so every backend preprocesses with the checkpoint's values.

Dimensions: T frames, H x W input size, S = 224.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from engine_format import FormatError, read_json_object

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PIL_BICUBIC = 3
VIDEO_SIZE = 224


@dataclass(frozen=True)
class ClipPreprocessConfig:
    """The fields of ``preprocessor_config.json`` the CLIP branch uses.

    Attributes:
        shortest_edge: Target of the shortest-side resize (224).
        crop_size: Centre-crop side (224).
        resample: PIL resample filter id (3 = bicubic).
        mean: Per-channel mean.
        std: Per-channel std.
    """

    shortest_edge: int = 224
    crop_size: int = 224
    resample: int = PIL_BICUBIC
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.shortest_edge < 1 or self.crop_size < 1 or self.crop_size > self.shortest_edge:
            raise FormatError(
                f"CLIP preprocessing: shortest_edge {self.shortest_edge} / crop_size {self.crop_size} must be >= 1 "
                "with crop_size <= shortest_edge"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise FormatError(f"CLIP preprocessing: mean {self.mean} / std {self.std} must be 3 values, std > 0")

    @classmethod
    def from_hf(cls, raw: dict[str, Any], where: str) -> ClipPreprocessConfig:
        """Parses a Hugging Face ``preprocessor_config.json`` object (legacy or current size formats).

        Raises:
            FormatError: If it asks for a pipeline this branch does not implement or lacks the sizes.
        """
        size = raw.get("size", 224)
        shortest = size.get("shortest_edge") if isinstance(size, dict) else size
        crop = raw.get("crop_size", 224)
        crop = crop.get("height") if isinstance(crop, dict) else crop
        for flag in ("do_resize", "do_center_crop", "do_normalize"):
            if raw.get(flag, True) is not True:
                raise FormatError(f"{where}: {flag} is {raw[flag]}; the release pipeline needs true")
        if shortest is None or crop is None:
            raise FormatError(f"{where}: cannot read size/crop_size")
        return cls(
            shortest_edge=int(shortest),
            crop_size=int(crop),
            resample=int(raw.get("resample", PIL_BICUBIC)),
            mean=tuple(float(x) for x in raw.get("image_mean", CLIP_MEAN)),  # type: ignore[arg-type]
            std=tuple(float(x) for x in raw.get("image_std", CLIP_STD)),  # type: ignore[arg-type]
        )

    @classmethod
    def from_dir(cls, clip_dir: Path) -> ClipPreprocessConfig:
        """Reads ``preprocessor_config.json`` from a CLIP directory.

        Raises:
            FormatError: If the file is missing, not JSON, or asks for an unsupported pipeline.
        """
        path = Path(clip_dir) / "preprocessor_config.json"
        return cls.from_hf(read_json_object(path, "CLIP preprocessor config"), f"CLIP preprocessor config {path}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the manifest's ``clip_preprocess`` section)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ClipPreprocessConfig:
        """Inverse of :meth:`as_dict`.

        Raises:
            FormatError: For missing or unknown keys or bad values.
        """
        names = {"shortest_edge", "crop_size", "resample", "mean", "std"}
        if not isinstance(data, dict) or set(data) != names:
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise FormatError(f"{where}: expected keys {sorted(names)}, got {found}")
        try:
            return cls(
                shortest_edge=int(data["shortest_edge"]),
                crop_size=int(data["crop_size"]),
                resample=int(data["resample"]),
                mean=tuple(float(x) for x in data["mean"]),  # type: ignore[arg-type]
                std=tuple(float(x) for x in data["std"]),  # type: ignore[arg-type]
            )
        except (TypeError, ValueError) as exc:
            raise FormatError(f"{where}: {exc}") from exc


def check_frames(frames: np.ndarray) -> None:
    """Raises ValueError unless ``frames`` is uint8 ``[T, H, W, 3]`` (RGB)."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"frames must be a uint8 array [T, H, W, 3] (RGB), got shape {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {frames.dtype}")


def video_branch(frames: np.ndarray, size: int = VIDEO_SIZE) -> np.ndarray:
    """VideoMamba-branch pixels: direct resize to size x size and ImageNet normalisation.

    Args:
        frames: RGB uint8 frames [T, H, W, 3].
        size: Output side (224).

    Returns:
        Float32 pixels [T, 3, S, S].
    """
    check_frames(frames)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float64)
    std = np.asarray(IMAGENET_STD, dtype=np.float64)
    out = np.empty((frames.shape[0], 3, size, size), dtype=np.float32)
    for i, frame in enumerate(frames):
        resized = cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)  # uint8, fixed-point
        x = (resized.astype(np.float64) / 255.0 - mean) / std  # float64 like the release
        out[i] = x.transpose(2, 0, 1)
    return out


def _clip_resize_crop(frame: np.ndarray, cfg: ClipPreprocessConfig) -> np.ndarray:
    """Shortest-side PIL resize on uint8 then centre crop, as CLIPImageProcessor does; returns uint8 HWC."""
    height, width = frame.shape[:2]
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = cfg.shortest_edge, int(cfg.shortest_edge * long / short)
    new_h, new_w = (new_short, new_long) if height <= width else (new_long, new_short)
    resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), resample=cfg.resample))
    top = int((new_h - cfg.crop_size) / 2.0)
    left = int((new_w - cfg.crop_size) / 2.0)
    if top < 0 or left < 0:
        raise ValueError(f"frame {height}x{width} is too small for a {cfg.crop_size} centre crop")
    return resized[top : top + cfg.crop_size, left : left + cfg.crop_size]


def clip_branch(frames: np.ndarray, cfg: ClipPreprocessConfig) -> np.ndarray:
    """CLIP-branch pixels: shortest-side bicubic resize, centre crop, CLIP normalisation.

    Args:
        frames: RGB uint8 frames [T, H, W, 3].
        cfg: The checkpoint's CLIP preprocessing values (no default: every caller states whose values it uses).

    Returns:
        Float32 pixels [T, 3, S, S].
    """
    check_frames(frames)
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    out = np.empty((frames.shape[0], 3, cfg.crop_size, cfg.crop_size), dtype=np.float32)
    for i, frame in enumerate(frames):
        crop = _clip_resize_crop(frame, cfg)
        x = (crop.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)  # HF rescale: float64, then float32
        out[i] = ((x - mean) / std).transpose(2, 0, 1)
    return out
