"""Frames decoded from a video file, paced like a live camera or as fast as they decode."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import cv2

from runtime.frames import Frame
from runtime.sources.base import FALLBACK_FPS, FrameSource, Pacer, SourceError, StreamEnd

logger = logging.getLogger(__name__)


class VideoFileSource(FrameSource):
    """Frames decoded from a video file.

    Timestamps are ``index / fps`` using the file's own frame rate, so they are
    identical whether the file is paced or not.

    Args:
        path: The video file.
        paced: If true, frames are released at the file's frame rate (like a
            live camera); if false, as fast as they decode (benchmarks).
    """

    def __init__(self, path: str | Path, paced: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.paced = paced
        self._cap: Any = None
        self._fps = 0.0
        self._next_index = 0
        self._pacer = Pacer()

    @property
    def description(self) -> str:
        return f"video file {self.path}"

    @property
    def nominal_fps(self) -> float:
        """The file's frame rate (``FALLBACK_FPS`` if it reports none)."""
        return self._fps if self._fps > 0 else FALLBACK_FPS

    @property
    def frame_count(self) -> int | None:
        """The container's frame count, if it reports one (may be approximate)."""
        if self._cap is None:
            return None
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return count if count > 0 else None

    def _open(self) -> None:
        if not self.path.exists():
            raise SourceError(f"video file not found: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"video path is not a file: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"video file could not be opened (unreadable or unsupported format): {self.path}")
        reported = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if math.isfinite(reported) and reported > 0:
            self._fps = reported
        else:
            logger.warning("%s reports no frame rate; assuming %.1f fps", self.path, FALLBACK_FPS)
            self._fps = FALLBACK_FPS
        self._cap = cap
        self._next_index = 0
        self._pacer = Pacer()

    def _read(self) -> Frame | None:
        started = time.perf_counter()
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self._next_index == 0:
                # An opened container with no decodable frame is a broken file,
                # not an empty stream.
                raise SourceError(f"video file has no decodable frames: {self.path}")
            self.stream_end = self._stream_end()
            return None
        timestamp = self._next_index / self._fps
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        decode_ms = (time.perf_counter() - started) * 1e3  # measured before pacing sleeps
        if self.paced:
            self._pacer.wait_until(timestamp)
        frame = Frame(self._next_index, timestamp, rgb, decode_ms=decode_ms)
        self._next_index += 1
        return frame

    def _stream_end(self) -> StreamEnd:
        """The end facts after the last frame: covered time, and whether fewer frames decoded than announced."""
        expected = self.frame_count
        end_time = self._next_index / self._fps
        # Containers round their frame count; a shortfall of more than a frame or 2 % is a cut or corrupt file.
        if expected is not None and self._next_index < expected - max(1, round(0.02 * expected)):
            message = f"decoded {self._next_index} of the {expected} frames {self.path} announces"
            logger.warning("video file truncated: %s", message)
            return StreamEnd("truncated", end_time, self._next_index, expected, message)
        return StreamEnd("end_of_stream", end_time, self._next_index, expected)

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
