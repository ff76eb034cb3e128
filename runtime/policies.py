"""Action decision policies and the feedback gate.

A policy maps one window's features plus the stream context to an
:class:`ActionDecision` (``<next>``, ``<feedback>`` or ``<correct>`` with a
confidence). :class:`ModelPolicy` uses the decoder's action logits; the
rule-based policies (every N-th window, seeded random, motion change) exercise
the streaming infrastructure before the action tokens are trained.
:class:`FeedbackGate` then applies the user-facing rules (``<correct>`` allowed,
confidence threshold, minimum interval) before any text is generated, and
:class:`RepeatFilter` drops a generated text that repeats the previous one.
"""

from __future__ import annotations

import logging
import math
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from engine_format.vocab import ACTION_TOKENS
from runtime.config import MOTION_MODES, POLICY_NAMES, DecisionConfig, PolicyConfig
from runtime.windowing import Window

logger = logging.getLogger(__name__)

# The vocabulary module is the single definition of the action tokens and of
# their order, which is also the order of ModelPolicy's logits.
ACTIONS: tuple[str, str, str] = ACTION_TOKENS
NEXT, FEEDBACK, CORRECT = ACTIONS


class PolicyError(ValueError):
    """A policy got features it cannot decide from."""


@dataclass(frozen=True)
class ActionDecision:
    """An action for one window.

    Attributes:
        action: One of :data:`ACTIONS`.
        confidence: Probability-like score in ``[0, 1]``.
    """

    action: str
    confidence: float

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r} is not one of {ACTIONS}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} is not in [0, 1]")


@dataclass
class WindowFeatures:
    """What a policy may look at for one window.

    Attributes:
        window: The window.
        frames: The sampled ``uint8`` RGB frames, ``[T, H, W, 3]`` (array or
            list of arrays), if available.
        frame_embeddings: Per-frame features ``[T, D]`` (e.g. mean-pooled image
            encoder output), if available.
        action_logits: Decoder logits at the action position restricted to
            :data:`ACTIONS`, shape ``[3]``, if available.
    """

    window: Window
    frames: np.ndarray | Sequence[np.ndarray] | None = None
    frame_embeddings: np.ndarray | None = None
    action_logits: np.ndarray | None = None


@dataclass
class PolicyContext:
    """Stream state carried between windows.

    Attributes:
        windows_seen: Windows decided before the current one.
        stream_time: End time of the current window (seconds of stream time).
        last_feedback_time: Stream time of the last non-``<next>`` action.
        previous_embedding: Mean embedding ``[D]`` of the previous window.
    """

    windows_seen: int = 0
    stream_time: float = 0.0
    last_feedback_time: float | None = None
    previous_embedding: np.ndarray | None = None

    def update(self, features: WindowFeatures, decision: ActionDecision) -> None:
        """Advance the context after a window's final (gated) decision."""
        self.windows_seen += 1
        self.stream_time = features.window.t_end
        if decision.action != NEXT:
            self.last_feedback_time = features.window.t_end
        if features.frame_embeddings is not None:
            self.previous_embedding = _mean_embedding(features.frame_embeddings)


class ActionPolicy(ABC):
    """Interface: ``(window features, context) -> (action, confidence)``."""

    name: str = "policy"

    @abstractmethod
    def decide(self, features: WindowFeatures, context: PolicyContext) -> ActionDecision:
        """Choose the action for one window.

        Raises:
            PolicyError: If a feature the policy needs is missing or malformed.
        """


class ModelPolicy(ActionPolicy):
    """Softmax over the decoder's three action logits; confidence = its probability."""

    name = "model"

    def decide(self, features: WindowFeatures, context: PolicyContext) -> ActionDecision:
        if features.action_logits is None:
            raise PolicyError(f"model policy needs action_logits for window {features.window.index}, got None")
        logits = np.asarray(features.action_logits, dtype=np.float64).reshape(-1)
        if logits.shape != (len(ACTIONS),) or not np.all(np.isfinite(logits)):
            raise PolicyError(
                f"model policy needs {len(ACTIONS)} finite logits ordered {ACTIONS}, got {features.action_logits!r}"
            )
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = int(np.argmax(probs))
        return ActionDecision(ACTIONS[best], float(probs[best]))


class EveryNthPolicy(ActionPolicy):
    """``<feedback>`` on every n-th processed window (the n-th, 2n-th, ...).

    Counts processed windows (``context.windows_seen``) rather than window
    indices so that latest-wins skipping cannot starve it.
    """

    name = "every_n"

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"n = {n}: must be >= 1")
        self.n = n

    def decide(self, features: WindowFeatures, context: PolicyContext) -> ActionDecision:
        if (context.windows_seen + 1) % self.n == 0:
            return ActionDecision(FEEDBACK, 1.0)
        return ActionDecision(NEXT, 1.0)


