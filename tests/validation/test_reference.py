"""The reference trajectory: its records are consistent, and teacher-forcing a model on its own trajectory
reproduces it exactly.

``pytest tests/validation/test_reference.py -s``.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine_format.prompt import StreamingPromptIds
from validation.compare import render_table
from validation.reference import (
    OUTPUTS,
    compare_trajectory,
    probe_token_ids,
    reference_frames,
    run_trajectory,
)
from validation.tolerances import tolerance_for


@pytest.fixture(scope="module")
def trajectory(tiny_model):  # noqa: ANN001, ANN201 - (model, ReferenceTrajectory)
    """The tiny model's trajectory over the reference window, 3 steps, a stand-in prompt."""
    rng = np.random.default_rng(0)
    prompt = StreamingPromptIds(*(rng.integers(0, 1000, n).tolist() for n in (52, 3, 16, 2)))
    return tiny_model, run_trajectory(tiny_model, reference_frames(), prompt, 3, probe_token_ids(3, 1000))


def test_trajectory_records(trajectory) -> None:  # noqa: ANN001
    """Shapes follow the geometry; teacher forcing starts at the action query; the greedy tokens are the arg-max of
    the logits they were chosen from; the single-prefill greedy run agrees with the streaming-order window append."""
    _, ref = trajectory
    assert ref.frames.shape == (16, 240, 320, 3) and ref.context_pixels.shape == (16, 3, 224, 224)
    assert ref.selected.shape == (2, 4) and ref.selected_pixels.shape == (8, 3, 224, 224)
    assert ref.teacher_logits.shape == ref.probe_logits.shape == ref.greedy_logits.shape
    assert ref.window_length == 3 + 16 * 144 + 2 * 49 + 16 and ref.system_length == 52
    np.testing.assert_array_equal(ref.teacher_logits[0], ref.window_logits)
    assert ref.greedy_tokens == ref.greedy_logits.argmax(axis=1).tolist() == ref.teacher_tokens
    np.testing.assert_allclose(ref.greedy_logits, ref.teacher_logits, atol=1e-4)
    np.testing.assert_allclose(ref.clip_mean, ref.clip_features.mean(axis=1), rtol=1e-6, atol=1e-6)


def test_self_teacher_reproduces_the_trajectory(trajectory) -> None:  # noqa: ANN001
    """Running the same model teacher-forced on its own trajectory gives every output back within the fp32 gates
    (the stages see exactly the same inputs)."""
    model, ref = trajectory
    out = run_trajectory(model, ref.frames, ref.prompt, ref.steps, ref.probe_tokens, teacher=ref)
    rows = compare_trajectory(ref, {f: getattr(out, f) for _, _, f, _ in OUTPUTS}, tolerance_for("fp32"))
    print(render_table(rows))
    assert [r.output for r in rows] == [name for _, name, _, _ in OUTPUTS]
    assert all(r.passed for r in rows) and max(r.max_abs_err or 0.0 for r in rows) < 1e-4


def test_compare_trajectory_rejects_unknown_fields(trajectory) -> None:  # noqa: ANN001
    """A misspelt output name is an error, not a silently skipped row."""
    _, ref = trajectory
    with pytest.raises(KeyError, match="clip_feature"):
        compare_trajectory(ref, {"clip_feature": ref.clip_features}, tolerance_for("fp32"))
