"""Frame sources: synthetic, the sample video, --source parsing (cameras: test_camera.py; real files: test_video_file.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.sources.scene import SquatScene
from runtime.sources import (
    CameraSource,
    SourceError,
    SyntheticSource,
    VideoFileSource,
    source_from_spec,
    write_sample_video,
)


def _read_all(source: SyntheticSource | VideoFileSource) -> list:
    with source:
        return list(source)


def test_synthetic_is_deterministic_and_rgb_uint8() -> None:
    a = _read_all(SyntheticSource(fps=10.0, duration_s=1.0, size=(48, 64), seed=3))
    b = _read_all(SyntheticSource(fps=10.0, duration_s=1.0, size=(48, 64), seed=3))
    c = _read_all(SyntheticSource(fps=10.0, duration_s=1.0, size=(48, 64), seed=4))
    assert len(a) == 10
    assert [f.index for f in a] == list(range(10))
    assert [f.timestamp for f in a] == pytest.approx([i / 10.0 for i in range(10)])
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in a)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].image, c[0].image)


def test_synthetic_has_still_and_moving_phases() -> None:
    src = SyntheticSource(fps=30.0, size=(96, 128), noise_std=0.0)
    # Standing still during [0, 3): identical frames without noise.
    assert np.array_equal(src.render(0), src.render(60))
    assert not SyntheticSource.is_moving(2.9) and SyntheticSource.is_moving(3.1)
    # Mid-rep the figure is visibly displaced.
    mid_rep = round((SquatScene.STILL_S + SquatScene.REP_S / 2) * 30)
    diff = np.abs(src.render(0).astype(int) - src.render(mid_rep).astype(int)).mean()
    assert diff > 1.0
    assert SyntheticSource.squat_depth(SquatScene.STILL_S + SquatScene.REP_S / 2) == pytest.approx(1.0)


def test_read_requires_open() -> None:
    with pytest.raises(SourceError, match="not open"):
        SyntheticSource().read()


def test_video_file_round_trip(tmp_path: Path) -> None:
    path = write_sample_video(tmp_path / "sub" / "sample.mp4", fps=10.0, duration_s=1.0, size=(64, 80))
    assert path.exists() and path.stat().st_size > 0
    source = VideoFileSource(path, paced=False)
    frames = _read_all(source)
    assert source.nominal_fps == pytest.approx(10.0)
    assert len(frames) == 10
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in range(10)])
    assert frames[0].image.shape == (64, 80, 3)
    # Decoded frames stay close to the synthetic ones in RGB order (lossy codec).
    expected = SyntheticSource(fps=10.0, duration_s=1.0, size=(64, 80)).render(0).astype(float)
    err = np.abs(frames[0].image.astype(float) - expected).mean(axis=(0, 1))
    assert err.max() < 12.0
    swapped = np.abs(frames[0].image.astype(float) - expected[..., ::-1]).mean()
    assert swapped > err.mean()


def test_video_file_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=f"video file not found: {missing}"):
        VideoFileSource(missing).open()


def test_video_file_unreadable_is_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.mp4"
    bogus.write_text("this is not a video")
    with pytest.raises(SourceError, match=str(bogus)):
        with VideoFileSource(bogus) as src:
            src.read()


def test_open_source_parses_specs(tmp_path: Path) -> None:
    assert isinstance(source_from_spec("0"), CameraSource)
    assert source_from_spec(" 2 ").index == 2  # type: ignore[attr-defined]
    synthetic = source_from_spec("synthetic", paced=False)
    assert isinstance(synthetic, SyntheticSource) and synthetic.paced is False
    video = source_from_spec(str(tmp_path / "x.mp4"), paced=True)
    assert isinstance(video, VideoFileSource) and video.paced and video.path == tmp_path / "x.mp4"
    with pytest.raises(SourceError, match="camera index -1 is invalid"):
        source_from_spec("-1")
    with pytest.raises(SourceError, match="--source is empty"):
        source_from_spec("  ")


def test_paced_source_keeps_the_same_timestamps() -> None:
    fast = _read_all(SyntheticSource(fps=200.0, duration_s=0.05, size=(32, 32)))
    paced = _read_all(SyntheticSource(fps=200.0, duration_s=0.05, size=(32, 32), paced=True))
    assert [f.timestamp for f in paced] == [f.timestamp for f in fast]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(fast, paced, strict=True))


def test_finite_sources_report_how_and_when_they_ended(tmp_path: Path) -> None:
    """``stream_end``: a 2.0 s, 30 fps stream covers 60 frames x 1/30 s, though its last frame is stamped 59/30."""
    with SyntheticSource(duration_s=2.0, size=(48, 64)) as source:
        assert source.stream_end is None
        frames = list(source)
    assert frames[-1].timestamp == pytest.approx(59 / 30)
    assert source.stream_end is not None and source.stream_end.reason == "end_of_stream"
    assert source.stream_end.end_time == pytest.approx(2.0) and source.stream_end.frames_read == 60
    video = write_sample_video(tmp_path / "clip.mp4", duration_s=2.0)
    with VideoFileSource(video, paced=False) as source:
        frames = list(source)
        end = source.stream_end
    assert end is not None and (end.reason, end.frames_read, end.frames_expected) == ("end_of_stream", 60, 60)
    assert end.end_time == pytest.approx(2.0)
