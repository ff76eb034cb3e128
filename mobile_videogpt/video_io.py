"""Reading a video file the way the release samples it (``eval/video_encoding.py::_get_rawvideo_dec``).

The release reads with decord; OpenCV is used here (decord is not on PyPI for every platform). Sampling, as released:
one candidate frame per second (stride round(fps)); more than 16 candidates -> 16 taken at ``linspace(0, n-1, 16)``
(truncated); fewer -> a fixed stride ``(last - first) // (min_frames - 1)`` from the first frame; clips shorter than
16 frames keep all frames and the missing ones are zero pixels in normalised space (see ``pad_pixels``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch


class VideoReadError(RuntimeError):
    """A video file is missing, unreadable or empty."""


def sample_positions(num_frames: int, fps: float, max_frames: int = 16) -> list[int]:
    """Frame indices the release takes from a video.

    Args:
        num_frames: Frames in the file.
        fps: Average frame rate.
        max_frames: Frames wanted (NUM_FRAMES = 16).

    Returns:
        Sorted frame indices (at most ``max_frames``).
    """
    if num_frames <= 0:
        return []
    f_start, f_end = 0, num_frames - 1
    stride = max(1, int(round(fps)))
    candidates = list(range(f_start, f_end + 1, stride))
    if len(candidates) > max_frames:
        return [candidates[i] for i in np.linspace(0, len(candidates) - 1, max_frames, dtype=int)]
    if len(candidates) < max_frames:
        min_frames = min(max_frames, num_frames)
        step = max(1, (f_end - f_start) // max(1, min_frames - 1))
        return [f_start + i * step for i in range(min_frames) if f_start + i * step <= f_end]
    return candidates


def read_video_frames(path: Path | str, max_frames: int = 16) -> np.ndarray:
    """Reads the release's 16 sampled frames of a video file as RGB uint8.

    Args:
        path: Video file.
        max_frames: Frames wanted.

    Returns:
        Frames [T, H, W, 3] (T <= max_frames).

    Raises:
        VideoReadError: If the file is missing, cannot be decoded, or has no frames.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video file {path} does not exist")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoReadError(f"video file {path} could not be opened by OpenCV")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        frames = []
        while True:  # decode sequentially: frame counts and seeking are unreliable in some containers
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise VideoReadError(f"video file {path} has no decodable frames")
    if fps <= 0:
        raise VideoReadError(f"video file {path} reports no frame rate")
    picks = sample_positions(len(frames), fps, max_frames)
    return np.stack([cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB) for i in picks])


def pad_pixels(pixels: torch.Tensor, num_frames: int = 16) -> torch.Tensor:
    """Pads preprocessed pixels with zero frames (zeros in normalised space, as the release pads).

    Args:
        pixels: [T, 3, S, S] with T <= num_frames.
        num_frames: Target frame count.

    Returns:
        [num_frames, 3, S, S].
    """
    t = pixels.shape[0]
    if t >= num_frames:
        return pixels[:num_frames]
    return torch.cat([pixels, pixels.new_zeros((num_frames - t, *pixels.shape[1:]))], dim=0)
