"""The synthetic exercise scene: a deterministic stick figure doing squats (the one scene generator).

Used by the synthetic source (tests, demo, benchmarks) and by the parity harness for its input frames. The scene
repeats every :attr:`SquatScene.CYCLE_S` seconds: the figure stands still for :attr:`SquatScene.STILL_S` seconds,
then does squat reps of :attr:`SquatScene.REP_S` seconds each for the rest of the cycle. A static seeded background
texture and a small seeded per-frame sensor noise make frames realistic but reproducible: the same arguments always
give bit-identical frames.

Form faults (:class:`Fault`) can be injected at known stream times for the annotated timing benchmark
(``evaluation.synthetic_benchmark``): ``knees_caving`` (the knee collapses inwards, behind the hip-foot line),
``back_rounding`` (the torso bows into a curve and the head drops) and ``fast_tempo`` (reps at twice the speed). Each
kind has a ground-truth correction text (:data:`FAULT_CORRECTIONS`). Without faults the frames are exactly those of
the plain scene. A fault develops over :data:`FAULT_RAMP_S` at each end, as form breaks down in a real set, and the
posture faults keep the rep's range of motion: no frame jumps at a fault's onset and the motion energy stays that of
a clean rep, so a motion detector cannot tell a posture fault from a good rep (only the tempo fault moves faster).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

#: Injectable form faults and the correction a coach should give for each.
FAULT_CORRECTIONS: dict[str, str] = {
    "knees_caving": "Push your knees out over your toes.",
    "back_rounding": "Keep your back straight and your chest up.",
    "fast_tempo": "Slow down and control the descent.",
}
FAULT_KINDS: tuple[str, ...] = tuple(FAULT_CORRECTIONS)
#: Seconds over which a fault develops after its start and fades before its end (smoothstep).
FAULT_RAMP_S = 0.5


@dataclass(frozen=True)
class Fault:
    """A form fault shown during ``[t_start, t_end)`` (stream seconds).

    Attributes:
        kind: One of :data:`FAULT_KINDS`.
        t_start: First time it is shown.
        t_end: End of the fault (exclusive).

    Raises:
        ValueError: For an unknown kind or an empty interval.
    """

    kind: str
    t_start: float
    t_end: float

    def __post_init__(self) -> None:
        if self.kind not in FAULT_CORRECTIONS:
            raise ValueError(f"fault kind {self.kind!r}: must be one of {', '.join(FAULT_KINDS)}")
        if not self.t_end > self.t_start:
            raise ValueError(f"fault [{self.t_start}, {self.t_end}): t_end must be > t_start")

    @property
    def correction(self) -> str:
        """The ground-truth correction text."""
        return FAULT_CORRECTIONS[self.kind]

    def active(self, t: float) -> bool:
        """Whether the fault is shown at time ``t``."""
        return self.t_start <= t < self.t_end

    def severity(self, t: float) -> float:
        """How developed the fault is at ``t``, in ``[0, 1]``: a smoothstep over :data:`FAULT_RAMP_S` at each end."""
        if not self.active(t):
            return 0.0
        ramp = min(FAULT_RAMP_S, 0.5 * (self.t_end - self.t_start))
        x = min(1.0, (t - self.t_start) / ramp, (self.t_end - t) / ramp)
        return x * x * (3.0 - 2.0 * x)


class SquatScene:
    """Renders the squat scene.

    Args:
        size: Frame size as ``(height, width)``; both >= 32.
        seed: Seed for the background texture and the sensor noise.
        noise_std: Standard deviation of the per-frame sensor noise (0-255 scale), >= 0.
        faults: Form faults to show (non-overlapping); none gives the plain scene.
        noise_seed: Seed of the sensor noise when it should differ from ``seed`` (the background's); default ``seed``.

    Raises:
        ValueError: For an out-of-range argument or overlapping faults.
    """

    CYCLE_S = 8.0
    STILL_S = 3.0
    REP_S = 1.25

    def __init__(
        self,
        size: tuple[int, int] = (240, 320),
        seed: int = 0,
        noise_std: float = 2.0,
        faults: Sequence[Fault] = (),
        noise_seed: int | None = None,
    ) -> None:
        if len(size) != 2 or size[0] < 32 or size[1] < 32:
            raise ValueError(f"size = {size}: must be (height, width) with both >= 32")
        if noise_std < 0:
            raise ValueError(f"noise_std = {noise_std}: must be >= 0")
        ordered = sorted(faults, key=lambda f: f.t_start)
        for a, b in zip(ordered, ordered[1:]):
            if b.t_start < a.t_end:
                raise ValueError(f"faults overlap: {a} and {b}")
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.noise_std = noise_std
        self.faults: tuple[Fault, ...] = tuple(ordered)
        self.noise_seed = seed if noise_seed is None else noise_seed
        self._background = self._make_background()

    @classmethod
    def squat_depth(cls, t: float) -> float:
        """Squat depth in ``[0, 1]`` at stream time ``t`` (0 = standing)."""
        phase = t % cls.CYCLE_S
        if phase < cls.STILL_S:
            return 0.0
        return 0.5 * (1.0 - math.cos(2.0 * math.pi * (phase - cls.STILL_S) / cls.REP_S))

    @classmethod
    def is_moving(cls, t: float) -> bool:
        """Whether the figure is in a rep phase (not standing still) at time ``t``."""
        return (t % cls.CYCLE_S) >= cls.STILL_S

    def fault_at(self, t: float) -> Fault | None:
        """The fault shown at time ``t``, if any."""
        return next((f for f in self.faults if f.active(t)), None)

    def depth_at(self, t: float) -> float:
        """Squat depth at ``t`` including a ``fast_tempo`` fault (reps at twice the speed from the fault's start,
        blended in by its severity so the depth never jumps)."""
        fault = self.fault_at(t)
        normal = self.squat_depth(t)
        if fault is None or fault.kind != "fast_tempo" or not self.is_moving(t):
            return normal
        fast = 0.5 * (1.0 - math.cos(2.0 * math.pi * (t - fault.t_start) / (0.5 * self.REP_S)))
        s = fault.severity(t)
        return (1.0 - s) * normal + s * fast

    def render(self, t: float, index: int) -> np.ndarray:
        """The RGB ``uint8`` frame at stream time ``t``; ``index`` seeds its sensor noise."""
        image = self._background.copy()
        fault = self.fault_at(t) if self.faults else None
        if fault is None:
            self._draw_figure(image, self.squat_depth(t))
        else:
            self._draw_figure(image, self.depth_at(t), fault.kind, fault.severity(t))
        if self.noise_std > 0:
            rng = np.random.default_rng((self.noise_seed, index))
            noise = rng.normal(0.0, self.noise_std, size=image.shape)
            image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        return image

    def frames(self, n: int, fps: float = 30.0, start: int = 0) -> np.ndarray:
        """``n`` consecutive frames ``[n, H, W, 3]`` from frame ``start`` at ``fps``."""
        return np.stack([self.render((start + i) / fps, start + i) for i in range(n)])

    def _make_background(self) -> np.ndarray:
        height, width = self.size
        rng = np.random.default_rng(self.seed)
        # Low-resolution noise upsampled to a smooth "wall" texture.
        coarse = rng.uniform(70, 120, size=(8, 10, 3)).astype(np.float32)
        wall = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        floor_y = int(0.9 * height)
        wall[floor_y:] = (95, 80, 60)
        return np.clip(wall, 0, 255).astype(np.uint8)

    def _draw_figure(self, image: np.ndarray, depth: float, fault: str | None = None, severity: float = 1.0) -> None:
        height, width = self.size
        cx = width / 2.0
        thick = max(2, height // 40)
        s = severity
        foot = (cx, 0.9 * height)
        hip = (cx - 0.10 * width * depth, (0.56 + 0.16 * depth) * height)
        knee = (cx + 0.10 * width * depth, (0.73 + 0.03 * depth) * height)
        if fault == "knees_caving":  # the knee falls in behind the hip-foot line instead of tracking the toes
            knee = (cx + (0.10 - 0.22 * s) * width * depth, (0.73 + 0.03 * depth) * height)
        torso = 0.24 * height
        lean = 0.5 * depth  # radians of forward lean at the bottom of a squat
        if fault == "back_rounding":
            lean += 0.35 * s  # the chest collapses forward (the same range of motion, offset)
        shoulder = (hip[0] + torso * math.sin(lean), hip[1] - torso * math.cos(lean))
        hand = (shoulder[0] + 0.16 * width * (0.3 + 0.7 * depth), shoulder[1] + 0.10 * height * (1.0 - depth))
        head = (shoulder[0] + 0.02 * width * depth, shoulder[1] - 0.07 * height)
        if fault == "back_rounding":  # the head drops towards the shoulders
            head = (head[0] + s * (0.07 * width - 0.02 * width * depth), head[1] + s * 0.09 * height)

        def pt(p: tuple[float, float]) -> tuple[int, int]:
            return int(round(p[0])), int(round(p[1]))

        leg_colour, body_colour, skin = (40, 60, 160), (200, 60, 50), (230, 190, 160)
        cv2.line(image, pt(foot), pt(knee), leg_colour, thick, cv2.LINE_AA)
        cv2.line(image, pt(knee), pt(hip), leg_colour, thick, cv2.LINE_AA)
        if fault == "back_rounding":  # a bowed spine: hip -> bulge behind the straight line -> shoulder
            mid = ((hip[0] + shoulder[0]) / 2.0 - s * 0.09 * width, (hip[1] + shoulder[1]) / 2.0 - s * 0.06 * height)
            cv2.polylines(image, [np.array([pt(hip), pt(mid), pt(shoulder)], np.int32)], False, body_colour,
                          thick + 2, cv2.LINE_AA)
        else:
            cv2.line(image, pt(hip), pt(shoulder), body_colour, thick + 2, cv2.LINE_AA)
        cv2.line(image, pt(shoulder), pt(hand), skin, thick, cv2.LINE_AA)
        cv2.circle(image, pt(head), max(4, int(0.05 * height)), skin, -1, cv2.LINE_AA)
        # A weight plate held in the hands moves with the arms.
        cv2.circle(image, pt(hand), max(3, int(0.03 * height)), (30, 30, 30), -1, cv2.LINE_AA)
