"""``annotated.mp4``: the run's source replayed with the overlay burned in, frame by frame, after the run.

Replaying (a fresh, unpaced source of the same file or synthetic scene) keeps the capture and inference threads free
of any drawing or encoding work, and needs no frame kept in memory. Output frame ``k`` shows stream time ``k / fps``:
the newest source frame at or before it (container timestamps, so variable-frame-rate files stay in sync) with the
overlay folded from every recorded event displayed by then (see :mod:`runtime.render.record` for when that is).
After the source's last frame the video holds it until the last event has been shown, plus :data:`TAIL_S`, so
feedback that finished after the stream ended is still seen.

The codec is MPEG-4 Part 2 (``mp4v``, what OpenCV's pip wheels can write): VLC, mpv, ffplay and most desktop
players open it; browsers do not (``ffmpeg -i annotated.mp4 -c:v libx264 annotated_h264.mp4`` converts).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.frames import Frame
from runtime.overlay import OverlayState, draw_overlay
from runtime.render.canvas import RenderError
from runtime.render.record import RunRecord

logger = logging.getLogger(__name__)

#: Seconds the last frame is held after the last event.
TAIL_S = 1.0


@dataclass(frozen=True)
class VideoWritten:
    """What :func:`write_annotated_video` wrote."""

    path: Path
    frames: int
    fps: float
    size: tuple[int, int]

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.frames / self.fps


def write_annotated_video(
    record: RunRecord,
    frames: Iterable[Frame],
    path: str | Path,
    fps: float,
    height: int = 720,
) -> VideoWritten:
    """Writes ``frames`` with the overlay of ``record`` burned in.

    Args:
        record: The run's record.
        frames: The source's frames from the first one on, in order (a fresh replay of the run's source).
        path: Output ``.mp4``.
        fps: Output frame rate (the source's nominal rate).
        height: Output frame height; the width follows the aspect ratio.

    Raises:
        RenderError: If the source yields no frame or the file cannot be written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = iter(frames)
    first = next(source, None)
    if first is None:
        raise RenderError(f"{out}: the replayed source yielded no frame")
    origin = first.timestamp
    state = OverlayState(record.info.random_weights, record.info.backend, record.info.policy, origin=lambda: origin)
    span = (0.0, max(record.last_t, record.end_t, 1e-3))
    end_t = span[1] + TAIL_S
    schedule = iter(record.schedule)
    pending = next(schedule, None)
    current, upcoming = first, next(source, None)
    writer: cv2.VideoWriter | None = None
    written, size = 0, (0, 0)
    try:
        for k in _frame_times(fps, end_t):
            t = k / fps
            while upcoming is not None and upcoming.timestamp - origin <= t + 1e-9:
                current, upcoming = upcoming, next(source, None)
            while pending is not None and pending[0] <= t:
                state.apply(pending[1], pending[0])
                pending = next(schedule, None)
            view = state.view(t, span=span)
            if upcoming is None and t > record.end_t:
                view = dataclasses.replace(view, after_end=True)
            image = draw_overlay(current.image, view, height)
            if writer is None:
                size = (image.shape[1], image.shape[0])
                writer = _open_writer(out, fps, size)
            writer.write(np.ascontiguousarray(image))
            written += 1
    finally:
        if writer is not None:
            writer.release()
    logger.info("wrote %s (%d frames, %.1f s at %g fps, %dx%d)", out, written, written / fps, fps, *size)
    return VideoWritten(out, written, fps, size)


def _frame_times(fps: float, end_t: float) -> Iterator[int]:
    k = 0
    while k / fps <= end_t:
        yield k
        k += 1


def _open_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]  # missing from OpenCV's stubs
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), size)
    if not writer.isOpened():
        raise RenderError(f"cannot write the annotated video {path} (mp4v encoder unavailable or path not writable)")
    return writer
