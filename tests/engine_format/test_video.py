"""engine_format.video: colour matrix and range, container timestamps, rotation, damage accounting, bad files.

Run: ``.venv/bin/python -m pytest -q tests/engine_format/test_video.py`` (needs the ffmpeg tool to make the clips).
"""

from __future__ import annotations

import re

import av
import numpy as np
import pytest

from benchmarks.media import BT601, BT709, CFR_FPS, CFR_FRAMES, VFR_TIMES, VideoSet, reference_rgb
from engine_format.video import VideoDecodeError, VideoReader


def _reference(reader: VideoReader, matrix: tuple[float, float], full_range: bool) -> np.ndarray:
    """The first frame's raw planes converted by the textbook formula (the test's own conversion, not the reader's)."""
    with av.open(str(reader.path)) as container:
        planes = next(container.decode(video=0)).to_ndarray(format="yuv420p")
    return reference_rgb(planes, matrix, full_range)


def _first_rgb(path) -> np.ndarray:  # noqa: ANN001
    with VideoReader(path) as reader:
        return next(reader.frames()).image.astype(np.float64)


def _error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    diff = np.abs(a - b)
    return float(diff.mean()), float(diff.max())


def test_bt709_clip_converts_with_bt709(test_videos: VideoSet) -> None:
    """A BT.709-tagged clip is converted with the BT.709 matrix (not OpenCV's historical BT.601 default)."""
    with VideoReader(test_videos.bt709) as reader:
        assert (reader.info.matrix, reader.info.matrix_tagged, reader.info.full_range) == ("bt709", True, False)
        ref709 = _reference(reader, BT709, full_range=False)
        ref601 = _reference(reader, BT601, full_range=False)
    got = _first_rgb(test_videos.bt709)
    mean709, max709 = _error(got, ref709)
    mean601, max601 = _error(got, ref601)
    print(f"BT.709 clip: vs BT.709 mean {mean709:.3f} max {max709:.1f}; vs BT.601 mean {mean601:.3f} max {max601:.1f}")
    # The residual is swscale's chroma interpolation and fixed-point rounding against the test's float formula.
    assert mean709 < 1.2 and max709 <= 4
    assert mean601 > 3 * mean709 and max601 > 20


def test_bt601_clip_converts_with_bt601(test_videos: VideoSet) -> None:
    """A BT.601-tagged clip keeps the BT.601 matrix: the matrix follows the tag, not the frame size."""
    with VideoReader(test_videos.bt601) as reader:
        assert reader.info.matrix == "bt601"
        ref601 = _reference(reader, BT601, full_range=False)
    mean, peak = _error(_first_rgb(test_videos.bt601), ref601)
    assert mean < 1.2 and peak <= 4


def test_full_range_clip_is_not_stretched(test_videos: VideoSet) -> None:
    """A full-range (``pc``) stream converts without the limited-range 16-235 stretch."""
    with VideoReader(test_videos.full_range) as reader:
        assert reader.info.full_range
        ref_full = _reference(reader, BT709, full_range=True)
        ref_limited = _reference(reader, BT709, full_range=False)
    got = _first_rgb(test_videos.full_range)
    mean, peak = _error(got, ref_full)
    assert mean < 1.2 and peak <= 4
    assert _error(got, ref_limited)[0] > 3 * mean


def test_vfr_timestamps_come_from_the_container(test_videos: VideoSet) -> None:
    """Variable frame rate: each frame is stamped PTS x time base, not index / average fps."""
    with VideoReader(test_videos.vfr) as reader:
        frames = list(reader.frames())
        fps = reader.info.average_fps
    times = np.array([f.time_s for f in frames])
    assert len(frames) == len(VFR_TIMES)
    assert np.abs(times - np.array(VFR_TIMES)).max() < 1e-6
    index_error = np.abs(np.arange(len(frames)) / fps - times).max()
    print(f"VFR clip: index/avg-fps stamps were off by up to {index_error:.2f} s")
    assert index_error > 1.0  # what the old stamping got wrong on this clip
    assert frames[0].duration_s == pytest.approx(1 / 15) and frames[-2].duration_s == pytest.approx(1 / 60)


