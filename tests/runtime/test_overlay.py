"""The overlay state folded from events, the frame it draws (live window and annotated video), and the window check.

``pytest tests/runtime/test_overlay.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime import webcam
from runtime.events import FeedbackFinished, FeedbackSpoken, FeedbackStarted, FeedbackToken, WindowDecided
from runtime.overlay import OverlayState, OverlayView, draw_overlay, scale_to_height
from runtime.render.canvas import ACTION_COLOURS, WARN_COLOUR

FRAME = np.full((240, 320, 3), 128, dtype=np.uint8)


def test_a_decision_sets_action_confidence_probabilities_and_window() -> None:
    """The model policy's probabilities are the softmax of the action logits; times are relative to the origin."""
    state = OverlayState(policy="model", origin=lambda: 100.0)
    event = WindowDecided(3, 104.5, 106.5, "<feedback>", 0.58, "<feedback>", latency_ms={"total": 812.0},
                          action_logits=[0.0, 1.0, 0.0])
    state.apply(event, 7.0)
    view = state.view(7.2)
    assert (view.action, view.confidence, view.window, view.latency_ms) == ("<feedback>", 0.58, (4.5, 6.5), 812.0)
    assert view.probs == pytest.approx((0.2119, 0.5761, 0.2119), abs=1e-4)
    assert view.history == ((4.5, 6.5, "<feedback>"),)


def test_feedback_streams_then_stays_for_caption_s_then_goes() -> None:
    """Tokens accumulate while streaming; the finished text stays ``caption_s`` seconds after it finished."""
    state = OverlayState(caption_s=6.0)
    state.apply(FeedbackStarted(3, 6.5), 7.0)
    state.apply(FeedbackToken(3, "Knees", 0), 7.0)
    state.apply(FeedbackToken(3, " out", 1), 7.1)
    assert (state.view(7.1).feedback, state.view(7.1).feedback_state) == ("Knees out", "streaming")
    state.apply(FeedbackFinished(3, "Knees out!", 3, 40.0, 20.0), 7.2)
    assert (state.view(13.1).feedback, state.view(13.1).feedback_state) == ("Knees out!", "done")
    assert (state.view(13.3).feedback, state.view(13.3).feedback_state) == ("", "")


def test_a_suppressed_repeat_is_shown_as_not_spoken() -> None:
    state = OverlayState()
    state.apply(FeedbackFinished(3, "Knees out", 2, 40.0, 20.0, suppressed=True), 7.0)
    assert state.view(7.5).feedback_state == "repeat"


def test_speaking_lasts_from_the_audio_start_for_the_audio_length() -> None:
    state = OverlayState()
    state.apply(FeedbackSpoken(3, "Knees out", "spoken", audio_start_ms=20.0, audio_start_t=7.3, audio_s=1.5), 7.4)
    assert [state.view(t).speaking for t in (7.2, 7.5, 8.7, 8.9)] == [False, True, True, False]


def test_frames_are_scaled_to_the_output_height_with_an_even_width() -> None:
    assert scale_to_height(FRAME, 720).shape == (720, 960, 3)
    assert scale_to_height(np.zeros((1080, 1921, 3), np.uint8), 720).shape == (720, 1280, 3)


def test_draw_overlay_draws_the_action_badge_in_its_colour() -> None:
    """The badge of a ``<feedback>`` decision is filled with the feedback colour (BGR out)."""
    drawn = draw_overlay(FRAME, OverlayView(now_t=7.0, action="<feedback>", confidence=0.82), 720)
    assert drawn.shape == (720, 960, 3)
    colour_bgr = np.array(ACTION_COLOURS["<feedback>"][::-1])
    band = drawn[:80]
    assert (np.abs(band.astype(int) - colour_bgr).sum(axis=-1) < 10).sum() > 2000


def test_random_weights_are_labelled_in_red_and_only_then() -> None:
    red_bgr = np.array(WARN_COLOUR[::-1])

    def red_pixels(image: np.ndarray) -> int:
        return int((np.abs(image[80:120].astype(int) - red_bgr).sum(axis=-1) < 10).sum())

    assert red_pixels(draw_overlay(FRAME, OverlayView(now_t=1.0, random_weights=True))) > 5000
    assert red_pixels(draw_overlay(FRAME, OverlayView(now_t=1.0, random_weights=False))) == 0


def test_the_caption_is_drawn_only_while_there_is_feedback() -> None:
    """The caption band darkens the lower frame; without feedback the frame there is untouched."""
    plain = draw_overlay(FRAME, OverlayView(now_t=1.0))
    with_text = draw_overlay(FRAME, OverlayView(now_t=1.0, feedback="Keep your knees out", feedback_state="done"))
    rows = slice(600, 690)
    assert np.all(plain[rows] == 128)
    assert with_text[rows].mean() < 100


def test_a_headless_opencv_build_says_how_to_get_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webcam.cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    problem = webcam.display_problem()
    assert problem.startswith("no window: this OpenCV build has no GUI support")
    assert 'pip uninstall -y opencv-python-headless && pip install "opencv-python>=4.9"' in problem
    assert "--headless" in problem and "--jsonl" in problem and "--out DIR" in problem


def test_a_gui_build_without_a_display_is_not_asked_to_open_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Linux without DISPLAY/WAYLAND_DISPLAY no window is attempted (Qt would abort the process)."""
    monkeypatch.setattr(webcam.cv2, "getBuildInformation", lambda: "  GUI:                           QT5\n")
    monkeypatch.setattr(webcam.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert webcam.display_problem().startswith("no window: no display to open a window on")


def test_an_unreachable_display_is_found_by_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe runs in a child process; here one that fails the way a Qt abort does."""
    monkeypatch.setattr(webcam.cv2, "getBuildInformation", lambda: "  GUI:                           QT5\n")
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(webcam.sys, "executable", "/bin/false")
    assert webcam.display_problem().startswith("no window: OpenCV (QT5) cannot open a window here")
