"""Videos with known properties, made with the ffmpeg command-line tool, and the textbook YUV->RGB conversion.

* :func:`make_test_videos`: tiny BT.709/BT.601/full-range, VFR, rotated, damaged and empty clips (a few seconds at
  160x120 or 320x240, written in about 2 s), used by the tests through the session fixture ``test_videos`` in
  ``tests/conftest.py`` (which skips, with the reason, where ffmpeg is missing) and by ``benchmarks.video``;
* :func:`make_long_video`: an hour of 1080p at a low frame rate (ultrafast preset) for the memory benchmark;
* :func:`reference_rgb`: the float64 BT.601/BT.709 conversion of a frame's YUV 4:2:0 planes, the yardstick for
  the decoders' colour.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: (Kr, Kb) of the two matrices.
BT709 = (0.2126, 0.0722)
BT601 = (0.299, 0.114)
#: The constant-rate clip: 145 frames at 30 fps (4.83 s, the length of the issue's push-up clip).
CFR_FRAMES = 145
CFR_FPS = 30
#: The variable-rate clip: 48 frames at 15 fps (0-3.2 s), then 97 at 60 fps (3.2-4.8 s), time base 1/600.
VFR_SLOW_FRAMES = 48
VFR_TIMES = tuple([i * 40 / 600 for i in range(VFR_SLOW_FRAMES)] + [(1920 + i * 10) / 600 for i in range(97)])


@dataclass(frozen=True)
class VideoSet:
    """Paths of the generated clips."""

    cfr: Path
    """145 frames, 30 fps, 320x240 testsrc2, keyframe every 30 frames, index at the front (faststart)."""
    bt709: Path
    """1 s of HD colour bars, lossless, tagged BT.709 limited range."""
    bt601: Path
    """The same bars tagged (and encoded) BT.601 limited range."""
    full_range: Path
    """The same bars encoded BT.709 full range (``pc``)."""
    vfr: Path
    """145 frames whose timestamps are :data:`VFR_TIMES` (average 30 fps)."""
    rotated: Path
    """``cfr`` stream-copied with a 90-degree display rotation."""
    truncated: Path
    """``cfr`` cut to half its bytes."""
    corrupt: Path
    """``cfr`` with 4 KiB of random bytes written at its midpoint."""
    empty: Path
    """A zero-byte ``.mp4``."""
    junk: Path
    """Text in a ``.mp4`` file."""


def ffmpeg_missing_reason() -> str:
    """Why the clips cannot be made here ('' when ffmpeg is available)."""
    if shutil.which("ffmpeg") is None:
        return "ffmpeg is not installed (make setup installs it with apt-get where it can, else install it by hand)"
    return ""


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _bars(out: Path, matrix: str, color_range: str) -> Path:
    """Lossless colour bars converted to YUV with ``matrix``/``color_range`` and tagged the same way."""
    _ffmpeg(
        "-f", "lavfi", "-i", "smptehdbars=size=320x240:rate=30:duration=1",
        "-vf", f"scale=out_color_matrix={matrix}:out_range={color_range},format=yuv420p",
        "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
        "-colorspace", "bt709" if matrix == "bt709" else "smpte170m",
        "-color_primaries", "bt709" if matrix == "bt709" else "smpte170m",
        "-color_trc", "bt709" if matrix == "bt709" else "smpte170m",
        "-color_range", color_range, str(out),
    )  # fmt: skip
    return out


def make_test_videos(folder: Path) -> VideoSet:
    """Writes every clip into ``folder`` (about 2 s on 2 cores)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfr = folder / "cfr.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={CFR_FPS}:duration={CFR_FRAMES / CFR_FPS}",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30", "-movflags", "+faststart",
        str(cfr),
    )  # fmt: skip
    vfr = folder / "vfr.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=30:duration={CFR_FRAMES / 30}",
        "-vf", f"settb=1/600,setpts='if(lt(N,{VFR_SLOW_FRAMES}),N*40,1920+(N-{VFR_SLOW_FRAMES})*10)'",
        "-fps_mode", "passthrough", "-enc_time_base", "1/600", "-video_track_timescale", "600",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(vfr),
    )  # fmt: skip
    rotated = folder / "rotated.mp4"
    _ffmpeg("-i", str(cfr), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    data = cfr.read_bytes()
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    damaged = bytearray(data)
    rng = random.Random(0)
    middle = len(damaged) // 2
    damaged[middle : middle + 4096] = bytes(rng.randrange(256) for _ in range(4096))
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(bytes(damaged))
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    junk = folder / "junk.mp4"
    junk.write_text("this is not a video")
    return VideoSet(
        cfr=cfr,
        bt709=_bars(folder / "bt709.mp4", "bt709", "tv"),
        bt601=_bars(folder / "bt601.mp4", "bt601", "tv"),
        full_range=_bars(folder / "full_range.mp4", "bt709", "pc"),
        vfr=vfr,
        rotated=rotated,
        truncated=truncated,
        corrupt=corrupt,
        empty=empty,
        junk=junk,
    )


def make_long_video(path: Path, minutes: float, fps: float = 2.0, size: tuple[int, int] = (1920, 1080)) -> Path:
    """Writes ``minutes`` of testsrc2 at ``size`` and ``fps`` (x264 ultrafast, BT.709-tagged); 60 min take ~1 min."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={fps}:duration={minutes * 60}",
        "-c:v", "libx264", "-preset", "ultrafast", "-threads", "1", "-pix_fmt", "yuv420p",
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", str(path),
    )  # fmt: skip
    return path


def reference_rgb(yuv420p: np.ndarray, matrix: tuple[float, float], full_range: bool) -> np.ndarray:
    """The textbook conversion of one frame's planes, in float64 (chroma repeated 2x2), clipped to [0, 255].

    Args:
        yuv420p: The frame as PyAV's ``to_ndarray(format="yuv420p")`` gives it: ``[H * 3 / 2, W]``.
        matrix: ``(Kr, Kb)``: :data:`BT709` or :data:`BT601`.
        full_range: Full-range (``pc``) samples rather than limited 16-235 / 16-240.

    Returns:
        RGB ``[H, W, 3]`` float64.
    """
    yuv = yuv420p.astype(np.float64)
    h, w = yuv.shape[0] * 2 // 3, yuv.shape[1]
    y = yuv[:h]
    u = yuv[h : h + h // 4].reshape(h // 2, w // 2).repeat(2, 0).repeat(2, 1)
    v = yuv[h + h // 4 :].reshape(h // 2, w // 2).repeat(2, 0).repeat(2, 1)
    if full_range:
        luma, cb, cr = y, u - 128, v - 128
    else:
        luma, cb, cr = (y - 16) * 255 / 219, (u - 128) * 255 / 224, (v - 128) * 255 / 224
    kr, kb = matrix
    r = luma + 2 * (1 - kr) * cr
    b = luma + 2 * (1 - kb) * cb
    g = (luma - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.stack([r, g, b], -1), 0, 255)
