"""WindowScheduler (timestamp windows, latest-wins) and sample_window_frames."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.windowing import Window, WindowScheduler, sample_times, sample_window_frames
from tests.runtime.helpers import frames_at


def test_windows_at_steady_30fps_have_correct_overlap() -> None:
    sched = WindowScheduler(2.0, 0.5, latest_wins=False)
    sched.set_origin(0.0)
    windows = []
    for i in range(0, 30 * 8 + 1):  # 8 s of frames, polled at every frame
        result = sched.poll(i / 30.0)
        if result.window is not None:
            windows.append(result.window)
    # Ends at 2.0, 3.5, 5.0, 6.5 and 8.0: the last frame (t = 8.0) completes window 4.
    assert [w.index for w in windows] == [0, 1, 2, 3, 4]
    assert [w.t_start for w in windows] == pytest.approx([0.0, 1.5, 3.0, 4.5, 6.0])
    assert [w.t_end for w in windows] == pytest.approx([2.0, 3.5, 5.0, 6.5, 8.0])
    for a, b in zip(windows[:-1], windows[1:], strict=True):
        assert a.t_end - b.t_start == pytest.approx(0.5)
    # Window 0 becomes ready exactly at frame 60 (t = 2.0), not earlier.
    sched2 = WindowScheduler(2.0, 0.5)
    sched2.set_origin(0.0)
    assert sched2.poll(59 / 30.0).window is None
    assert sched2.poll(60 / 30.0).window == Window(0, 0.0, 2.0)


def test_windows_are_aligned_to_stream_origin_not_zero() -> None:
    sched = WindowScheduler(2.0, 0.5)
    sched.set_origin(1000.25)
    assert sched.poll(1002.2).window is None
    w = sched.poll(1002.25).window
    assert w is not None and (w.t_start, w.t_end) == pytest.approx((1000.25, 1002.25))


def test_irregular_and_dropped_timestamps_do_not_shift_windows() -> None:
    rng = np.random.default_rng(1)
    # ~30 fps with jitter and a 0.7 s drop-out between 3.1 s and 3.8 s.
    stamps = np.cumsum(rng.uniform(0.02, 0.05, size=300))
    stamps = stamps[(stamps < 3.1) | (stamps > 3.8)]
    sched = WindowScheduler(2.0, 0.5, latest_wins=False)
    sched.set_origin(float(stamps[0]))
    got = [w for ts in stamps if (w := sched.poll(float(ts)).window) is not None]
    t0 = float(stamps[0])
    for w in got:
        assert w.t_start == pytest.approx(t0 + 1.5 * w.index)
        assert w.duration == pytest.approx(2.0)
    assert [w.index for w in got] == list(range(len(got)))
    # Each window is only emitted once a frame at or past its end exists.
    for w in got:
        assert stamps[stamps >= w.t_end - 1e-6].size > 0


def test_latest_wins_returns_newest_and_counts_skips() -> None:
    sched = WindowScheduler(2.0, 0.5)
    sched.set_origin(0.0)
    # Worker was busy until t = 8.0: windows 0..4 (ends 2, 3.5, 5, 6.5, 8) are complete.
    result = sched.poll(8.0)
    assert result.window is not None and result.window.index == 4
    assert [w.index for w in result.skipped] == [0, 1, 2, 3]
    assert sched.skipped_total == 4
    # Nothing new until window 5 ends at 9.5.
    assert sched.poll(9.0).window is None
    result = sched.poll(9.5)
    assert result.window is not None and result.window.index == 5 and result.skipped == []
    assert sched.skipped_total == 4
    assert sched.emitted_total == 2


def test_latest_wins_lag_stays_bounded_under_slow_worker() -> None:
    sched = WindowScheduler(2.0, 0.5)
    sched.set_origin(0.0)
    t = 2.0
    lags = []
    for _ in range(50):
        result = sched.poll(t)
        assert result.window is not None
        lags.append(t - result.window.t_end)
        t += 4.0  # inference takes 4 s per window: far slower than the 1.5 s stride
    assert max(lags) < sched.stride_s
    assert sched.skipped_total > 0
    assert sched.emitted_total + sched.skipped_total == sched.last_complete_index(t - 4.0) + 1


def test_in_order_mode_skips_nothing() -> None:
    sched = WindowScheduler(2.0, 0.5, latest_wins=False)
    sched.set_origin(0.0)
    assert [sched.poll(8.0).window.index for _ in range(5)] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    assert sched.poll(8.0).window is None
    assert sched.skipped_total == 0


def test_scheduler_validation_and_origin_required() -> None:
    with pytest.raises(ValueError, match="overlap_s = 2.0"):
        WindowScheduler(2.0, 2.0)
    with pytest.raises(ValueError, match="window_s = 0"):
        WindowScheduler(0, 0)
    with pytest.raises(RuntimeError, match="set_origin"):
        WindowScheduler().poll(1.0)


def test_sample_times_are_bin_centres() -> None:
    times = sample_times(Window(0, 0.0, 2.0), 16)
    assert times[0] == pytest.approx(0.0625) and times[-1] == pytest.approx(1.9375)
    assert np.diff(times) == pytest.approx(np.full(15, 0.125))


def test_sampling_picks_16_nearest_frames_at_30fps() -> None:
    frames = frames_at(i / 30.0 for i in range(61))
    picked = sample_window_frames(frames, Window(0, 0.0, 2.0), 16)
    assert len(picked) == 16
    expected = [int(round(t * 30.0)) for t in sample_times(Window(0, 0.0, 2.0), 16)]
    assert [f.index for f in picked] == expected
    assert [f.index for f in picked] == sorted(f.index for f in picked)


def test_overlapping_windows_share_sampled_frames() -> None:
    frames = frames_at(i / 30.0 for i in range(200))
    w0 = sample_window_frames([f for f in frames if 0.0 <= f.timestamp <= 2.0], Window(0, 0.0, 2.0))
    w1 = sample_window_frames([f for f in frames if 1.5 <= f.timestamp <= 3.5], Window(1, 1.5, 3.5))
    shared = {f.index for f in w0} & {f.index for f in w1}
    assert len(shared) == 4  # the 0.5 s overlap holds 4 of the 16 bins


def test_sampling_with_dropped_and_jittered_frames_uses_nearest() -> None:
    stamps = [0.0, 0.11, 0.5, 0.52, 1.9]  # big gaps
    picked = sample_window_frames(frames_at(stamps), Window(0, 0.0, 2.0), 16)
    assert len(picked) == 16
    for frame, target in zip(picked, sample_times(Window(0, 0.0, 2.0), 16), strict=True):
        best = min(abs(s - target) for s in stamps)
        assert abs(frame.timestamp - target) == pytest.approx(best)
    # Fewer frames than samples: nearest frames repeat; 0.0 is never nearest to a bin centre.
    assert [f.index for f in picked] == [1, 1, 2, 2] + [3] * 6 + [4] * 6


def test_sampling_single_frame_repeats_and_unsorted_input() -> None:
    picked = sample_window_frames(frames_at([0.7]), Window(0, 0.0, 2.0), 16)
    assert len(picked) == 16 and {f.index for f in picked} == {0}
    shuffled = list(reversed(frames_at(i / 10.0 for i in range(21))))
    picked = sample_window_frames(shuffled, Window(0, 0.0, 2.0), 4)
    assert [f.timestamp for f in picked] == pytest.approx([0.2, 0.7, 1.2, 1.7])


def test_sampling_tie_goes_to_earlier_frame() -> None:
    # Target for n=1 over [0, 2] is 1.0; frames at 0.5 and 1.5 are equally near.
    picked = sample_window_frames(frames_at([0.5, 1.5]), Window(0, 0.0, 2.0), 1)
    assert [f.index for f in picked] == [0]


def test_sampling_without_frames_is_an_error() -> None:
    with pytest.raises(ValueError, match="window 3 .* has no frames"):
        sample_window_frames([], Window(3, 4.5, 6.5))
    with pytest.raises(ValueError, match="n = 0"):
        sample_window_frames(frames_at([0.1]), Window(0, 0.0, 2.0), 0)


def _ended(end_time: float, **kwargs: float) -> list[Window]:
    sched = WindowScheduler(2.0, 0.5, latest_wins=False, **kwargs)
    sched.set_origin(0.0)
    return sched.end_windows(end_time)


def test_an_ended_stream_counts_its_last_frame_duration() -> None:
    """A 5.00 s file (last frame stamped 4.967 s) completes window [3, 5]: the end time, not the last stamp, decides."""
    assert [(w.index, w.t_start, w.t_end, w.final) for w in _ended(5.0)] == [
        (0, 0.0, 2.0, False), (1, 1.5, 3.5, False), (2, 3.0, 5.0, False)]


def test_an_ended_stream_gets_a_full_length_final_window_over_its_tail() -> None:
    """4.8 s: after [1.5, 3.5] the final window is [2.8, 4.8]: window_s long, ending at the end, off the grid."""
    final = _ended(4.8)[-1]
    assert (final.index, final.final) == (2, True) and (final.t_start, final.t_end) == pytest.approx((2.8, 4.8))


def test_a_stream_shorter_than_one_window_gets_one_window_over_what_exists() -> None:
    assert _ended(1.2) == [Window(0, 0.0, 1.2, final=True)]


def test_a_tail_shorter_than_min_tail_is_taken_once_as_skipped() -> None:
    """3.6 s with min_tail_s 0.25: no final window; ``tail_skipped`` names window 2 and the 0.1 s, once."""
    sched = WindowScheduler(2.0, 0.5, latest_wins=False, min_tail_s=0.25)
    sched.set_origin(0.0)
    assert [w.index for w in sched.end_windows(3.6)] == [0, 1]
    sched.poll(3.6 - 1 / 30, end_time=3.6)
    sched.poll(3.6 - 1 / 30, end_time=3.6)
    window, tail = sched.tail_skipped(3.6)  # type: ignore[misc]
    assert window.index == 2 and tail == pytest.approx(0.1)
    assert sched.tail_skipped(3.6) is None and sched.poll(3.6, end_time=3.6).window is None
    assert [w.index for w in _ended(3.6, min_tail_s=0.0)] == [0, 1, 2]  # 0 disables the threshold


def test_latest_wins_at_the_end_takes_the_final_window_and_skips_the_rest() -> None:
    sched = WindowScheduler(2.0, 0.5, latest_wins=True)
    sched.set_origin(0.0)
    result = sched.poll(8.9, end_time=9.0)
    assert result.window is not None and result.window.final and result.window.index == 5
    assert [w.index for w in result.skipped] == [0, 1, 2, 3, 4]
    assert sched.poll(8.9, end_time=9.0).window is None


def test_take_unprocessed_returns_complete_windows_and_the_one_cut_short() -> None:
    """At 3.6 s windows 0 and 1 are complete, window 2 has frames but never completed; each is taken once."""
    sched = WindowScheduler(2.0, 0.5, latest_wins=False)
    sched.set_origin(0.0)
    assert sched.poll(3.6).window == Window(0, 0.0, 2.0)
    assert [w.index for w in sched.take_unprocessed(3.6)] == [1, 2]
    assert sched.take_unprocessed(3.6) == []
    fresh = WindowScheduler(2.0, 0.5, latest_wins=False)
    fresh.set_origin(0.0)
    assert [w.index for w in fresh.take_unprocessed(3.5)] == [0, 1]  # 3.5 s is exactly window 1's end
