"""The run recorder's display times, the timeline picture and the annotated video (``runtime.render``).

``pytest tests/runtime/test_render.py``. Built from hand-made event stamps and frames: no model runs here (the demo
test runs the whole path).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from runtime.events import ContextCleared, FeedbackFinished, FeedbackSpoken, FeedbackStarted, FeedbackToken
from runtime.events import WindowDecided, WindowSkipped
from runtime.frames import Frame
from runtime.render.annotated_video import TAIL_S, write_annotated_video
from runtime.render.canvas import ACTION_COLOURS, WARN_COLOUR, RenderError
from runtime.render.record import RunInfo, Stamped, build_record
from runtime.render.timeline import render_timeline

REPO = Path(__file__).resolve().parents[2]
LAT = {"preprocess": 40.0, "image_encoder": 150.0, "video_encoder": 500.0, "decoder_append": 250.0, "total": 940.0}


def info(paced: bool = True, random_weights: bool = True, policy: str = "every_n") -> RunInfo:
    return RunInfo("clip.mp4", "onnxruntime/fp32/cpu", policy, random_weights, 2.0, 1.5, paced)


def stamps() -> list[Stamped]:
    """Window 0 <next>; window 1 <feedback> decided 1.0 s (wall) after its end, text 0.4 s later, spoken; 2 skipped."""
    return [
        Stamped(WindowDecided(0, 10.0, 12.0, "<next>", 0.7, "<next>", latency_ms=LAT), 2.6, 100.0),
        Stamped(WindowDecided(1, 11.5, 13.5, "<feedback>", 0.8, "<feedback>", latency_ms=LAT,
                              action_logits=[0.0, 1.0, 0.0]), 4.5, 102.0),
        Stamped(FeedbackStarted(1, 13.5), 4.5, 102.0),
        Stamped(FeedbackToken(1, "Knees", 0), 4.7, 102.2),
        Stamped(FeedbackFinished(1, "Knees out", 2, 200.0, 10.0), 4.9, 102.4),
        Stamped(ContextCleared("feedback", 1), 4.9, 102.4),
        Stamped(FeedbackSpoken(1, "Knees out", "spoken", audio_start_ms=30.0, audio_start_t=4.93, audio_s=1.2),
                5.0, 102.5),
        Stamped(WindowSkipped(2, "behind"), 5.2, 102.6),
    ]


def test_live_timing_shows_events_when_they_were_published() -> None:
    """Paced runs: each event at the stream time it arrived; window times relative to the first frame."""
    rec = build_record(info(paced=True), stamps(), origin=10.0, end_t=6.0)
    assert rec.timing == "live"
    assert [(w.index, w.t_start, w.t_end, w.shown_t) for w in rec.windows] == [(0, 0.0, 2.0, 2.6), (1, 1.5, 3.5, 4.5)]
    (fb,) = rec.feedbacks
    assert (fb.start_t, fb.end_t, fb.text, fb.number) == (4.5, 4.9, "Knees out", 1)
    assert rec.speech[0].start_t == 4.93 and rec.skips == [(2, "behind", 5.0)]
    assert rec.windows[1].feedback_ms == pytest.approx(400.0)
    assert [t for t, _ in rec.schedule] == sorted(t for t, _ in rec.schedule)


def test_window_end_timing_anchors_each_decision_at_its_window_end() -> None:
    """Unpaced runs: the decision at the window's end, what follows offset by the wall time it took."""
    rec = build_record(info(paced=False), stamps(), origin=10.0, end_t=6.0)
    assert rec.timing == "window_end"
    assert [w.shown_t for w in rec.windows] == [2.0, 3.5]
    (fb,) = rec.feedbacks
    assert fb.start_t == pytest.approx(3.5) and fb.end_t == pytest.approx(3.9)
    assert rec.speech[0].start_t == pytest.approx(3.93)


def test_the_timeline_is_written_with_the_random_weights_banner(tmp_path: Path) -> None:
    red = np.array(WARN_COLOUR)

    def red_pixels(path: Path) -> int:
        pixels = np.asarray(Image.open(path).convert("RGB"))[70:120].astype(int)
        return int((np.abs(pixels - red).sum(axis=-1) < 10).sum())

    for random_weights in (True, False):
        rec = build_record(info(random_weights=random_weights, policy="model"), stamps(), 10.0, 6.0)
        path = render_timeline(rec, tmp_path / f"timeline_{random_weights}.png")
        assert Image.open(path).size[0] == 1400
        assert (red_pixels(path) > 5000) is random_weights


