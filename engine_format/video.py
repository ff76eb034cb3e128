"""Decoding video files with PyAV (FFmpeg): the one decoder of the reference reader and the runtime's file source.

The release reads videos with decord, which demuxes the whole file once to index its packets (frame count = video
packets, sorted by PTS), takes the frame rate from the stream's ``avg_frame_rate``, pushes each decoded frame through
an FFmpeg filter graph (``scale`` to the same size, then ``rgb24``; the scaler takes the YUV->RGB matrix and range
from the frame's tags) and applies the rotation tag with ``transpose`` filters. This module does the same with PyAV:

* **colour**: each frame is converted by swscale with the frame's own matrix and range (BT.709 for HD phone video,
  BT.601 where a stream is untagged, as FFmpeg and decord do; full range for ``pc``/JPEG-range streams). That is the
  path decord's filter graph takes (the tests check bit-identical pixels on BT.709, BT.601 and full-range clips);
* **time**: a frame's timestamp is its container PTS times the stream time base, relative to the first frame, so
  variable-frame-rate files are stamped as they play; its duration is the container's (or ``1 / avg fps``);
* **rotation**: the display matrix (the old ``rotate`` tag is read into it by FFmpeg) is applied to the RGB image, so
  frames come out the way a player shows them;
* **damage**: a packet that fails to decode is counted and skipped (the decoder resumes at the next decodable
  packet), frames the decoder marks corrupt are counted, and a demuxer that stops early is recorded, so a caller can
  compare what decoded with what the container announces (:meth:`DecodeStatus.shortfall`).

Memory is bounded: frames are decoded one at a time and only the ones a caller keeps stay in memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

logger = logging.getLogger(__name__)

#: swscale matrix names by FFmpeg ``AVColorSpace`` value; anything else converts as BT.601 (FFmpeg's default).
_MATRIX_NAMES = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG
_JPEG_FORMATS = ("yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "yuvj411p")
#: How far short of the announced frame count / duration a file may end and still count as complete: containers
#: round their counts and the last frame's duration is often a guess.
_SHORTFALL_FRACTION = 0.02


class VideoDecodeError(RuntimeError):
    """A video file is missing, unreadable, empty or has no decodable frame; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video stream, plus what the first decoded frame showed.

    Attributes:
        path: The file.
        codec: Codec name (``h264``, ``hevc``, ...).
        width: Width of the frames as delivered (after rotation).
        height: Height of the frames as delivered (after rotation).
        rotation: Counter-clockwise rotation applied to decoded frames, in degrees (0, 90, 180 or 270).
        average_fps: The stream's ``avg_frame_rate`` (the release's fps), ``None`` if the container has none.
        frame_count: Frames the container announces (``nb_frames``), ``None`` if it does not say.
        duration_s: The stream's duration in seconds (the container's if the stream has none), or ``None``.
        matrix: The YUV->RGB matrix used (``bt709``, ``bt601``, ...).
        matrix_tagged: Whether the stream states its matrix (untagged streams convert as BT.601).
        full_range: Whether the stream is full range (``pc``/JPEG) rather than limited (``tv``).
    """

    path: Path
    codec: str
    width: int
    height: int
    rotation: int
    average_fps: float | None
    frame_count: int | None
    duration_s: float | None
    matrix: str
    matrix_tagged: bool
    full_range: bool

    @property
    def expected_frames(self) -> int | None:
        """Frames the file should hold: the announced count, else duration x average fps, else ``None``."""
        if self.frame_count is not None:
            return self.frame_count
        if self.duration_s is not None and self.average_fps is not None:
            return round(self.duration_s * self.average_fps)
        return None


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame in presentation order.

    Attributes:
        index: Position in presentation order, from 0.
        time_s: Presentation time in seconds, relative to the first frame (non-decreasing).
        duration_s: How long the frame is shown, in seconds.
        image: RGB ``uint8`` array ``[H, W, 3]`` in display orientation.
        corrupt: The decoder flagged the frame as decoded with errors (concealed damage).
    """

    index: int
    time_s: float
    duration_s: float
    image: np.ndarray
    corrupt: bool = False


