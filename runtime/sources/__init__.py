"""Frame sources: camera, video file and the synthetic scene (one module each), and the ``--source`` factory.

* :mod:`~runtime.sources.base`: :class:`FrameSource`, :class:`SourceError`, real-time pacing;
* :mod:`~runtime.sources.camera`: :class:`CameraSource` (measured delivery, reconnect after a stall);
* :mod:`~runtime.sources.video_file`: :class:`VideoFileSource` (PyAV through :mod:`engine_format.video`);
* :mod:`~runtime.sources.scene` / :mod:`~runtime.sources.synthetic`: the squat scene and :class:`SyntheticSource`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from runtime.config import CameraConfig
from runtime.sources.base import FALLBACK_FPS, STREAM_END_REASONS, FrameSource, Pacer, SourceError, StreamEnd
from runtime.sources.camera import CameraSource
from runtime.sources.synthetic import SyntheticSource
from runtime.sources.video_file import VideoFileSource

logger = logging.getLogger(__name__)

__all__ = [
    "FALLBACK_FPS",
    "CameraSource",
    "FrameSource",
    "Pacer",
    "STREAM_END_REASONS",
    "SourceError",
    "StreamEnd",
    "SyntheticSource",
    "VideoFileSource",
    "source_from_spec",
    "write_sample_video",
]


def write_sample_video(
    path: str | Path,
    fps: float = 30.0,
    duration_s: float = 8.0,
    size: tuple[int, int] = (240, 320),
    seed: int = 0,
) -> Path:
    """Write the synthetic exercise scene to an ``.mp4`` (mp4v) file.

    Args:
        path: Output file; parent directories are created.
        fps: Frame rate of the written video.
        duration_s: Length in seconds.
        size: Frame size as ``(height, width)``.
        seed: Seed passed to :class:`SyntheticSource`.

    Returns:
        The path written.

    Raises:
        SourceError: If OpenCV cannot create the video writer.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]  # missing from OpenCV's stubs
    writer = cv2.VideoWriter(str(out), fourcc, float(fps), (width, height))
    if not writer.isOpened():
        raise SourceError(f"could not create video writer for {out} (mp4v codec unavailable or path not writable)")
    try:
        with SyntheticSource(fps=fps, duration_s=duration_s, size=size, seed=seed) as source:
            for frame in source:
                writer.write(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    logger.info("wrote sample video %s (%g s at %g fps, %dx%d)", out, duration_s, fps, width, height)
    return out


def source_from_spec(spec: str, paced: bool = True, camera: CameraConfig | None = None) -> FrameSource:
    """Builds (without opening) the source named by a ``--source`` value.

    Args:
        spec: A non-negative integer for a camera index, ``"synthetic"`` for the
            synthetic scene, otherwise a video file path.
        paced: Real-time pacing for file and synthetic sources (cameras are
            always real time).
        camera: The ``camera.*`` settings (requested mode, timeouts, reconnect);
            ``None`` takes the configuration defaults.

    Returns:
        An unopened :class:`FrameSource`.

    Raises:
        SourceError: If ``spec`` is empty or a negative camera index.
    """
    text = spec.strip()
    if not text:
        raise SourceError("--source is empty: expected a camera index, 'synthetic' or a video file path")
    if text.lstrip("-").isdigit():
        return CameraSource.from_config(int(text), camera or CameraConfig())
    if text.lower() == "synthetic":
        return SyntheticSource(paced=paced)
    return VideoFileSource(text, paced=paced)
