"""An episode video cut into the runtime's windows (the one place evaluation and training do it).

:func:`decode_episode` decodes a video with the runtime's :class:`~runtime.sources.VideoFileSource`, anchors a
:class:`~runtime.windowing.WindowScheduler` at the first frame and lists every window in order, the end of the file
included (what the engine processes with ``window.latest_wins: false``). :func:`frames_in` is the ring buffer's hand-over rule
(``t_start <= timestamp <= t_end``); :func:`episode_windows` adds the frames
:func:`~runtime.windowing.sample_window_frames` picks for each window, as ``StreamSession.step`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.config import StreamingConfig
from runtime.frames import Frame
from runtime.sources import VideoFileSource
from runtime.windowing import Window, WindowScheduler, sample_window_frames


@dataclass
class EpisodeWindows:
    """An episode's windows in processing order and their sampled frames.

    Attributes:
        episode: Episode id.
        windows: Complete windows, oldest first.
        frames: The ``frames_per_window`` sampled frames of each window.
    """

    episode: str
    windows: list[Window]
    frames: list[list[Frame]]


def decode_episode(video: str | Path, cfg: StreamingConfig) -> tuple[list[Frame], list[Window]]:
    """All frames of a video and its windows, the engine's at the end of a file included.

    The end of the file is decided as the engine decides it: every window complete at the time the file covers
    (``StreamEnd.end_time``), then the final window over the tail (:meth:`WindowScheduler.end_windows`; a tail
    shorter than ``window.min_tail_s`` gets none).

    Raises:
        runtime.sources.SourceError: If the video cannot be read.
        ValueError: If it holds no frame, or stopped decoding early (a truncated file is not an episode).
    """
    with VideoFileSource(video, paced=False) as source:
        frames = list(source)
        end = source.stream_end
    if not frames:
        raise ValueError(f"{video}: no frame decoded")
    if end is not None and end.reason == "truncated":
        raise ValueError(f"{video}: truncated ({end.message})")
    end_time = end.end_time if end is not None else frames[-1].timestamp
    w = cfg.window
    scheduler = WindowScheduler(w.window_s, w.overlap_s, latest_wins=False, min_tail_s=w.min_tail_s)
    scheduler.set_origin(frames[0].timestamp)
    return frames, scheduler.end_windows(end_time)


def frames_in(frames: Sequence[Frame], window: Window) -> list[Frame]:
    """The frames the ring buffer hands over for ``window``."""
    return [f for f in frames if window.t_start <= f.timestamp <= window.t_end]


def episode_windows(episode: str, video: str | Path, cfg: StreamingConfig) -> EpisodeWindows:
    """The episode's windows with their sampled frames (see the module docstring)."""
    frames, windows = decode_episode(video, cfg)
    n = cfg.window.frames_per_window
    return EpisodeWindows(episode, windows, [sample_window_frames(frames_in(frames, w), w, n) for w in windows])