def test_an_unwritable_timeline_path_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    rec = build_record(info(), stamps(), 10.0, 6.0)
    with pytest.raises(RenderError, match="cannot write the timeline .*file/timeline.png"):
        render_timeline(rec, tmp_path / "file" / "timeline.png")


def solid_frames(timestamps: list[float], size: tuple[int, int] = (60, 80)) -> list[Frame]:
    """Frame ``i`` is filled with grey level ``20 * (i + 1)`` (to tell which one a video frame shows)."""
    return [Frame(i, t, np.full((*size, 3), 20 * (i + 1), np.uint8)) for i, t in enumerate(timestamps)]


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_the_video_follows_container_timestamps_and_holds_the_last_frame(tmp_path: Path) -> None:
    """Variable frame rate in, constant out: output frame k shows the newest source frame at or before k / fps;
    after the source ends the last frame is held until the last event plus the tail."""
    source = solid_frames([10.0, 10.1, 10.5, 11.0])  # gaps of 0.1, 0.4, 0.5 s
    rec = build_record(info(), stamps(), origin=10.0, end_t=1.0)
    written = write_annotated_video(rec, source, tmp_path / "a.mp4", fps=10.0, height=240)
    last_event = max(t for t, _ in rec.schedule)
    assert written.frames == int((last_event + TAIL_S) * 10 + 1e-9) + 1 and written.size == (320, 240)
    frames = read_video(tmp_path / "a.mp4")
    assert len(frames) == written.frames
    centre = [int(f[150, 160].mean()) for f in frames]  # below the top band, above the caption
    expected = [20, 40, 40, 40, 40, 60, 60, 60, 60, 60] + [80] * (written.frames - 10)
    assert np.abs(np.array(centre) - np.array(expected)).max() <= 6  # mp4v is lossy


def test_the_overlay_appears_when_the_decision_was_shown(tmp_path: Path) -> None:
    """Before window 0's decision (shown at 2.6 s) the band says waiting; after it the <next> badge is drawn."""
    source = [Frame(i, 10.0 + i / 10, np.full((60, 80, 3), 200, np.uint8)) for i in range(60)]
    rec = build_record(info(), stamps()[:1], origin=10.0, end_t=6.0)
    write_annotated_video(rec, source, tmp_path / "b.mp4", fps=10.0, height=240)
    frames = read_video(tmp_path / "b.mp4")
    badge = np.array(ACTION_COLOURS["<next>"][::-1])  # BGR

    def badge_pixels(f: np.ndarray) -> int:
        return int((np.abs(f[:30].astype(int) - badge).sum(axis=-1) < 12).sum())

    assert badge_pixels(frames[25]) == 0 and badge_pixels(frames[27]) > 200


def test_a_source_without_frames_is_an_error(tmp_path: Path) -> None:
    rec = build_record(info(), stamps(), 10.0, 6.0)
    with pytest.raises(RenderError, match="the replayed source yielded no frame"):
        write_annotated_video(rec, [], tmp_path / "c.mp4", fps=10.0)


def test_rendering_imports_neither_torch_nor_matplotlib() -> None:
    """The renderers are part of the lean runtime (numpy, OpenCV, Pillow)."""
    code = ("import sys, runtime.outputs, runtime.render.timeline, runtime.render.annotated_video; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_stream_clock_runs_on_in_wall_time_after_the_source_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows decided after a file's last frame are stamped later than it, as a live viewer sees them."""
    from runtime import outputs
    from runtime.ring_buffer import FrameRingBuffer

    buffer = FrameRingBuffer(8)
    clock = outputs.StreamClock(buffer)
    assert clock.elapsed() is None
    for i in range(4):
        buffer.push(Frame(i, 5.0 + i * 0.5, np.zeros((2, 2, 3), np.uint8)))
    assert clock.elapsed() == 1.5 and clock.origin() == 5.0
    now = [100.0]
    monkeypatch.setattr(outputs.time, "monotonic", lambda: now[0])
    buffer.close()
    assert clock.elapsed() == 1.5
    now[0] = 102.25
    assert clock.elapsed() == 3.75