@dataclass
class DecodeStatus:
    """What happened while decoding, updated as frames are produced.

    Attributes:
        frames: Frames decoded so far.
        end_time_s: Time covered so far: the last frame's ``time_s + duration_s``.
        packet_errors: Packets the decoder rejected (skipped).
        corrupt_frames: Frames the decoder delivered but flagged as damaged.
        demux_error: Why reading the container stopped early ('' if it reached its end).
        first_error: The first decode error, with the stream time it happened at ('' if none).
        repaired_timestamps: Frames without a usable PTS, or with one before the previous frame's, stamped from
            the previous frame instead.
    """

    frames: int = 0
    end_time_s: float = 0.0
    packet_errors: int = 0
    corrupt_frames: int = 0
    demux_error: str = ""
    first_error: str = ""
    repaired_timestamps: int = 0

    def shortfall(self, info: VideoInfo) -> str:
        """Why the decoded stream falls short of what the container announces ('' when it does not).

        A file is short when fewer frames decoded than announced, when the frames cover less time than the stream's
        duration (beyond 2 % or two frames of slack for rounded counts and guessed last durations), when the
        demuxer stopped on an error, or when packets failed to decode. Frames the decoder only flagged as damaged
        (concealed errors, e.g. a clip cut before its first keyframe) do not make a file short by themselves; they
        are counted in :attr:`corrupt_frames`.
        """
        problems = []
        expected = info.expected_frames
        frame_s = 1.0 / info.average_fps if info.average_fps else 0.0
        if expected is not None and self.frames < expected - max(1, round(_SHORTFALL_FRACTION * expected)):
            problems.append(f"decoded {self.frames} of the {expected} frames the container announces")
        if info.duration_s is not None:
            slack = max(2 * frame_s, _SHORTFALL_FRACTION * info.duration_s)
            if self.end_time_s < info.duration_s - slack:
                problems.append(f"the frames cover {self.end_time_s:.2f} s of the stream's {info.duration_s:.2f} s")
        if self.demux_error:
            problems.append(f"reading stopped: {self.demux_error}")
        if self.packet_errors:
            problems.append(f"{self.packet_errors} packet(s) failed to decode (first: {self.first_error})")
        if problems and self.corrupt_frames:
            problems.append(f"{self.corrupt_frames} frame(s) decoded with concealed errors")
        return "; ".join(problems)


@dataclass(frozen=True)
class FrameIndex:
    """The video packets of a file, demuxed without decoding (decord's frame index).

    Attributes:
        pts: Presentation timestamps in stream time-base units, sorted; ``None`` when some packet has none (the
            frames can then only be found by decoding in order).
        keyframes: Positions (into the sorted order) of the packets flagged as keyframes, ascending.
        count: Number of video packets: the release's frame count.
        demux_error: Why demuxing stopped before the end ('' if it did not).
    """

    pts: tuple[int, ...] | None
    keyframes: tuple[int, ...]
    count: int
    demux_error: str = ""

    def keyframe_at_or_before(self, position: int) -> int:
        """The last keyframe position <= ``position`` (0 when there is none)."""
        best = 0
        for key in self.keyframes:
            if key > position:
                break
            best = key
        return best


def _describe(exc: Exception) -> str:
    """A one-line description of an FFmpeg error (PyAV appends the last FFmpeg log line when there is one)."""
    text = getattr(exc, "strerror", None) or str(exc)
    log = getattr(exc, "log", None)
    if log and isinstance(log, tuple) and len(log) >= 3:
        text = f"{text} ({log[1]}: {str(log[2]).strip()})"
    return text


