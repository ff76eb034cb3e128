"""Both preprocessing branches in torch, for uint8 frames already on the GPU (``backend.preprocess: device``).

:mod:`engine_format.preprocess` (numpy, OpenCV, PIL) stays the reference and the default: it is bit-exact with the
release, which this is not. Here the window's uint8 frames are uploaded once (``upload_frames``) and both branches run
on the device, so only 1 byte per pixel crosses the bus and no CPU core resizes 16 frames per window:

* **video branch**: ``F.interpolate(bilinear, align_corners=False)`` straight to 224x224, rounded to uint8 levels as
  OpenCV's INTER_LINEAR does, then ``/255`` and ImageNet mean/std. OpenCV interpolates with 11-bit fixed-point
  weights, so single pixels differ by one grey level.
* **CLIP branch**: shortest-side ``F.interpolate(bicubic, antialias=True)`` (PIL's antialiased bicubic kernel,
  a = -0.5, support scaled with the downscale factor) rounded and clamped to uint8, centre crop, ``x / 255`` and the
  checkpoint's CLIP mean/std. PIL rounds to uint8 between its horizontal and vertical passes; this rounds once, so
  pixels differ by a few grey levels at edges.

The measured differences (pixels, and the image/video tokens and logits of the tiny model) are in ``docs/gpu.md``;
``tests/runtime/test_torch_preprocess.py`` bounds them. Dimensions: T frames, H x W input size, S = 224.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engine_format.preprocess import IMAGENET_MEAN, IMAGENET_STD, VIDEO_SIZE, ClipPreprocessConfig


def upload_frames(frames: Sequence[np.ndarray], device: torch.device | str) -> torch.Tensor:
    """Stacks RGB uint8 frames into one ``[T, H, W, 3]`` uint8 tensor on ``device`` (one copy; pinned on CUDA).

    Raises:
        ValueError: If the frames are not uint8 ``[H, W, 3]`` of one size.
    """
    if not frames:
        raise ValueError("upload_frames: no frames")
    first = frames[0]
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"upload_frames: frame {i} must be a uint8 [H, W, 3] RGB array, got "
                             f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', None)}")
        if frame.shape != first.shape:
            raise ValueError(f"upload_frames: frame {i} is {frame.shape}, frame 0 {first.shape}: one size per window")
    dev = torch.device(device)
    host = torch.from_numpy(np.stack(frames))  # [T, H, W, 3]
    if dev.type == "cuda":
        return host.pin_memory().to(dev, non_blocking=True)  # pinned: an async DMA, not a pageable staging copy
    return host.to(dev)


def _planar(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, H, W]`` grey levels 0..255."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be a uint8 tensor [T, H, W, 3] (RGB), got {frames.dtype} {tuple(frames.shape)}")
    return frames.permute(0, 3, 1, 2).float()


def _normalise(levels: torch.Tensor, mean: Sequence[float], std: Sequence[float], scale: float) -> torch.Tensor:
    """``(levels * scale - mean) / std`` per channel of ``[T, 3, S, S]``, in float32."""
    m = torch.tensor(mean, dtype=torch.float32, device=levels.device)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32, device=levels.device)[:, None, None]
    return (levels * scale - m) / s


def video_branch_device(frames: torch.Tensor, size: int = VIDEO_SIZE) -> torch.Tensor:
    """VideoMamba-branch pixels of uint8 frames on any device (bilinear, uint8 levels, ImageNet normalisation).

    Args:
        frames: RGB uint8 ``[T, H, W, 3]``.
        size: Output side (224).

    Returns:
        Float32 pixels ``[T, 3, S, S]`` on the frames' device.
    """
    x = F.interpolate(_planar(frames), size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return _normalise(x.round().clamp_(0, 255), IMAGENET_MEAN, IMAGENET_STD, 1.0 / 255.0)


def clip_branch_device(frames: torch.Tensor, cfg: ClipPreprocessConfig) -> torch.Tensor:
    """CLIP-branch pixels of uint8 frames on any device (antialiased bicubic, centre crop, the checkpoint's values).

    Args:
        frames: RGB uint8 ``[T, H, W, 3]``.
        cfg: The checkpoint's CLIP preprocessing values.

    Returns:
        Float32 pixels ``[T, 3, S, S]`` on the frames' device.

    Raises:
        ValueError: If the frames are too small for the centre crop.
    """
    height, width = int(frames.shape[1]), int(frames.shape[2])
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = cfg.shortest_edge, int(cfg.shortest_edge * long / short)  # the numpy branch's sizes
    new_h, new_w = (new_short, new_long) if height <= width else (new_long, new_short)
    top, left = int((new_h - cfg.crop_size) / 2.0), int((new_w - cfg.crop_size) / 2.0)
    if top < 0 or left < 0:
        raise ValueError(f"frame {height}x{width} is too small for a {cfg.crop_size} centre crop")
    x = F.interpolate(_planar(frames), size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    x = x[:, :, top : top + cfg.crop_size, left : left + cfg.crop_size].round().clamp_(0, 255)  # uint8 levels
    return _normalise(x, cfg.mean, cfg.std, 1.0 / 255.0)
