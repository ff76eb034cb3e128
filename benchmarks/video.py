"""Video decoding, before (OpenCV, every frame kept) and after (PyAV, ``engine_format.video``): memory, colour, time.

Usage::

    python -m benchmarks.video --out artifacts/bench_video                 # all three parts (~3 min on 2 cores)
    python -m benchmarks.video --out DIR --only colour,vfr                 # seconds
    python -m benchmarks.video --out DIR --opencv-python VENV/bin/python   # also another OpenCV build's colour

Three parts, each on a file made by ffmpeg (``benchmarks.media``; reused from ``--media`` when present):

* ``memory``: peak RSS of ``mobile_videogpt.video_io.read_video_frames`` on an hour of 1080p (2 fps, x264
  ultrafast, 7,200 frames, ~0.9 GB), each reader in a fresh interpreter (``ru_maxrss``; the figure after the imports
  is given too). The old reader (OpenCV, decode and keep every frame, then pick 16) cannot be run on that file (it
  would need ~45 GB): it runs on 1- and 2-minute files of the same kind and its growth per minute is extrapolated;
* ``colour``: the first frame of a lossless BT.709-tagged colour-bar clip against the textbook BT.709 conversion of
  its own YUV planes (``benchmarks.media.reference_rgb``): mean and max absolute error in grey levels (0-255) for
  the new reader, the installed OpenCV, and optionally another OpenCV build (``--opencv-python``);
* ``vfr``: timestamps of a 4.8 s variable-frame-rate clip (15 fps, then 60 fps): the old stamping ``index / fps``
  (fps from OpenCV) and the new container PTS against the times the clip was written with.

Writes ``video.json`` under ``--out`` and prints one readable line per measurement.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, command_line, report_header, write_json

logger = logging.getLogger("benchmarks.video")

PARTS = ("memory", "colour", "vfr")
BASELINE_MINUTES = (1, 2)

#: Runs one reader in a fresh interpreter and prints its RSS figures as JSON (argv: reader name, path).
_MEMORY_PROBE = """
import json, resource, sys, time
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
reader, path = sys.argv[1], sys.argv[2]
if reader == "pyav":
    from mobile_videogpt.video_io import read_video_frames as read
else:
    from benchmarks.video import opencv_read_all_frames as read
after_imports = peak_mb()
started = time.perf_counter()
frames = read(path)
print(json.dumps({"reader": reader, "frames": list(frames.shape), "peak_rss_mb": peak_mb(),
                  "rss_after_imports_mb": after_imports, "seconds": time.perf_counter() - started}))
