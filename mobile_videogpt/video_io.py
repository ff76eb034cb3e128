"""Reading a video file the way the release samples it (``eval/video_encoding.py::_get_rawvideo_dec``).

The release reads with decord; here the file is read by :class:`engine_format.video.VideoReader` (PyAV), which
follows decord where it matters: the frame count is the number of video packets (demuxed, not decoded), the fps is
the stream's ``avg_frame_rate``, colour follows the stream's matrix and range, and the display rotation is applied.
Only the sampled frames are converted and kept (the reader seeks to the keyframe before each one when that skips
decoding), so memory does not grow with the length of the file.

Sampling, as released: one candidate frame per second (stride round(fps)); more than 16 candidates -> 16 taken at
``linspace(0, n-1, 16)`` (truncated); fewer -> a fixed stride ``(last - first) // (min_frames - 1)`` from the first
frame; clips shorter than 16 frames keep all frames and the missing ones are zero pixels in normalised space (see
``pad_pixels``). The stride is in frames, as in the release: on a variable-frame-rate file the candidates are
``round(avg fps)`` frames apart, not one second (``docs/video.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from engine_format.video import VideoDecodeError, VideoReader

logger = logging.getLogger(__name__)

#: A file whose packets fall short of its announced frame count by more than this is treated as truncated.
_SHORTFALL_FRACTION = 0.02


class VideoReadError(VideoDecodeError):
    """A video file is missing, unreadable, empty, truncated or damaged where frames are sampled."""


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

    The file is demuxed once to count its video packets (decord's frame count), the sample positions are computed
    from that count and the stream's average fps, and only those frames are decoded to RGB and kept.

    Args:
        path: Video file.
        max_frames: Frames wanted.

    Returns:
        Frames [T, H, W, 3] (T <= max_frames), in display orientation.

    Raises:
        VideoReadError: If the file is missing or empty, cannot be decoded, has no frames or no frame rate, holds
            fewer packets than its container announces (a cut file), or a sampled frame fails to decode.
    """
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"video file {path} does not exist")
    try:
        with VideoReader(path) as reader:
            index = reader.scan()
            announced = reader.info.frame_count
            if index.demux_error or (
                announced is not None and index.count < announced - max(1, round(_SHORTFALL_FRACTION * announced))
            ):
                why = index.demux_error or f"{index.count} of the {announced} frames its container announces"
                raise VideoReadError(f"video file {path} is truncated: {why}")
            if index.count == 0:
                raise VideoReadError(f"video file {path} has no decodable frames")
            fps = reader.info.average_fps
            if not fps:
                raise VideoReadError(f"video file {path} reports no frame rate")
            picks = sample_positions(index.count, fps, max_frames)
            frames = reader.frames_at(picks, index)
    except VideoReadError:
        raise
    except VideoDecodeError as exc:
        raise VideoReadError(str(exc)) from exc
    logger.debug("%s: %d frames at %.3f fps, sampled %s", path, index.count, fps, picks)
    return np.stack(frames)


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