class RandomPolicy(ActionPolicy):
    """``<feedback>`` with probability ``p`` per window, from a seeded generator."""

    name = "random"

    def __init__(self, p: float, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p = {p}: must be in [0, 1]")
        self.p = p
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def decide(self, features: WindowFeatures, context: PolicyContext) -> ActionDecision:
        # Exactly one draw per window keeps runs reproducible whatever p is.
        if self._rng.random() < self.p:
            return ActionDecision(FEEDBACK, 1.0)
        return ActionDecision(NEXT, 1.0)


class MotionChangePolicy(ActionPolicy):
    """``<feedback>`` when the motion score exceeds a threshold.

    Modes:
        * ``frame_diff``: mean absolute difference of successive sampled frames
          within the window, on grey frames downscaled to ``diff_size`` (0-255).
        * ``embedding``: ``1 - cosine`` between this window's and the previous
          window's mean frame embedding (0-2); the first window scores 0.

    Confidence is ``1 - 0.5 * exp(-margin)`` where margin is the distance from
    the threshold relative to the threshold: 0.5 on the threshold, rising
    towards 1 the further the score is on either side of it.

    Args:
        threshold: Score above which the policy asks for feedback; > 0.
        mode: ``frame_diff`` or ``embedding``.
        diff_size: ``(width, height)`` the frames are reduced to before differencing.
    """

    name = "motion"

    def __init__(self, threshold: float, mode: str = "frame_diff", diff_size: tuple[int, int] = (64, 48)) -> None:
        if mode not in MOTION_MODES:
            raise ValueError(f"mode = {mode!r}: must be one of {', '.join(MOTION_MODES)}")
        if not threshold > 0:
            raise ValueError(f"threshold = {threshold}: must be > 0")
        self.threshold = threshold
        self.mode = mode
        self.diff_size = diff_size

    def score(self, features: WindowFeatures, context: PolicyContext) -> float:
        """Compute the motion score of a window in the units of the current mode."""
        if self.mode == "frame_diff":
            return self._frame_diff(features)
        return self._embedding_change(features, context)

    def decide(self, features: WindowFeatures, context: PolicyContext) -> ActionDecision:
        score = self.score(features, context)
        margin = abs(score - self.threshold) / self.threshold
        confidence = 1.0 - 0.5 * math.exp(-margin)
        action = FEEDBACK if score > self.threshold else NEXT
        return ActionDecision(action, confidence)

    def _frame_diff(self, features: WindowFeatures) -> float:
        if features.frames is None or len(features.frames) == 0:
            raise PolicyError(f"motion policy (frame_diff) needs frames for window {features.window.index}, got none")
        greys = [self._grey(np.asarray(f)) for f in features.frames]
        if len(greys) < 2:
            return 0.0
        return float(np.mean([np.abs(b - a).mean() for a, b in zip(greys[:-1], greys[1:], strict=True)]))

    def _grey(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3:
            raise PolicyError(f"motion policy expects RGB frames [H, W, 3], got shape {image.shape}")
        grey = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
        # Area downscaling averages out sensor noise that would mimic motion.
        return cv2.resize(grey, self.diff_size, interpolation=cv2.INTER_AREA).astype(np.float32)

    def _embedding_change(self, features: WindowFeatures, context: PolicyContext) -> float:
        if features.frame_embeddings is None:
            raise PolicyError(
                f"motion policy (embedding) needs frame_embeddings for window {features.window.index}, got None"
            )
        current = _mean_embedding(features.frame_embeddings)
        if context.previous_embedding is None:
            return 0.0
        previous = np.asarray(context.previous_embedding, dtype=np.float64)
        if previous.shape != current.shape:
            raise PolicyError(f"embedding size changed between windows: {previous.shape} vs {current.shape}")
        denom = float(np.linalg.norm(previous) * np.linalg.norm(current))
        if denom == 0.0:
            return 0.0
        return float(1.0 - np.dot(previous, current) / denom)


def _mean_embedding(embeddings: np.ndarray) -> np.ndarray:
    array = np.asarray(embeddings, dtype=np.float64)
    if array.ndim == 1:
        return array
    if array.ndim != 2:
        raise PolicyError(f"frame_embeddings must be [T, D] or [D], got shape {array.shape}")
    return array.mean(axis=0)


_DEFAULT_RULE_POLICY: ActionPolicy = EveryNthPolicy(PolicyConfig().every_n.n)


def rule_based_action_prediction(
    chunk_features: WindowFeatures,
    context: PolicyContext,
    policy: ActionPolicy | None = None,
) -> ActionDecision:
    """Decide a window's action with a rule-based policy (no trained tokens needed).

    Args:
        chunk_features: The window's features.
        context: The stream context.
        policy: A rule-based policy; defaults to :class:`EveryNthPolicy` with the
            configured default ``n``.

    Returns:
        The policy's decision.

    Raises:
        TypeError: If ``policy`` is a :class:`ModelPolicy` (not rule-based).
    """
    chosen = policy if policy is not None else _DEFAULT_RULE_POLICY
    if isinstance(chosen, ModelPolicy):
        raise TypeError("rule_based_action_prediction needs a rule-based policy, got ModelPolicy")
    return chosen.decide(chunk_features, context)


_POLICY_BUILDERS: dict[str, type[ActionPolicy]] = {
    ModelPolicy.name: ModelPolicy,
    EveryNthPolicy.name: EveryNthPolicy,
    RandomPolicy.name: RandomPolicy,
    MotionChangePolicy.name: MotionChangePolicy,
}
assert tuple(_POLICY_BUILDERS) == POLICY_NAMES, "runtime.config.POLICY_NAMES must list every policy"


def build_policy(cfg: PolicyConfig) -> ActionPolicy:
    """Instantiate the policy named by ``cfg.name`` with its parameters.

    Raises:
        ValueError: If ``cfg.name`` is not a known policy.
    """
    if cfg.name not in _POLICY_BUILDERS:
        raise ValueError(f"policy.name = {cfg.name!r}: must be one of {', '.join(POLICY_NAMES)}")
    if cfg.name == EveryNthPolicy.name:
        return EveryNthPolicy(cfg.every_n.n)
    if cfg.name == RandomPolicy.name:
        return RandomPolicy(cfg.random.p, cfg.random.seed)
    if cfg.name == MotionChangePolicy.name:
        return MotionChangePolicy(cfg.motion.threshold, cfg.motion.mode)
    return ModelPolicy()


# --------------------------------------------------------------------------- gate


@dataclass(frozen=True)
class GateResult:
    """A gated decision.

    Attributes:
        action: The action to carry out.
        confidence: The policy's confidence (unchanged by the gate).
        raw_action: The policy's action before gating.
        reason: Why it was downgraded (``"correct_disabled"``,
            ``"low_confidence"``, ``"interval"``) or ``None`` if it passed.
    """

    action: str
    confidence: float
    raw_action: str
    reason: str | None = None


_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise_feedback(text: str) -> str:
    """Lower-case, strip punctuation and collapse whitespace (for repeat checks)."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


class FeedbackGate:
    """User-facing rules applied to a policy's decision, in a fixed order, before any text is generated.

    For a non-``<next>`` decision at stream time ``t``:

    1. ``<correct>`` becomes ``<next>`` unless ``allow_correct``;
    2. a confidence below ``confidence_threshold`` becomes ``<next>``;
    3. a feedback sooner than ``min_feedback_interval_s`` after the previous
       one becomes ``<next>``;
    4. otherwise it passes and ``t`` becomes the last feedback time.

    Every downgrade is counted in :attr:`downgrades` by reason.

    Args:
        confidence_threshold: In ``[0, 1]``.
        min_feedback_interval_s: Seconds of stream time, >= 0.
        allow_correct: Whether ``<correct>`` may be emitted.
    """

    def __init__(
        self,
        confidence_threshold: float = 0.5,
        min_feedback_interval_s: float = 4.0,
        allow_correct: bool = False,
    ) -> None:
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold = {confidence_threshold}: must be in [0, 1]")
        if min_feedback_interval_s < 0:
            raise ValueError(f"min_feedback_interval_s = {min_feedback_interval_s}: must be >= 0")
        self.confidence_threshold = confidence_threshold
        self.min_feedback_interval_s = min_feedback_interval_s
        self.allow_correct = allow_correct
        self.last_feedback_t: float | None = None
        self.downgrades: Counter[str] = Counter()

    @classmethod
    def from_config(cls, cfg: DecisionConfig) -> FeedbackGate:
        """Build a gate from the ``decision`` config section."""
        return cls(cfg.confidence_threshold, cfg.min_feedback_interval_s, cfg.allow_correct)

    def apply(self, decision: ActionDecision, t: float) -> GateResult:
        """Gate a decision made for the window ending at stream time ``t``."""
        raw = decision.action
        if raw == NEXT:
            return GateResult(NEXT, decision.confidence, raw)
        reason: str | None = None
        if raw == CORRECT and not self.allow_correct:
            reason = "correct_disabled"
        elif decision.confidence < self.confidence_threshold:
            reason = "low_confidence"
        elif self.last_feedback_t is not None and t - self.last_feedback_t < self.min_feedback_interval_s:
            reason = "interval"
        if reason is not None:
            self.downgrades[reason] += 1
            logger.debug("gate: %s (conf %.3f) at t=%.3f -> <next> (%s)", raw, decision.confidence, t, reason)
            return GateResult(NEXT, decision.confidence, raw, reason)
        self.last_feedback_t = t
        return GateResult(raw, decision.confidence, raw)


class RepeatFilter:
    """Drops a generated feedback text equal (after :func:`normalise_feedback`) to the previous shown one.

    Args:
        enabled: ``decision.suppress_repeats``; when false nothing is suppressed.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.last_text: str | None = None
        self.suppressed = 0

    def is_repeat(self, text: str) -> bool:
        """Whether ``text`` repeats the previous shown text; a text that is shown becomes the new reference.

        Returns:
            ``True`` if the text should not be shown.
        """
        normalised = normalise_feedback(text)
        if self.enabled and self.last_text is not None and normalised == self.last_text:
            self.suppressed += 1
            return True
        self.last_text = normalised
        return False
