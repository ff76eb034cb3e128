"""Frames decoded from a video file (PyAV), paced like a live camera or as fast as they decode."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from engine_format.video import DecodedFrame, VideoDecodeError, VideoInfo, VideoReader
from runtime.frames import Frame
from runtime.sources.base import FALLBACK_FPS, FrameSource, Pacer, SourceError, StreamEnd

logger = logging.getLogger(__name__)


class VideoFileSource(FrameSource):
    """Frames decoded from a video file by :class:`engine_format.video.VideoReader`.

    Timestamps are the container's presentation times (PTS x time base, from 0 at the first frame), so a
    variable-frame-rate phone video is stamped as it plays, paced or not. Colour follows the stream's matrix and
    range, and the display rotation is applied. A file that ends short of what its container announces, or that has
    packets the decoder rejects, still delivers every frame that decodes; :attr:`stream_end` then says
    ``truncated`` and why. Only a file of which no frame decodes raises (at :meth:`open`).

    Args:
        path: The video file.
        paced: If true, frames are released at their timestamps (like a live camera); if false, as fast as they
            decode (offline runs, benchmarks).
        threads: Decoder threads (0 = FFmpeg's choice).
    """

    def __init__(self, path: str | Path, paced: bool = True, threads: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.paced = paced
        self._threads = threads
        self._reader: VideoReader | None = None
        self._frames: Iterator[DecodedFrame] | None = None
        self._info: VideoInfo | None = None
        self._last: DecodedFrame | None = None
        self._pacer = Pacer()

    @property
    def description(self) -> str:
        return f"video file {self.path}"

    @property
    def info(self) -> VideoInfo | None:
        """What the container and the first frame told (``None`` before :meth:`open`)."""
        return self._info

    @property
    def nominal_fps(self) -> float:
        """The stream's average frame rate (``FALLBACK_FPS`` if it reports none, or before :meth:`open`)."""
        if self._info is not None and self._info.average_fps:
            return self._info.average_fps
        return FALLBACK_FPS

    @property
    def reported_size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the frames as delivered, after rotation (``None`` before :meth:`open`)."""
        return None if self._info is None else (self._info.width, self._info.height)

    @property
    def frame_count(self) -> int | None:
        """Frames the container announces, if it does (else duration x fps; ``None`` if neither is known)."""
        return None if self._info is None else self._info.expected_frames

    def _open(self) -> None:
        try:
            self._reader = VideoReader(self.path, threads=self._threads)
        except VideoDecodeError as exc:
            raise SourceError(str(exc)) from exc
        self._info = self._reader.info
        if not self._info.average_fps:
            logger.warning("%s reports no frame rate; timestamps come from the container, pacing assumes %.1f fps",
                           self.path, FALLBACK_FPS)
        if self._info.rotation:
            logger.info("%s: applying the display rotation (%d deg)", self.path, self._info.rotation)
        self._frames = self._reader.frames()
        self._last = None
        self._pacer = Pacer()
        self.stream_end = None

    def _read(self) -> Frame | None:
        assert self._frames is not None
        started = time.perf_counter()
        decoded = next(self._frames, None)
        if decoded is None:
            self.stream_end = self._stream_end()
            return None
        decode_ms = (time.perf_counter() - started) * 1e3  # measured before pacing sleeps
        if self.paced:
            self._pacer.wait_until(decoded.time_s)
        self._last = decoded
        return Frame(decoded.index, decoded.time_s, decoded.image, decode_ms=decode_ms)

    def _stream_end(self) -> StreamEnd:
        """The end facts after the last frame: covered time, and whether the file fell short of its container."""
        assert self._reader is not None and self._info is not None
        status = self._reader.status
        shortfall = status.shortfall(self._info)
        common = {
            "end_time": status.end_time_s,
            "frames_read": status.frames,
            "frames_expected": self._info.expected_frames,
            "decode_errors": status.packet_errors,
            "corrupt_frames": status.corrupt_frames,
        }
        if shortfall:
            logger.warning("video file %s is truncated or damaged: %s", self.path, shortfall)
            return StreamEnd("truncated", message=shortfall, **common)
        if status.corrupt_frames:
            logger.warning("video file %s: %d frame(s) decoded with concealed errors", self.path, status.corrupt_frames)
        return StreamEnd("end_of_stream", **common)

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._frames = None
