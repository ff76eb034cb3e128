"""Timestamp-based windowing, latest-wins scheduling and per-window frame sampling.

Windows are defined purely by stream time, never by frame counts, so variable
and dropped frame rates do not shift them:

* window ``k`` covers ``[origin + k * stride, origin + k * stride + window_s]``
  with ``stride = window_s - overlap_s`` and ``origin`` the first frame's
  timestamp;
* a window is *complete* once a frame at or after its end has been captured,
  or, at the end of a finite stream, once the stream's end time (the last
  frame's timestamp plus its duration) reaches its end;
* at the end of a finite stream the time after the last complete window gets one
  *final* window ``[max(origin, end - window_s), end]`` (off the stride grid, a
  full window when the stream is long enough), unless that tail is shorter than
  ``min_tail_s``, when it is reported as skipped (:meth:`WindowScheduler.tail_skipped`);
  a stream shorter than one window gets exactly one window ``[origin, end]``;
* frames for a window are picked by :func:`sample_window_frames` at the centres
  of ``n`` equal time bins (endpoints excluded).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.frames import Frame

logger = logging.getLogger(__name__)

# Tolerance for comparing timestamps computed by different float expressions
# (e.g. 105 / 30 against 1.5 + 2.0); far below any real frame interval.
_EPS = 1e-6


@dataclass(frozen=True)
class Window:
    """One analysis window in stream time.

    Attributes:
        index: Window number ``k`` counted from the stream origin.
        t_start: Start time in seconds (inclusive).
        t_end: End time in seconds (inclusive).
        final: The end-of-stream window (see the module docstring); it follows the last grid window.
    """

    index: int
    t_start: float
    t_end: float
    final: bool = False

    @property
    def duration(self) -> float:
        """Length of the window in seconds."""
        return self.t_end - self.t_start


@dataclass
class SchedulerResult:
    """What :meth:`WindowScheduler.poll` decided.

    Attributes:
        window: The window to process now, or ``None`` if none is complete.
        skipped: Complete windows that will never be processed (latest-wins).
    """

    window: Window | None
    skipped: list[Window] = field(default_factory=list)


class WindowScheduler:
    """Emits complete windows with a LATEST-WINS policy.

    When the inference worker polls after several windows have completed, only
    the newest is returned and the older ones are reported as skipped, so the
    processing lag is bounded by one stride plus one inference time rather than
    growing with the backlog. With ``latest_wins=False`` every window is
    returned in order (offline evaluation, where completeness beats latency).

    Args:
        window_s: Window length in seconds; must be > 0.
        overlap_s: Overlap of consecutive windows; must be in ``[0, window_s)``.
        latest_wins: Skip stale windows (``True``) or process all in order.
        min_tail_s: At the end of a finite stream, a tail after the last complete window shorter than this is
            reported skipped (``short_tail``) instead of getting a final window; in ``[0, window_s)``.

    Raises:
        ValueError: If ``window_s``, ``overlap_s`` or ``min_tail_s`` is out of range.
    """

    def __init__(
        self, window_s: float = 2.0, overlap_s: float = 0.5, latest_wins: bool = True, min_tail_s: float = 0.25
    ) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s = {window_s}: must be a finite number > 0")
        if not (math.isfinite(overlap_s) and 0 <= overlap_s < window_s):
            raise ValueError(f"overlap_s = {overlap_s}: must be >= 0 and < window_s ({window_s})")
        if not (math.isfinite(min_tail_s) and 0 <= min_tail_s < window_s):
            raise ValueError(f"min_tail_s = {min_tail_s}: must be >= 0 and < window_s ({window_s})")
        self.window_s = float(window_s)
        self.overlap_s = float(overlap_s)
        self.stride_s = self.window_s - self.overlap_s
        self.latest_wins = latest_wins
        self.min_tail_s = float(min_tail_s)
        self.origin: float | None = None
        self.next_index = 0
        self.emitted_total = 0
        self.skipped_total = 0

    def set_origin(self, t0: float) -> None:
        """Anchor window 0 at ``t0`` (the first frame's timestamp) and reset counters."""
        self.origin = float(t0)
        self.next_index = 0
        self.emitted_total = 0
        self.skipped_total = 0

    def window(self, index: int) -> Window:
        """Return window ``index`` (requires the origin to be set)."""
        origin = self._require_origin()
        t_start = origin + index * self.stride_s
        return Window(index, t_start, t_start + self.window_s)

    def last_complete_index(self, latest_ts: float) -> int:
        """Index of the newest window whose end is ``<= latest_ts`` (-1 if none)."""
        origin = self._require_origin()
        elapsed = latest_ts - origin - self.window_s
        if elapsed < -_EPS:
            return -1
        return int(math.floor((elapsed + _EPS) / self.stride_s))

    def ready_windows(self, latest_ts: float) -> list[Window]:
        """Return every complete window not yet emitted or skipped, oldest first.

        Does not change the scheduler's state.
        """
        last = self.last_complete_index(latest_ts)
        return [self.window(k) for k in range(self.next_index, last + 1)]

    def final_window(self, end_time: float) -> Window | None:
        """The end-of-stream window of a stream that covers ``[origin, end_time]``, if it gets one.

        ``[max(origin, end_time - window_s), end_time]`` with the index after the last window complete at
        ``end_time``, when the time after that window is at least ``min_tail_s``, or always when no window is
        complete (a stream shorter than one window). ``None`` when the last complete window already ends at
        ``end_time`` or the tail is shorter than ``min_tail_s`` (see :meth:`tail_skipped`).
        """
        origin = self._require_origin()
        last = self.last_complete_index(end_time)
        if last < 0:
            return Window(0, origin, end_time, final=True) if end_time > origin + _EPS else None
        tail = end_time - self.window(last).t_end
        if tail < self.min_tail_s - _EPS or tail <= _EPS:
            return None
        return Window(last + 1, max(origin, end_time - self.window_s), end_time, final=True)

    def end_windows(self, end_time: float) -> list[Window]:
        """Every window not yet emitted of a stream that ended at ``end_time``: complete ones, then the final one."""
        windows = self.ready_windows(end_time)
        final = self.final_window(end_time)
        if final is not None and final.index >= self.next_index:
            windows.append(final)
        return windows

    def tail_skipped(self, end_time: float) -> tuple[Window, float] | None:
        """The tail shorter than ``min_tail_s`` after the last window of an ended stream, once.

        Returns:
            The tail's window (the next grid window, never decided) and the tail's length in seconds, or ``None``
            when there is no such tail or it was already taken. Taking it advances :attr:`next_index` past it.
        """
        last = self.last_complete_index(end_time)
        if last < 0 or self.next_index > last + 1 or self.final_window(end_time) is not None:
            return None
        tail = end_time - self.window(last).t_end
        if tail <= _EPS:
            return None
        self.next_index = last + 2
        return self.window(last + 1), tail

    def take_unprocessed(self, latest_ts: float) -> list[Window]:
        """Windows that will now never be processed (the run stops or the source failed), oldest first.

        Every complete window not yet emitted, then the first incomplete one when the stream has passed the end
        of the last complete window (its frames exist but it never completed). Advances :attr:`next_index` past
        them, so each is taken once.
        """
        last = self.last_complete_index(latest_ts)
        taken = [self.window(k) for k in range(self.next_index, last + 1)]
        started = last < 0 or latest_ts > self.window(last).t_end + _EPS
        if started and self.next_index <= last + 1:
            taken.append(self.window(last + 1))
        self.next_index = max(self.next_index, last + 2 if started else last + 1)
        return taken

    def poll(self, latest_ts: float, end_time: float | None = None) -> SchedulerResult:
        """Take the next window to process given the newest captured timestamp.

        With latest-wins, all pending complete windows except the newest are
        counted in :attr:`skipped_total` and returned in ``SchedulerResult.skipped``
        so the caller can publish ``WindowSkipped`` events.

        Args:
            latest_ts: Timestamp of the newest frame in the buffer.
            end_time: Once a finite stream has ended: the time it covers up to (``StreamEnd.end_time``); windows
                complete by then and the final window (:meth:`final_window`) are ready.

        Returns:
            The window to process (or ``None``) and the windows skipped now.

        Raises:
            RuntimeError: If :meth:`set_origin` has not been called.
        """
        ready = self.ready_windows(latest_ts) if end_time is None else self.end_windows(max(end_time, latest_ts))
        if not ready:
            return SchedulerResult(None)
        if self.latest_wins:
            chosen, stale = ready[-1], ready[:-1]
        else:
            chosen, stale = ready[0], []
        if stale:
            self.skipped_total += len(stale)
            logger.debug(
                "skipping %d stale window(s) %s; processing %d", len(stale), [w.index for w in stale], chosen.index
            )
        self.next_index = chosen.index + 1
        self.emitted_total += 1
        return SchedulerResult(chosen, stale)

    def _require_origin(self) -> float:
        if self.origin is None:
            raise RuntimeError("WindowScheduler origin is not set; call set_origin(first_frame.timestamp) first")
        return self.origin


def sample_times(window: Window, n: int) -> np.ndarray:
    """Target sample times for a window: the centres of ``n`` equal bins.

    ``t_start + (i + 0.5) * duration / n`` for ``i = 0 .. n-1``; the window's
    endpoints themselves are never targets. With the default 2.0 s window,
    0.5 s overlap and 16 samples, the bin width (0.125 s) divides the stride
    (1.5 s), so consecutive windows share their 4 overlapping target times and
    therefore the same frames, which the feature cache reuses.
    """
    if n < 1:
        raise ValueError(f"n = {n}: must be >= 1")
    step = window.duration / n
    return window.t_start + (np.arange(n, dtype=np.float64) + 0.5) * step


def sample_window_frames(frames: Sequence[Frame], window: Window, n: int = 16) -> list[Frame]:
    """Pick ``n`` frames spread uniformly in time over a window.

    For each target time from :func:`sample_times` the frame with the nearest
    timestamp is chosen (ties go to the earlier frame). This is robust to
    jittery and dropped frames; when fewer than ``n`` distinct frames are
    available, some frames are repeated so the model always gets ``n``.

    Args:
        frames: Candidate frames, normally those inside the window (any order).
        window: The window to sample.
        n: Number of frames to return.

    Returns:
        ``n`` frames in time order.

    Raises:
        ValueError: If ``frames`` is empty or ``n`` < 1.
    """
    if not frames:
        raise ValueError(
            f"window {window.index} [{window.t_start:.3f}, {window.t_end:.3f}] has no frames to sample "
            "(buffer overwritten or capture stalled)"
        )
    targets = sample_times(window, n)
    ordered = sorted(frames, key=lambda f: f.timestamp)
    stamps = np.fromiter((f.timestamp for f in ordered), dtype=np.float64, count=len(ordered))
    right = np.clip(np.searchsorted(stamps, targets, side="left"), 0, len(ordered) - 1)
    left = np.clip(right - 1, 0, len(ordered) - 1)
    # Prefer the earlier neighbour on an exact tie.
    take_left = np.abs(targets - stamps[left]) <= np.abs(stamps[right] - targets)
    chosen = np.where(take_left, left, right)
    return [ordered[int(i)] for i in chosen]