"""

#: Decodes the first frame with whatever OpenCV the interpreter has and saves it as RGB (argv: video, out.npy).
_OPENCV_FIRST_FRAME = """
import sys, cv2, numpy as np
cap = cv2.VideoCapture(sys.argv[1]); ok, bgr = cap.read(); cap.release()
assert ok, "OpenCV could not decode " + sys.argv[1]
np.save(sys.argv[2], bgr[..., ::-1]); print(cv2.__version__)
"""


def opencv_read_all_frames(path: str) -> np.ndarray:
    """The reference reader before PyAV: OpenCV decodes every frame, keeps them all, then takes the 16 picks."""
    import cv2

    from mobile_videogpt.video_io import sample_positions

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    picks = sample_positions(len(frames), fps, 16)
    return np.stack([cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB) for i in picks])


def _probe(reader: str, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, reader, str(path)], cwd=REPO, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_memory(media: Path, minutes: float) -> dict[str, Any]:
    """Peak RSS of the new reader on ``minutes`` of 1080p and of the old one on 1- and 2-minute files."""
    from benchmarks.media import make_long_video

    def video(m: float) -> Path:
        path = media / f"testsrc2_1080p_2fps_{m:g}min.mp4"
        if not path.is_file():
            logger.info("writing %s (ffmpeg, ultrafast)", path)
            make_long_video(path, m)
        return path

    long_path = video(minutes)
    new = _probe("pyav", long_path)
    new["minutes"] = minutes
    old = []
    for m in BASELINE_MINUTES:
        row = _probe("opencv_all_frames", video(m))
        row["minutes"] = m
        old.append(row)
    slope = (old[-1]["peak_rss_mb"] - old[0]["peak_rss_mb"]) / (old[-1]["minutes"] - old[0]["minutes"])
    projected = old[0]["peak_rss_mb"] + slope * (minutes - old[0]["minutes"])
    print(
        f"memory: new reader, {minutes:g} min of 1080p at 2 fps: peak RSS {new['peak_rss_mb']:.0f} MB "
        f"({new['rss_after_imports_mb']:.0f} MB after imports), {new['seconds']:.1f} s"
    )
    for row in old:
        print(
            f"memory: old reader, {row['minutes']:g} min: peak RSS {row['peak_rss_mb']:.0f} MB, "
            f"{row['seconds']:.1f} s"
        )
    print(
        f"memory: old reader grows {slope:.0f} MB per minute: ~{projected / 1024:.1f} GB projected for "
        f"{minutes:g} min"
    )
    return {"file": str(long_path), "file_mb": long_path.stat().st_size / 2**20, "new": new, "old": old,
            "old_mb_per_minute": slope, "old_projected_peak_mb": projected}


def _errors(image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    diff = np.abs(image.astype(np.float64) - reference)
    return {"mean": float(diff.mean()), "max": float(diff.max())}


def measure_colour(clip: Path, other_python: str | None) -> dict[str, Any]:
    """Grey-level error of each decoder against the textbook BT.709 conversion of the same YUV planes."""
    import av
    import cv2

    from benchmarks.media import BT601, BT709, reference_rgb
    from engine_format.video import VideoReader

    with av.open(str(clip)) as container:
        planes = next(container.decode(video=0)).to_ndarray(format="yuv420p")
    ref709, ref601 = reference_rgb(planes, BT709, False), reference_rgb(planes, BT601, False)
    with VideoReader(clip) as reader:
        new = next(reader.frames()).image
    cap = cv2.VideoCapture(str(clip))
    _, bgr = cap.read()
    cap.release()
    rows = {"pyav (new)": new, f"opencv {cv2.__version__} (installed)": bgr[..., ::-1]}
    if other_python:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "frame.npy"
            done = subprocess.run([other_python, "-c", _OPENCV_FIRST_FRAME, str(clip.resolve()), str(out)], check=True,
                                  capture_output=True, text=True, cwd=tmp)
            rows[f"opencv {done.stdout.strip()} ({other_python})"] = np.load(out)
    result: dict[str, Any] = {"clip": str(clip), "bt601_vs_bt709": _errors(ref601, ref709), "decoders": {}}
    for name, image in rows.items():
        result["decoders"][name] = {"vs_bt709": _errors(image, ref709), "vs_bt601": _errors(image, ref601)}
        e = result["decoders"][name]["vs_bt709"]
        print(f"colour: {name}: vs BT.709 mean {e['mean']:.2f}, max {e['max']:.0f} grey levels")
    e = result["bt601_vs_bt709"]
    print(f"colour: a BT.601 conversion of the same planes is off by mean {e['mean']:.2f}, max {e['max']:.0f}")
    return result


def measure_vfr(clip: Path) -> dict[str, Any]:
    """Timestamp error of ``index / fps`` (old) and container PTS (new) on the VFR clip."""
    import cv2

    from benchmarks.media import VFR_TIMES
    from engine_format.video import VideoReader

    truth = np.array(VFR_TIMES)
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    with VideoReader(clip) as reader:
        new = np.array([f.time_s for f in reader.frames()])
    old = np.arange(len(truth)) / fps
    result = {
        "clip": str(clip),
        "frames": len(truth),
        "fps": fps,
        "old_index_over_fps": {"mean": float(np.abs(old - truth).mean()), "max": float(np.abs(old - truth).max())},
        "new_pts": {"mean": float(np.abs(new - truth).mean()), "max": float(np.abs(new - truth).max())},
    }
    print(f"vfr: {len(truth)} frames over {truth[-1]:.2f} s (avg {fps:g} fps): index/fps off by up to "
          f"{result['old_index_over_fps']['max']:.2f} s (mean {result['old_index_over_fps']['mean']:.2f} s); "
          f"container PTS off by up to {result['new_pts']['max']:.1e} s")
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 when ffmpeg is missing)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench_video"))
    parser.add_argument("--media", type=Path, default=Path("artifacts/media"), help="where the test files go")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the long 1080p file")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument("--opencv-python", default=None, help="an interpreter with another OpenCV build (colour)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(unknown)} (choose from {', '.join(PARTS)})")
    from benchmarks.media import ffmpeg_missing_reason, make_test_videos

    reason = ffmpeg_missing_reason()
    if reason:
        print(f"benchmarks.video: {reason}", file=sys.stderr)
        return 2
    report = report_header("video", command_line("benchmarks.video", argv), preset=None, backend=None,
                           precision=None, threads=None, random_weights=False)
    clips = make_test_videos(args.media / "clips")
    if "colour" in parts:
        report["colour"] = measure_colour(clips.bt709, args.opencv_python)
    if "vfr" in parts:
        report["vfr"] = measure_vfr(clips.vfr)
    if "memory" in parts:
        report["memory"] = measure_memory(args.media, args.minutes)
    write_json(args.out / "video.json", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
