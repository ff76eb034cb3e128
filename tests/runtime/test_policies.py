"""Action policies and the feedback gate."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.config import PolicyConfig, RandomConfig, load_config
from runtime.policies import (
    ACTIONS,
    CORRECT,
    FEEDBACK,
    NEXT,
    ActionDecision,
    EveryNthPolicy,
    FeedbackGate,
    ModelPolicy,
    MotionChangePolicy,
    PolicyContext,
    PolicyError,
    RandomPolicy,
    RepeatFilter,
    WindowFeatures,
    build_policy,
    normalise_feedback,
    rule_based_action_prediction,
)
from runtime.sources import SyntheticSource
from runtime.windowing import Window, sample_times

W = Window(0, 0.0, 2.0)


def _run(policy, n: int, make=lambda k: WindowFeatures(Window(k, 1.5 * k, 1.5 * k + 2.0))) -> list[str]:  # type: ignore[no-untyped-def]
    ctx = PolicyContext()
    actions = []
    for k in range(n):
        features = make(k)
        decision = policy.decide(features, ctx)
        actions.append(decision.action)
        ctx.update(features, decision)
    return actions


def test_action_names() -> None:
    assert ACTIONS == ("<next>", "<feedback>", "<correct>")
    with pytest.raises(ValueError, match="not one of"):
        ActionDecision("<bogus>", 0.5)


def test_model_policy_softmax_over_three_logits() -> None:
    decision = ModelPolicy().decide(WindowFeatures(W, action_logits=np.array([0.0, 2.0, 1.0])), PolicyContext())
    expected = np.exp(2.0) / (1 + np.exp(2.0) + np.exp(1.0))
    assert decision.action == FEEDBACK
    assert decision.confidence == pytest.approx(expected)
    decision = ModelPolicy().decide(WindowFeatures(W, action_logits=np.array([0.0, 0.0, 500.0])), PolicyContext())
    assert decision.action == CORRECT and decision.confidence == pytest.approx(1.0)


def test_model_policy_requires_logits() -> None:
    with pytest.raises(PolicyError, match="needs action_logits"):
        ModelPolicy().decide(WindowFeatures(W), PolicyContext())
    with pytest.raises(PolicyError, match="3 finite logits"):
        ModelPolicy().decide(WindowFeatures(W, action_logits=np.zeros(4)), PolicyContext())


def test_every_nth_policy() -> None:
    assert _run(EveryNthPolicy(3), 7) == [NEXT, NEXT, FEEDBACK, NEXT, NEXT, FEEDBACK, NEXT]
    assert _run(EveryNthPolicy(1), 3) == [FEEDBACK] * 3
    with pytest.raises(ValueError, match="n = 0"):
        EveryNthPolicy(0)


def test_random_policy_is_seeded_and_respects_p() -> None:
    a = _run(RandomPolicy(0.3, seed=7), 200)
    b = _run(RandomPolicy(0.3, seed=7), 200)
    c = _run(RandomPolicy(0.3, seed=8), 200)
    assert a == b and a != c
    assert 30 <= a.count(FEEDBACK) <= 90
    assert _run(RandomPolicy(0.0), 50) == [NEXT] * 50
    assert _run(RandomPolicy(1.0), 50) == [FEEDBACK] * 50


def _synthetic_window_frames(t_start: float) -> list[np.ndarray]:
    src = SyntheticSource(fps=30.0, size=(96, 128), seed=0)
    return [src.render(round(t * 30.0)) for t in sample_times(Window(0, t_start, t_start + 2.0), 16)]


def test_motion_frame_diff_detects_reps_not_stillness() -> None:
    policy = MotionChangePolicy(threshold=0.8, mode="frame_diff")
    still = policy.decide(WindowFeatures(W, frames=_synthetic_window_frames(0.5)), PolicyContext())
    moving = policy.decide(WindowFeatures(W, frames=_synthetic_window_frames(4.0)), PolicyContext())
    assert still.action == NEXT and moving.action == FEEDBACK
    assert still.confidence > 0.5 and moving.confidence > 0.5


def test_motion_confidence_grows_with_margin() -> None:
    frames = _synthetic_window_frames(4.0)
    policy = MotionChangePolicy(threshold=1.0)
    score = policy.score(WindowFeatures(W, frames=frames), PolicyContext())
    near = MotionChangePolicy(threshold=score * 0.95).decide(WindowFeatures(W, frames=frames), PolicyContext())
    far = MotionChangePolicy(threshold=score * 0.3).decide(WindowFeatures(W, frames=frames), PolicyContext())
    assert near.action == far.action == FEEDBACK
    assert 0.5 < near.confidence < far.confidence <= 1.0


def test_motion_embedding_mode_uses_previous_window() -> None:
    policy = MotionChangePolicy(threshold=0.1, mode="embedding")
    emb_a = np.tile([1.0, 0.0, 0.0], (16, 1))
    emb_b = np.tile([0.0, 1.0, 0.0], (16, 1))
    sequence = [emb_a, emb_a, emb_b, emb_b]
    actions = _run(
        policy, 4, make=lambda k: WindowFeatures(Window(k, 1.5 * k, 1.5 * k + 2), frame_embeddings=sequence[k])
    )
    # First window has nothing to compare with; the change a -> b triggers feedback.
    assert actions == [NEXT, NEXT, FEEDBACK, NEXT]


def test_motion_policy_missing_inputs_and_bad_args() -> None:
    with pytest.raises(PolicyError, match="needs frames"):
        MotionChangePolicy(1.0).decide(WindowFeatures(W), PolicyContext())
    with pytest.raises(PolicyError, match="needs frame_embeddings"):
        MotionChangePolicy(0.1, mode="embedding").decide(WindowFeatures(W), PolicyContext())
    with pytest.raises(ValueError, match="mode = 'optical'"):
        MotionChangePolicy(1.0, mode="optical")


def test_rule_based_entry_point() -> None:
    ctx = PolicyContext(windows_seen=3)
    assert rule_based_action_prediction(WindowFeatures(W), ctx).action == FEEDBACK  # default every 4th
    assert rule_based_action_prediction(WindowFeatures(W), ctx, policy=EveryNthPolicy(5)).action == NEXT
    with pytest.raises(TypeError, match="rule-based"):
        rule_based_action_prediction(WindowFeatures(W), ctx, policy=ModelPolicy())


def test_build_policy_from_config() -> None:
    assert isinstance(build_policy(load_config().policy), EveryNthPolicy)
    assert isinstance(build_policy(PolicyConfig(name="model")), ModelPolicy)
    rnd = build_policy(PolicyConfig(name="random", random=RandomConfig(p=0.9, seed=3)))
    assert isinstance(rnd, RandomPolicy) and rnd.p == 0.9 and rnd.seed == 3
    motion = build_policy(PolicyConfig(name="motion"))
    assert isinstance(motion, MotionChangePolicy) and motion.mode == "frame_diff"


# --------------------------------------------------------------------------- gate


def test_gate_confidence_threshold() -> None:
    gate = FeedbackGate(confidence_threshold=0.6, min_feedback_interval_s=0.0)
    low = gate.apply(ActionDecision(FEEDBACK, 0.59), t=1.0)
    assert low.action == NEXT and low.raw_action == FEEDBACK and low.reason == "low_confidence"
    high = gate.apply(ActionDecision(FEEDBACK, 0.6), t=2.0)
    assert high.action == FEEDBACK and high.raw_action == FEEDBACK and high.reason is None
    assert gate.downgrades["low_confidence"] == 1


def test_gate_min_interval_in_stream_time() -> None:
    gate = FeedbackGate(confidence_threshold=0.0, min_feedback_interval_s=4.0)
    times_actions = [(2.0, FEEDBACK), (3.5, FEEDBACK), (5.0, FEEDBACK), (6.5, FEEDBACK)]
    out = [gate.apply(ActionDecision(a, 1.0), t) for t, a in times_actions]
    assert [r.action for r in out] == [FEEDBACK, NEXT, NEXT, FEEDBACK]
    assert [r.reason for r in out] == [None, "interval", "interval", None]
    assert gate.last_feedback_t == 6.5


def test_gate_downgraded_feedback_does_not_reset_interval() -> None:
    gate = FeedbackGate(confidence_threshold=0.5, min_feedback_interval_s=4.0)
    gate.apply(ActionDecision(FEEDBACK, 0.9), 0.0)
    gate.apply(ActionDecision(FEEDBACK, 0.1), 3.0)  # low confidence: not a feedback
    assert gate.apply(ActionDecision(FEEDBACK, 0.9), 4.0).action == FEEDBACK


def test_gate_allow_correct() -> None:
    blocked = FeedbackGate(confidence_threshold=0.0, min_feedback_interval_s=0.0, allow_correct=False)
    result = blocked.apply(ActionDecision(CORRECT, 0.9), 1.0)
    assert result.action == NEXT and result.reason == "correct_disabled"
    allowed = FeedbackGate(confidence_threshold=0.0, min_feedback_interval_s=0.0, allow_correct=True)
    assert allowed.apply(ActionDecision(CORRECT, 0.9), 1.0).action == CORRECT


def test_gate_next_passes_untouched() -> None:
    gate = FeedbackGate(confidence_threshold=0.99)
    result = gate.apply(ActionDecision(NEXT, 0.1), 1.0)
    assert result.action == NEXT and result.reason is None and not gate.downgrades


def test_repeat_filter_suppresses_normalised_repeats() -> None:
    repeats = RepeatFilter(enabled=True)
    assert repeats.is_repeat("Keep your back straight.") is False
    assert repeats.is_repeat("  keep your BACK straight ") is True
    assert repeats.is_repeat("Push your knees out.") is False
    assert repeats.is_repeat("Keep your back straight!") is False  # differs from the previous one
    assert repeats.suppressed == 1
    off = RepeatFilter(enabled=False)
    off.is_repeat("Same")
    assert off.is_repeat("Same") is False
    assert normalise_feedback("Knees, OUT!") == "knees out"


def test_gate_validation() -> None:
    with pytest.raises(ValueError, match="confidence_threshold = 1.5"):
        FeedbackGate(confidence_threshold=1.5)
    with pytest.raises(ValueError, match="min_feedback_interval_s = -1"):
        FeedbackGate(min_feedback_interval_s=-1)
