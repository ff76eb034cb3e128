"""What the live view shows: the overlay state fed by events, and drawing it over a frame."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.events import Event, FeedbackFinished, FeedbackStarted, FeedbackToken, WindowDecided


@dataclass
class OverlayState:
    """What the overlay shows; updated from events on the inference thread, read by the UI thread.

    Attributes:
        action: Last gated action.
        confidence: Its confidence.
        feedback: Feedback text (streaming or the last finished one).
        latency_ms: Total processing time of the last window.
        lag_s: Stream-time lag of the last decision.
        random_weights: Label the output as meaningless.
        backend: Backend name for the status line.
    """

    action: str = "-"
    confidence: float = 0.0
    feedback: str = ""
    latency_ms: float = 0.0
    lag_s: float = 0.0
    random_weights: bool = False
    backend: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        """Event-bus subscriber."""
        with self._lock:
            if isinstance(event, WindowDecided):
                self.action, self.confidence = event.action, event.confidence
                self.latency_ms, self.lag_s = event.latency_ms.get("total", 0.0), event.lag_s
            elif isinstance(event, FeedbackStarted):
                self.feedback = ""
            elif isinstance(event, FeedbackToken):
                self.feedback += event.token_text
            elif isinstance(event, FeedbackFinished):
                self.feedback = event.text + (" (repeat, not spoken)" if event.suppressed else "")

    def lines(self, fps: float) -> list[str]:
        """The overlay's text lines."""
        with self._lock:
            lines = [
                f"action {self.action}  conf {self.confidence:.2f}",
                f"{fps:4.1f} fps  latency {self.latency_ms:.0f} ms  lag {self.lag_s:.1f} s  [{self.backend}]",
            ]
            if self.feedback:
                lines.append(f"coach: {self.feedback[-80:]}")
            if self.random_weights:
                lines.append("RANDOM WEIGHTS - output is meaningless")
        return lines


def draw_overlay(image_rgb: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Returns a BGR copy of ``image_rgb`` with ``lines`` drawn on a dark band at the top (for ``cv2.imshow``)."""
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    scale = max(0.4, bgr.shape[1] / 1280)
    step = int(28 * scale) + 6
    band = bgr[: step * len(lines) + 8]
    band[:] = (band * 0.35).astype(np.uint8)  # darken for contrast; the frame stays visible
    for i, line in enumerate(lines):
        colour = (80, 80, 255) if line.startswith("RANDOM") else (255, 255, 255)
        cv2.putText(bgr, line, (8, step * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return bgr
