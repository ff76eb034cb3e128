"""VideoFileSource on real files: container timestamps, rotation, and how truncated, corrupt and bad files end.

Run: ``.venv/bin/python -m pytest -q tests/runtime/test_video_file.py`` (needs the ffmpeg tool to make the clips).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from benchmarks.media import CFR_FPS, CFR_FRAMES, VFR_TIMES, VideoSet
from runtime.frames import Frame
from runtime.sources import SourceError, VideoFileSource


def _read_all(path: Path) -> tuple[list[Frame], VideoFileSource]:
    source = VideoFileSource(path, paced=False)
    with source:
        frames = list(source)
    return frames, source


def test_constant_rate_file_ends_cleanly_at_n_over_fps(test_videos: VideoSet) -> None:
    """145 frames at 30 fps: stamped i/30, ``end_of_stream`` with end_time 145/30 and the announced count."""
    frames, source = _read_all(test_videos.cfr)
    assert [f.index for f in frames] == list(range(CFR_FRAMES))
    assert [f.timestamp for f in frames] == pytest.approx([i / CFR_FPS for i in range(CFR_FRAMES)])
    end = source.stream_end
    assert end is not None and (end.reason, end.frames_read, end.frames_expected) == ("end_of_stream", 145, 145)
    assert end.end_time == pytest.approx(CFR_FRAMES / CFR_FPS) and end.decode_errors == 0
    assert source.nominal_fps == pytest.approx(30.0) and source.reported_size == (320, 240)


def test_variable_rate_file_is_stamped_with_container_times(test_videos: VideoSet) -> None:
    """A VFR file's frames carry their PTS times (15 fps then 60 fps), not index / average fps."""
    frames, _ = _read_all(test_videos.vfr)
    assert np.abs(np.array([f.timestamp for f in frames]) - np.array(VFR_TIMES)).max() < 1e-6


def test_rotated_file_reports_and_delivers_the_display_size(test_videos: VideoSet) -> None:
    """A 90-degree rotation tag: frames and ``reported_size`` are portrait (240x320)."""
    source = VideoFileSource(test_videos.rotated, paced=False)
    with source:
        frame = source.read()
        assert source.reported_size == (240, 320)
    assert frame is not None and frame.image.shape == (320, 240, 3)


def test_truncated_file_delivers_its_frames_then_reports_truncated(test_videos: VideoSet) -> None:
    """Half the bytes: the decodable frames arrive, then ``truncated`` with the shortfall, no exception."""
    frames, source = _read_all(test_videos.truncated)
    end = source.stream_end
    assert end is not None and end.reason == "truncated"
    assert end.frames_read == len(frames) and 0 < len(frames) < CFR_FRAMES
    assert end.frames_expected == CFR_FRAMES and f"of the {CFR_FRAMES} frames" in end.message
    assert end.end_time == pytest.approx(frames[-1].timestamp + 1 / CFR_FPS)


def test_corrupt_midpoint_reports_truncated_with_the_decode_error(test_videos: VideoSet) -> None:
    """Random bytes mid-file: frames on both sides of the damage arrive; the end is ``truncated``, naming it."""
    frames, source = _read_all(test_videos.corrupt)
    end = source.stream_end
    assert end is not None and end.reason == "truncated" and end.decode_errors >= 1
    assert "failed to decode" in end.message
    assert frames[-1].timestamp > 4.0  # decoding resumed after the damaged packet


def test_file_with_no_decodable_frame_fails_at_open(test_videos: VideoSet, tmp_path: Path) -> None:
    """A container whose every packet is garbage raises SourceError at open (nothing was delivered)."""
    data = bytearray(test_videos.cfr.read_bytes())
    start = data.index(b"mdat") + 4
    rng = random.Random(1)
    data[start:] = bytes(rng.randrange(256) for _ in range(len(data) - start))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=f"video file has no decodable frames: {garbage}"):
        VideoFileSource(garbage).open()


@pytest.mark.parametrize(
    ("name", "message"),
    [("empty", r"video file is empty \(0 bytes\): "), ("junk", "video file could not be opened")],
)
def test_bad_files_fail_at_open_naming_the_file(test_videos: VideoSet, name: str, message: str) -> None:
    """Zero-byte and non-video files are a SourceError at open with the reason and the path."""
    path = getattr(test_videos, name)
    with pytest.raises(SourceError, match=message) as caught:
        VideoFileSource(path).open()
    assert str(path) in str(caught.value)