def check_video_path(path: Path) -> None:
    """Raises :class:`VideoDecodeError` for a missing path, a directory or a zero-byte file, naming the path."""
    if not path.exists():
        raise VideoDecodeError(f"video file not found: {path}")
    if not path.is_file():
        raise VideoDecodeError(f"video path is not a file: {path}")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"video file is empty (0 bytes): {path}")


class VideoReader:
    """A video file opened for decoding; one pass at a time (``frames``, ``scan`` or ``frames_at``).

    Opening decodes the first frame (it tells the rotation and the size frames come out at, and proves the file
    decodes at all); it is returned again by the first :meth:`frames` call. Use as a context manager.

    Args:
        path: The video file.
        threads: Decoder threads (0 = FFmpeg's choice from the CPU count).

    Raises:
        VideoDecodeError: If the path is missing, not a file or empty, the container cannot be opened, it has no
            video stream, or no frame of it decodes.
    """

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        self.path = Path(path)
        self._threads = threads
        check_video_path(self.path)
        self._container: Any = None
        self._stream: Any = None
        self._packets: Iterator[Any] | None = None
        self._pending: list[Any] = []
        self._at_start = True
        self.status = DecodeStatus()
        self._open_container()
        try:
            first = self._next_av_frame()
        except VideoDecodeError:
            self.close()
            raise
        if first is None:
            reason = self.status.first_error or self.status.demux_error or "the stream holds no frame"
            self.close()
            raise VideoDecodeError(f"video file has no decodable frames: {self.path} ({reason})")
        self._pending.insert(0, first)
        self._at_start = True
        self.info = self._make_info(first)
        self.status = DecodeStatus()  # the peek does not count: frames() starts again from the first frame
        logger.debug(
            "%s: %s %dx%d, rotation %d, avg %s fps, %s frames, %s s, %s%s, %s range",
            self.path,
            self.info.codec,
            self.info.width,
            self.info.height,
            self.info.rotation,
            self.info.average_fps,
            self.info.frame_count,
            self.info.duration_s,
            self.info.matrix,
            "" if self.info.matrix_tagged else " (untagged)",
            "full" if self.info.full_range else "limited",
        )

    # ------------------------------------------------------------------ opening

    def _open_container(self) -> None:
        try:
            container = av.open(str(self.path), mode="r", metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(
                f"video file could not be opened (unreadable or unsupported format): {self.path}: {_describe(exc)}"
            ) from exc
        if not container.streams.video:
            container.close()
            raise VideoDecodeError(f"video file has no video stream: {self.path}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = self._threads
        self._container, self._stream = container, stream
        self._packets = None
        self._pending = []
        self._at_start = True

    def _reopen(self) -> None:
        """Starts again from the beginning of the file (cheaper and more robust than seeking to 0)."""
        self._close_container()
        self._open_container()
        self.status = DecodeStatus()

    def _make_info(self, first: Any) -> VideoInfo:
        stream = self._stream
        rotation = int(round(first.rotation or 0)) % 360
        if rotation not in (0, 90, 180, 270):
            logger.warning("%s: display rotation %d deg is not a multiple of 90; frames are not rotated", self.path,
                           rotation)
            rotation = 0
        height, width = (first.width, first.height) if rotation in (90, 270) else (first.height, first.width)
        rate = stream.average_rate
        fps = float(rate) if rate is not None and rate > 0 else None
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / av.time_base
        frames = int(stream.frames or 0)
        colorspace = int(first.colorspace)
        return VideoInfo(
            path=self.path,
            codec=stream.codec_context.name,
            width=width,
            height=height,
            rotation=rotation,
            average_fps=fps,
            frame_count=frames if frames > 0 else None,
            duration_s=duration if duration is not None and duration > 0 else None,
            matrix=_MATRIX_NAMES.get(colorspace, "bt601"),
            matrix_tagged=colorspace in _MATRIX_NAMES,
            full_range=int(first.color_range) == _FULL_RANGE or first.format.name in _JPEG_FORMATS,
        )

    # ------------------------------------------------------------------ decoding

    def _demux(self) -> Iterator[Any]:
        """Packets of the video stream; a demuxer error ends the iteration and is recorded, not raised."""
        assert self._container is not None
        try:
            yield from self._container.demux(self._stream)
        except av.error.FFmpegError as exc:
            self.status.demux_error = _describe(exc)
            logger.debug("%s: demuxing stopped: %s", self.path, self.status.demux_error)
        # Drain the frames the decoder still holds (after an error the demuxer's own flush packet never came).
        if self.status.demux_error:
            yield None

    def _decode_packet(self, packet: Any) -> list[Any]:
        try:
            if packet is None:
                return list(self._stream.codec_context.decode(None))
            return list(packet.decode())
        except av.error.FFmpegError as exc:
            self.status.packet_errors += 1
            if not self.status.first_error:
                when = ""
                if packet is not None and packet.pts is not None and packet.time_base is not None:
                    when = f" at {float(packet.pts * packet.time_base):.2f} s"
                self.status.first_error = f"{_describe(exc)}{when}"
            logger.debug("%s: packet skipped: %s", self.path, _describe(exc))
            return []

    def _next_av_frame(self) -> Any:
        """The next decoded PyAV frame in presentation order, or ``None`` at the end."""
        while not self._pending:
            if self._packets is None:
                self._packets = self._demux()
            packet = next(self._packets, StopIteration)
            if packet is StopIteration:
                return None
            self._pending.extend(self._decode_packet(packet))
        return self._pending.pop(0)

    def _rgb(self, frame: Any) -> np.ndarray:
        """The frame as RGB ``uint8`` in display orientation, converted with the frame's matrix and range."""
        rgb = frame.to_ndarray(
            format="rgb24",
            src_colorspace=frame.colorspace if int(frame.colorspace) in _MATRIX_NAMES else None,
            src_color_range=frame.color_range,
        )
        if self.info.rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self.info.rotation // 90))
        return rgb

    def frames(self) -> Iterator[DecodedFrame]:
        """Every frame from the start, in presentation order, with container timestamps.

        Damage does not raise: skipped packets, corrupt frames and an early end are counted in :attr:`status`.
        """
        if self._container is None:
            raise VideoDecodeError(f"video file is closed: {self.path}")
        if not self._at_start:
            self._reopen()
        self._at_start = False
        origin: int | None = None
        previous = 0.0
        fallback_s = 1.0 / self.info.average_fps if self.info.average_fps else 0.0
        while True:
            frame = self._next_av_frame()
            if frame is None:
                return
            time_base: Fraction = frame.time_base or self._stream.time_base
            if frame.pts is not None and origin is None:
                origin = frame.pts
            t = float((frame.pts - origin) * time_base) if frame.pts is not None and origin is not None else math.nan
            if not math.isfinite(t) or t < previous:
                # No PTS, or one that goes back: stamp it one frame after the previous one.
                t = previous + (fallback_s if self.status.frames else 0.0)
                self.status.repaired_timestamps += 1
            duration = float(frame.duration * time_base) if frame.duration else fallback_s
            corrupt = bool(frame.is_corrupt)
            if corrupt:
                self.status.corrupt_frames += 1
            decoded = DecodedFrame(self.status.frames, t, duration, self._rgb(frame), corrupt)
            self.status.frames += 1
            self.status.end_time_s = t + duration
            previous = t
            yield decoded

    def scan(self) -> FrameIndex:
        """Demuxes the whole file without decoding and indexes its video packets (decord's frame count).

        Leaves the reader at the start of the file.
        """
        self._reopen()
        self._at_start = False
        pts: list[int] = []
        key_pts: list[int] = []
        count = 0
        missing_pts = False
        for packet in self._demux():
            if packet is None or packet.size == 0:
                continue  # the flush packet
            count += 1
            if packet.pts is None:
                missing_pts = True
            else:
                pts.append(packet.pts)
                if packet.is_keyframe:
                    key_pts.append(packet.pts)
        demux_error = self.status.demux_error
        if missing_pts:
            index = FrameIndex(None, (), count, demux_error)
        else:
            order = sorted(pts)
            position = {p: i for i, p in enumerate(order)}
            index = FrameIndex(tuple(order), tuple(sorted(position[p] for p in key_pts)), len(order), demux_error)
        self._reopen()
        return index

    def frames_at(self, positions: Sequence[int], index: FrameIndex) -> list[np.ndarray]:
        """The RGB images at the given presentation positions, decoding only what it must.

        Frames are found by PTS through ``index`` (from :meth:`scan`); the reader seeks to the keyframe before a
        wanted frame when that skips decoding, and decodes forward otherwise. Without PTS it decodes in order.

        Raises:
            VideoDecodeError: If a position is out of range or its frame cannot be decoded (packet errors before it,
                or the stream ends first); the message names the file and the frame.
        """
        wanted = sorted(set(positions))
        if wanted and (wanted[0] < 0 or wanted[-1] >= index.count):
            raise VideoDecodeError(f"{self.path}: frame positions {wanted} out of range for {index.count} frames")
        found: dict[int, np.ndarray] = {}
        self._reopen()
        self._at_start = False
        if index.pts is None:
            self._collect_in_order(wanted, found)
        else:
            self._collect_by_pts(wanted, index, found)
        missing = [p for p in wanted if p not in found]
        why = self.status.first_error or self.status.demux_error or "the stream ended first"
        if missing:
            raise VideoDecodeError(
                f"video file {self.path} is damaged: frame(s) {missing} of {index.count} could not be decoded ({why})"
            )
        if self.status.packet_errors:
            raise VideoDecodeError(
                f"video file {self.path} is damaged: a packet failed to decode on the way to the sampled frames "
                f"({why})"
            )
        return [found[p] for p in positions]

    def _collect_in_order(self, wanted: list[int], found: dict[int, np.ndarray]) -> None:
        want = set(wanted)
        position = 0
        while want - found.keys():
            frame = self._next_av_frame()
            if frame is None:
                return
            if position in want:
                found[position] = self._rgb(frame)
            position += 1

    def _collect_by_pts(self, wanted: list[int], index: FrameIndex, found: dict[int, np.ndarray]) -> None:
        assert index.pts is not None
        position_of = {p: i for i, p in enumerate(index.pts)}
        want = set(wanted)
        current = -1  # position of the last decoded frame
        restarted = False
        for target in wanted:
            if target in found:
                continue
            key = index.keyframe_at_or_before(target)
            if key > current + 1:
                # Seeking past at least one keyframe saves decoding every frame in between.
                self._container.seek(index.pts[key], stream=self._stream, backward=True, any_frame=False)
                self._packets, self._pending = None, []
                current = key - 1
            while target not in found:
                frame = self._next_av_frame()
                if frame is None:
                    return
                position = position_of.get(frame.pts) if frame.pts is not None else None
                if position is None:
                    raise VideoDecodeError(f"{self.path}: decoded a frame (pts {frame.pts}) the packet index lacks")
                if position > target and target not in found and not restarted:
                    # The seek landed after the target (imprecise container index): decode from the start instead.
                    logger.debug("%s: seek overshot frame %d (landed at %d); decoding from the start", self.path,
                                 target, position)
                    restarted = True
                    self._reopen()
                    self._collect_in_order([p for p in wanted if p not in found], found)
                    return
                current = position
                if position in want and position not in found:
                    found[position] = self._rgb(frame)

    # ------------------------------------------------------------------ closing

    def _close_container(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._stream = None
        self._packets = None
        self._pending = []

    def close(self) -> None:
        """Releases the file. Safe to call repeatedly."""
        self._close_container()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "DecodeStatus",
    "DecodedFrame",
    "FrameIndex",
    "VideoDecodeError",
    "VideoInfo",
    "VideoReader",
    "check_video_path",
]
