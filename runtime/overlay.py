"""What a person watching sees over the video: the overlay state folded from events, and drawing it on a frame.

One :class:`OverlayState` and one :func:`draw_overlay` serve both the live window (``python -m runtime.webcam``) and
the annotated video (:mod:`runtime.render.annotated_video`, which folds the recorded events at each frame's time).

The frame is scaled to ``output.video_height`` (720 px by default: text stays legible on 320x240 sources) and shows:

* a top band: stream time, the action as a coloured badge with its confidence, why the gate changed it, the action
  probabilities (``model`` policy) or the rule that decided, the window, its processing latency;
* a red line saying RANDOM WEIGHTS when the checkpoint is synthetic;
* a caption with the coach's feedback while it streams and for ``caption_s`` after, marked while it is spoken;
* a strip along the bottom with every decided window so far, coloured by action, and the playhead.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

from engine_format.vocab import ACTION_TOKENS, FEEDBACK
from runtime.events import Event, FeedbackFinished, FeedbackSpoken, FeedbackStarted, FeedbackToken, WindowDecided
from runtime.events import WindowSkipped
from runtime.render.canvas import (
    ACTION_COLOURS,
    MUTED,
    SPEECH_COLOUR,
    TEXT,
    WARN_COLOUR,
    darken,
    fit,
    font,
    softmax,
    text_width,
    wrap,
)

#: Seconds a finished feedback stays on screen.
CAPTION_S = 6.0
#: Seconds of history the live view's strip shows.
LIVE_STRIP_S = 30.0


@dataclass(frozen=True)
class OverlayView:
    """One frame's overlay content (times in stream seconds since the first frame)."""

    now_t: float
    action: str = "-"
    confidence: float = 0.0
    raw_action: str = "-"
    gate_reason: str | None = None
    probs: tuple[float, ...] | None = None
    window: tuple[float, float] | None = None
    latency_ms: float = 0.0
    policy: str = ""
    feedback: str = ""
    feedback_state: str = ""  # "" (none shown) | "streaming" | "done" | "repeat"
    speaking: bool = False
    skipped: int = 0
    random_weights: bool = False
    backend: str = ""
    fps: float | None = None
    history: tuple[tuple[float, float, str], ...] = ()
    span: tuple[float, float] = (0.0, LIVE_STRIP_S)
    after_end: bool = False  # the stream has ended; the frame is held while the model's last output arrives


class OverlayState:
    """The overlay's state, folded from events; thread-safe (events arrive on the inference and speaker threads).

    Args:
        random_weights: Label the output as meaningless.
        backend: ``name/precision/device`` for the status line.
        policy: The policy's name.
        clock: Stream seconds now (since the first frame), to stamp events arriving live; default the wall time
            since this state was made.
        origin: Timestamp of the first frame (window times in events are absolute; cameras start far from 0),
            ``None`` until there is one.
        caption_s: Seconds a finished feedback stays on screen.
    """

    def __init__(
        self,
        random_weights: bool = False,
        backend: str = "",
        policy: str = "",
        clock: Callable[[], float | None] | None = None,
        origin: Callable[[], float | None] = lambda: 0.0,
        caption_s: float = CAPTION_S,
    ) -> None:
        self.random_weights, self.backend, self.policy = random_weights, backend, policy
        created = time.monotonic()
        self.clock = clock or (lambda: time.monotonic() - created)
        self.origin, self.caption_s = origin, caption_s
        self._lock = threading.Lock()
        self._decided: WindowDecided | None = None
        self._feedback, self._feedback_state, self._feedback_done_t = "", "", 0.0
        self._speaking = (0.0, -1.0)  # [start, end) of the utterance in stream seconds
        self._skipped = 0
        self._history: deque[tuple[float, float, str]] = deque(maxlen=2000)

    def __call__(self, event: Event) -> None:
        """Event-bus subscriber (live): folds ``event`` at the clock's time."""
        self.apply(event, self.clock() or 0.0)

    def apply(self, event: Event, t: float) -> None:
        """Folds one event shown at stream time ``t``."""
        with self._lock:
            if isinstance(event, WindowDecided):
                self._decided = event
                self._history.append((event.t_start, event.t_end, event.action))
            elif isinstance(event, WindowSkipped):
                self._skipped += 1
            elif isinstance(event, FeedbackStarted):
                self._feedback, self._feedback_state = "", "streaming"
            elif isinstance(event, FeedbackToken):
                self._feedback += event.token_text
            elif isinstance(event, FeedbackFinished):
                self._feedback = event.text
                self._feedback_state = "repeat" if event.suppressed else "done"
                self._feedback_done_t = t
            elif isinstance(event, FeedbackSpoken) and event.status == "spoken":
                start = event.audio_start_t if event.audio_start_t is not None else t
                self._speaking = (start, start + event.audio_s)

    def view(self, now_t: float, fps: float | None = None, span: tuple[float, float] | None = None) -> OverlayView:
        """The overlay at stream time ``now_t``.

        Args:
            now_t: Stream seconds since the first frame.
            fps: Capture rate to show (live view only).
            span: Time range of the bottom strip; default the last :data:`LIVE_STRIP_S` seconds.
        """
        with self._lock:
            d = self._decided
            state = self._feedback_state
            if state in ("done", "repeat") and now_t - self._feedback_done_t > self.caption_s:
                state = ""
            o = self.origin() or 0.0
            history = tuple((a - o, b - o, act) for a, b, act in self._history)
            return OverlayView(
                now_t=now_t,
                action=d.action if d else "-",
                confidence=d.confidence if d else 0.0,
                raw_action=d.raw_action if d else "-",
                gate_reason=d.gate_reason if d else None,
                probs=tuple(softmax(d.action_logits) or ()) or None if d else None,
                window=(d.t_start - o, d.t_end - o) if d else None,
                latency_ms=d.latency_ms.get("total", 0.0) if d else 0.0,
                policy=self.policy,
                feedback=self._feedback if state else "",
                feedback_state=state,
                speaking=self._speaking[0] <= now_t < self._speaking[1],
                skipped=self._skipped,
                random_weights=self.random_weights,
                backend=self.backend,
                fps=fps,
                history=history,
                span=span if span is not None else (max(0.0, now_t - LIVE_STRIP_S), max(LIVE_STRIP_S, now_t)),
            )


