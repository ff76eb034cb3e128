"""mobile_videogpt.video_io on real files: the release's sampling, rotation, VFR, and strict errors for damage.

Run: ``.venv/bin/python -m pytest -q tests/test_video_io.py`` (needs the ffmpeg tool to make the clips).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.media import CFR_FRAMES, VideoSet
from engine_format.video import VideoReader
from mobile_videogpt.video_io import VideoReadError, read_video_frames, sample_positions


def _all_frames(path) -> list[np.ndarray]:  # noqa: ANN001
    with VideoReader(path) as reader:
        return [f.image for f in reader.frames()]


def test_constant_rate_file_gives_the_release_picks(test_videos: VideoSet) -> None:
    """A 145-frame 30 fps clip yields exactly the frames at the release's positions 0, 9, ..., 135."""
    picks = sample_positions(CFR_FRAMES, 30.0)
    assert picks == list(range(0, 136, 9))
    everything = _all_frames(test_videos.cfr)
    got = read_video_frames(test_videos.cfr)
    assert got.shape == (16, 240, 320, 3) and got.dtype == np.uint8
    for image, position in zip(got, picks, strict=True):
        assert np.array_equal(image, everything[position]), f"frame {position} differs"


def test_variable_rate_file_samples_by_frame_index(test_videos: VideoSet) -> None:
    """VFR: positions come from the packet count and avg fps, as in the release (not from timestamps)."""
    everything = _all_frames(test_videos.vfr)
    got = read_video_frames(test_videos.vfr)
    picks = sample_positions(len(everything), 30.0)  # the clip's avg_frame_rate is 30/1
    for image, position in zip(got, picks, strict=True):
        assert np.array_equal(image, everything[position])


def test_rotated_file_is_read_upright(test_videos: VideoSet) -> None:
    """The display rotation is applied: a 90-degree-tagged 320x240 clip reads as 240 wide, 320 high."""
    assert read_video_frames(test_videos.rotated).shape == (16, 320, 240, 3)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated", "is truncated: "),
        ("corrupt", "is damaged: "),
        ("empty", "video file is empty"),
    ],
)
def test_damaged_files_raise_instead_of_sampling_garbage(test_videos: VideoSet, name: str, message: str) -> None:
    """Cut, corrupt and zero-byte files raise VideoReadError naming the file (the release crashes on them)."""
    path = getattr(test_videos, name)
    with pytest.raises(VideoReadError, match=message) as caught:
        read_video_frames(path)
    assert str(path) in str(caught.value)
