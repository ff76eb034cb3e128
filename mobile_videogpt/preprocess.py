"""The two preprocessing branches as torch tensors: thin wrappers around :mod:`engine_format.preprocess`.

The numpy functions there are the one implementation (bit-exact with the release; the golden vectors check it); the
reference model, the exporter's example inputs and the PyTorch backend take their output as tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from engine_format.preprocess import (  # noqa: F401 - re-exported for the reference package
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PIL_BICUBIC,
    ClipPreprocessConfig,
    clip_branch,
    video_branch,
)


def preprocess_video_branch(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """VideoMamba-branch pixels [T, 3, S, S] float32 of RGB uint8 frames [T, H, W, 3]."""
    return torch.from_numpy(video_branch(frames, size))


def preprocess_clip_branch(frames: np.ndarray, cfg: ClipPreprocessConfig) -> torch.Tensor:
    """CLIP-branch pixels [T, 3, S, S] float32 of RGB uint8 frames [T, H, W, 3] with the checkpoint's values."""
    return torch.from_numpy(clip_branch(frames, cfg))


def preprocess_frames(frames: np.ndarray, clip_cfg: ClipPreprocessConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Both branches on the same frames: ``(video_pixels, context_pixels)``, each float32 [T, 3, 224, 224]."""
    return preprocess_video_branch(frames), preprocess_clip_branch(frames, clip_cfg)