def scale_to_height(image_rgb: np.ndarray, height: int) -> np.ndarray:
    """``image_rgb`` resized to ``height`` rows, aspect kept (even width, for video encoders)."""
    h, w = image_rgb.shape[:2]
    width = max(2, round(w * height / h / 2) * 2)
    if (h, w) == (height, width):
        return image_rgb.copy()
    interp = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    return cv2.resize(image_rgb, (width, height), interpolation=interp)


def _clock_text(t: float) -> str:
    tenths = max(0, round(t * 10))
    minutes, rest = divmod(tenths, 600)
    return f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"


def _bgr(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return colour[2], colour[1], colour[0]


def draw_overlay(image_rgb: np.ndarray, view: OverlayView, height: int = 720) -> np.ndarray:
    """The frame scaled to ``height`` with ``view`` drawn on it, as BGR (for ``cv2.imshow`` and video writers).

    Only the top and bottom bands go through Pillow (text); the frame stays a BGR array (this runs per frame).
    """
    canvas = cv2.cvtColor(scale_to_height(image_rgb, height), cv2.COLOR_RGB2BGR)
    H, W = canvas.shape[:2]
    u = H / 720
    pad = round(14 * u)
    small, cap = font(round(20 * u)), font(round(32 * u))
    band_h = round(84 * u)
    warn_h = round(30 * u) if view.random_weights else 0
    strip_h = max(4, round(12 * u))
    caption_lines: list[str] = []
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if view.feedback_state:
        caption_lines = wrap(probe, " ".join(view.feedback.split()) or "…", cap, W - 2 * pad, 2)
    cap_line_h = round(40 * u)
    cap_h = round(34 * u) + cap_line_h * len(caption_lines) if caption_lines else 0
    darken(canvas, (0, 0, W, band_h))
    top = Image.fromarray(canvas[: band_h + warn_h])
    _draw_top(ImageDraw.Draw(top), view, W, u, pad, band_h)
    canvas[: band_h + warn_h] = np.asarray(top)
    y0 = H - strip_h - cap_h - (pad // 2 if cap_h else 0)
    if cap_h:
        darken(canvas, (0, y0, W, H - strip_h), 0.25)
    bottom = Image.fromarray(canvas[y0:])
    _draw_bottom(ImageDraw.Draw(bottom), view, W, H - y0, u, pad, strip_h, caption_lines, cap_h, cap_line_h)
    canvas[y0:] = np.asarray(bottom)
    return canvas


def _draw_top(draw: ImageDraw.ImageDraw, view: OverlayView, W: int, u: float, pad: int, band_h: int) -> None:
    """Line 1: time, action badge, the gate's reason; line 2: probabilities or rule, window, latency, backend."""
    big, small = font(round(30 * u)), font(round(20 * u))
    y = round(10 * u)
    x = pad
    draw.text((x, y), _clock_text(view.now_t), font=big, fill=_bgr(TEXT))
    x += text_width(draw, "00:00.0", big) + pad
    if view.action in ACTION_COLOURS:
        label = f"{view.action} {view.confidence:.2f}"
        bw = text_width(draw, label, big) + 2 * round(10 * u)
        draw.rounded_rectangle((x, y - round(3 * u), x + bw, y + round(36 * u)), radius=round(8 * u),
                               fill=_bgr(ACTION_COLOURS[view.action]))
        draw.text((x + round(10 * u), y), label, font=big, fill=(20, 20, 20))
        x += bw + pad
        why = f"gate: {view.gate_reason} (was {view.raw_action})" if view.gate_reason else ""
        draw.text((x, y + round(6 * u)), fit(draw, why, small, W - x - pad), font=small, fill=_bgr(TEXT))
    else:
        draw.text((x, y), "waiting for the first window…", font=small, fill=_bgr(MUTED))
    parts = ["end of stream (last frame held)"] if view.after_end else []
    if view.policy == "model" and view.probs:
        parts.append("  ".join(f"p{a} {p:.2f}" for a, p in zip(ACTION_TOKENS, view.probs)))
    elif view.policy:
        parts.append(f"decided by the {view.policy} rule")
    if view.window is not None:
        parts.append(f"window {view.window[0]:.1f}-{view.window[1]:.1f} s, {view.latency_ms:.0f} ms")
    if view.skipped:
        parts.append(f"{view.skipped} skipped")
    if view.fps is not None:
        parts.append(f"{view.fps:.1f} fps")
    if view.backend:
        parts.append(view.backend)
    draw.text((pad, y + round(44 * u)), fit(draw, "  ·  ".join(parts), small, W - 2 * pad), font=small,
              fill=_bgr(MUTED))
    if view.random_weights:
        warn = "RANDOM WEIGHTS: actions and feedback text are meaningless"
        ww = text_width(draw, warn, small) + 2 * pad
        draw.rectangle((0, band_h, min(W, ww), band_h + round(30 * u)), fill=_bgr(WARN_COLOUR))
        draw.text((pad, band_h + round(4 * u)), fit(draw, warn, small, W - 2 * pad), font=small, fill=_bgr(TEXT))


def _draw_bottom(draw: ImageDraw.ImageDraw, view: OverlayView, W: int, h: int, u: float, pad: int, strip_h: int,
                 caption_lines: list[str], cap_h: int, cap_line_h: int) -> None:
    """The coach's caption (when there is feedback) and the strip of decided windows with the playhead."""
    small, cap = font(round(20 * u)), font(round(32 * u))
    if caption_lines:
        top = h - strip_h - cap_h
        label = {"streaming": "coach (generating)", "done": "coach", "repeat": "coach: repeat, not spoken"}
        colour = ACTION_COLOURS[FEEDBACK] if view.feedback_state != "repeat" else MUTED
        draw.text((pad, top), label[view.feedback_state], font=small, fill=_bgr(colour))
        if view.speaking:
            sx = pad + text_width(draw, label[view.feedback_state], small) + pad
            draw.text((sx, top), "speaking", font=small, fill=_bgr(SPEECH_COLOUR))
        colour = TEXT if view.feedback_state != "repeat" else MUTED
        for i, line in enumerate(caption_lines):
            draw.text((pad, top + round(28 * u) + i * cap_line_h), line, font=cap, fill=_bgr(colour))
    a, b = view.span
    scale = (W - 1) / max(b - a, 1e-6)
    draw.rectangle((0, h - strip_h, W, h), fill=(30, 25, 25))
    prev_end = a
    for t0, t1, act in view.history:  # overlapping windows: each drawn from where the previous one ended
        t0 = max(t0, prev_end, a)
        prev_end = max(prev_end, t1)
        if t1 <= t0 or t0 > b:
            continue
        draw.rectangle((round((t0 - a) * scale), h - strip_h, round((min(t1, b) - a) * scale), h),
                       fill=_bgr(ACTION_COLOURS.get(act, MUTED)))
    px = round((min(max(view.now_t, a), b) - a) * scale)
    draw.rectangle((px - 1, h - strip_h - round(6 * u), px + 1, h), fill=_bgr(TEXT))