def test_cfr_end_time_is_frames_over_fps(test_videos: VideoSet) -> None:
    """A constant-rate file of N frames covers N / fps: the last frame's time plus its duration."""
    with VideoReader(test_videos.cfr) as reader:
        frames = list(reader.frames())
        assert reader.status.end_time_s == pytest.approx(CFR_FRAMES / CFR_FPS)
        assert reader.status.shortfall(reader.info) == ""
    assert frames[-1].time_s == pytest.approx((CFR_FRAMES - 1) / CFR_FPS)


def test_rotation_is_applied(test_videos: VideoSet) -> None:
    """A 90-degree display matrix turns frames as a player shows them (same stream, rotated counter-clockwise)."""
    with VideoReader(test_videos.rotated) as reader:
        assert (reader.info.rotation, reader.info.width, reader.info.height) == (90, 240, 320)
        rotated = next(reader.frames()).image
    upright = _first_rgb(test_videos.cfr).astype(np.uint8)
    assert rotated.shape == (320, 240, 3) and rotated.flags["C_CONTIGUOUS"]
    assert np.array_equal(rotated, np.rot90(upright, k=1))


def test_truncated_file_decodes_what_exists_and_says_so(test_videos: VideoSet) -> None:
    """A file cut to half its bytes delivers its first half; the status names the shortfall."""
    with VideoReader(test_videos.truncated) as reader:
        frames = list(reader.frames())
        shortfall = reader.status.shortfall(reader.info)
    assert 0 < len(frames) < CFR_FRAMES // 2 + 5
    assert f"of the {CFR_FRAMES} frames the container announces" in shortfall
    assert "the frames cover" in shortfall


def test_corrupt_midpoint_counts_the_skipped_packet(test_videos: VideoSet) -> None:
    """Random bytes mid-file: decoding goes on past the bad packet, which is counted and named with its time."""
    with VideoReader(test_videos.corrupt) as reader:
        frames = list(reader.frames())
        status = reader.status
    assert status.packet_errors >= 1 and " s" in status.first_error
    assert len(frames) > CFR_FRAMES // 2  # frames after the damage still decode
    assert "failed to decode" in status.shortfall(reader.info)


def test_frames_at_equals_sequential_decode(test_videos: VideoSet) -> None:
    """Seeking to sampled positions returns exactly the frames a full in-order decode has there."""
    with VideoReader(test_videos.cfr) as reader:
        everything = [f.image for f in reader.frames()]
        index = reader.scan()
        assert index.count == CFR_FRAMES and index.keyframes[:3] == (0, 30, 60)
        picks = [0, 9, 31, 95, 130, 144]
        sampled = reader.frames_at(picks, index)
    for position, image in zip(picks, sampled, strict=True):
        assert np.array_equal(image, everything[position]), f"frame {position} differs"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty", "video file is empty (0 bytes)"),
        ("junk", "could not be opened (unreadable or unsupported format)"),
    ],
)
def test_bad_files_raise_naming_the_file(test_videos: VideoSet, name: str, message: str) -> None:
    """Zero-byte and non-video files raise VideoDecodeError with the reason and the path."""
    path = getattr(test_videos, name)
    with pytest.raises(VideoDecodeError, match=re.escape(message)) as caught:
        VideoReader(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("name", ["bt709", "bt601", "full_range"])
def test_conversion_equals_decords_filter_graph(test_videos: VideoSet, name: str) -> None:
    """The reader's RGB is bit-identical to decord's path: an FFmpeg ``scale=W:H`` filter into an ``rgb24`` sink."""
    path = getattr(test_videos, name)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        graph = av.filter.Graph()
        nodes = [graph.add_buffer(template=stream), graph.add("scale", f"{frame.width}:{frame.height}"),
                 graph.add("format", "rgb24"), graph.add("buffersink")]  # fmt: skip
        for upstream, downstream in zip(nodes, nodes[1:]):
            upstream.link_to(downstream)
        graph.configure()
        graph.push(frame)
        filtered = graph.pull().to_ndarray()
    assert np.array_equal(_first_rgb(path).astype(np.uint8), filtered)
