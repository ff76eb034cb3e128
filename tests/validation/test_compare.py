"""The one compare function: hand-computed metrics, gates, discrete checks and the table.

``pytest tests/validation/test_compare.py -s``.
"""

from __future__ import annotations

import numpy as np
import pytest

from validation.compare import (
    EXACT,
    Comparison,
    Gate,
    all_passed,
    compare,
    compare_exact,
    compare_tokens,
    render_table,
    token_cosines,
    top2_margins,
)
from validation.tolerances import tolerance_for


def test_metrics_by_hand() -> None:
    """ref [[1,0],[0,1]], out [[1,0],[0,2]]: |err| [[0,0],[0,1]] -> max 1, mean 0.25; both vectors parallel -> cos 1."""
    row = compare("s", "o", np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 2.0]]), Gate(atol=1.0))
    print(render_table([row]))
    assert (row.max_abs_err, row.mean_abs_err, row.max_abs_ref) == (1.0, 0.25, 1.0)
    assert (row.mean_token_cosine, row.min_token_cosine) == pytest.approx((1.0, 1.0))
    assert row.shape == (2, 2) and row.nonfinite == 0 and row.err_ratio == 1.0 and row.passed


def test_max_relative_bound_fails_with_the_numbers_in_the_note() -> None:
    """The bound is atol + rtol * max |ref|: 0.25 + 0.25 * 1 = 0.5 < 1, ratio 2."""
    row = compare("s", "o", np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 2.0]]),
                  Gate(atol=0.25, rtol=0.25))
    assert not row.passed and row.err_ratio == pytest.approx(2.0)
    assert row.note == "max err 1 exceeds 0.25 + 0.25 x max |ref| = 1"


def test_element_relative_bound() -> None:
    """Per element |err| <= 1e-3 + 1e-3 |ref|: errors 0.01 at |ref| 10 (bound 0.011) and 5e-4 at 0 (bound 1e-3)."""
    gate = Gate(atol=1e-3, rtol=1e-3, relative_to="element")
    row = compare("s", "o", np.array([10.0, 0.0]), np.array([10.01, 5e-4]), gate)
    assert row.passed and row.err_ratio == pytest.approx(0.01 / 0.011, rel=1e-6)
    row = compare("s", "o", np.array([10.0, 0.0]), np.array([10.0, 2e-3]), gate)
    assert not row.passed and row.err_ratio == pytest.approx(2.0) and "|ref| per element" in row.note


def test_exact_gate_and_ungated_error() -> None:
    """EXACT fails on any difference (ratio inf); atol=None reports the error without gating it."""
    assert compare("s", "o", np.zeros(3), np.zeros(3), EXACT).passed
    row = compare("s", "o", np.zeros(3), np.array([0.0, 1e-9, 0.0]), EXACT)
    assert not row.passed and row.err_ratio == float("inf")
    row = compare("s", "o", np.zeros(3), np.ones(3), Gate(atol=None))
    assert row.passed and row.err_ratio is None and row.max_abs_err == 1.0


def test_token_cosines_by_hand() -> None:
    """Orthogonal 0, opposite -1, both zero 1, one zero 0."""
    ref = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    out = np.array([[0.0, 1.0], [-1.0, -1.0], [0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(token_cosines(ref, out), [0.0, -1.0, 1.0, 0.0], atol=1e-12)


def test_min_token_cosine_gate() -> None:
    """One token at cosine 0.6 (ref [1,0], out [0.6, 0.8]) fails a 0.99 cosine gate, the others are fine."""
    row = compare("s", "o", np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.6, 0.8], [0.0, 1.0]]),
                  Gate(atol=None, min_token_cosine=0.99))
    assert row.min_token_cosine == pytest.approx(0.6) and row.mean_token_cosine == pytest.approx(0.8)
    assert not row.passed and row.note == "min token cosine 0.600000 < 0.99"


def test_nonfinite_values_fail_and_do_not_poison_the_metrics() -> None:
    """A NaN and an Inf in the output are counted, zeroed for the other metrics, and fail the row."""
    row = compare("s", "o", np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, np.inf]), Gate(atol=None))
    assert row.nonfinite == 2 and not row.passed and row.note.startswith("2 NaN/Inf")
    assert row.max_abs_err == 3.0 and np.isfinite(row.mean_token_cosine)
    row = compare("s", "o", np.array([np.nan, 1.0]), np.array([0.0, 1.0]), Gate(atol=None))
    assert not row.passed and "1 NaN/Inf in the reference" in row.note


def test_shape_mismatch_is_a_failed_row() -> None:
    """Different shapes: no metrics, the two shapes in the note."""
    row = compare("s", "o", np.zeros((2, 3)), np.zeros((3, 2)), Gate())
    assert not row.passed and row.note == "shape (3, 2) != reference (2, 3)" and row.max_abs_err is None


def test_top1_agreement_and_top5_rule() -> None:
    """Two steps, one arg-max differs (agreement 0.5); then a reference arg-max ranked 6th in a 7-wide output."""
    ref = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    out = np.array([[0.0, 2.0, 1.0], [2.0, 1.0, 0.0]])
    row = compare("d", "logits", ref, out, Gate(atol=None, min_top1=1.0), top1=True)
    assert row.top1_agreement == 0.5 and row.ref_top1_in_top5 and not row.passed
    assert row.note == "top-1 agreement 0.500 < 1.0"
    ref7 = np.array([[9.0, 0, 0, 0, 0, 0, 0]])
    out7 = np.array([[1.0, 7, 6, 5, 4, 3, 0]])  # index 0 is 6th of 7
    row = compare("d", "logits", ref7, out7, Gate(atol=None, ref_top1_in_top5=True), top1=True)
    assert row.ref_top1_in_top5 is False and not row.passed and "not in the top 5" in row.note


def test_top1_gate_needs_top1_measured() -> None:
    """A gate asking for top-1 agreement on a compare without ``top1=True`` is a programming error."""
    with pytest.raises(ValueError, match="needs compare"):
        compare("d", "logits", np.zeros((1, 3)), np.zeros((1, 3)), Gate(min_top1=1.0))


def test_gate_rejects_bad_values() -> None:
    """Unknown relative_to and negative bounds are refused by name."""
    with pytest.raises(ValueError, match="relative_to"):
        Gate(relative_to="mean")
    with pytest.raises(ValueError, match="must be >= 0"):
        Gate(atol=-1.0)


def test_compare_exact() -> None:
    """Equal sequences pass; the first difference (or a length difference) is named."""
    assert compare_exact("s", "ids", [1, 2, 3], [1, 2, 3]).note == "identical"
    row = compare_exact("s", "ids", [1, 2, 3], [1, 5, 3])
    assert not row.passed and row.note == "differs at [1]: 5 != reference 2"
    row = compare_exact("s", "ids", [1, 2], [1, 2, 3])
    assert not row.passed and row.note == "differs at [2]: 3 != reference '<end>'"


def test_compare_tokens_near_tie_rule() -> None:
    """A divergence passes only under a near-tie margin where the reference's margin at that step is below it."""
    ref, out, margins = [4, 5, 6], [4, 7, 8], [2.0, 0.1, 3.0]
    assert compare_tokens("d", "greedy", ref, ref, margins, None).passed
    row = compare_tokens("d", "greedy", ref, out, margins, 0.5)
    assert row.passed and row.note == "diverges at step 1 (reference margin 0.1) < near tie 0.5"
    row = compare_tokens("d", "greedy", ref, out, [2.0, 0.9, 3.0], 0.5)
    assert not row.passed and row.note == "diverges at step 1 (reference margin 0.9), >= near tie 0.5"
    row = compare_tokens("d", "greedy", ref, out, margins, None)
    assert not row.passed and "must be identical" in row.note


def test_top2_margins_by_hand() -> None:
    """Top-1 minus top-2 per vector."""
    np.testing.assert_allclose(top2_margins(np.array([[1.0, 3.0, 2.0], [5.0, 5.0, 0.0]])), [1.0, 0.0])


def test_render_table() -> None:
    """One header, one separator and one line per row; FAIL rows say why; pipes in notes are escaped; the subject
    column appears only when a row has a subject."""
    rows = [
        compare("image_encoder", "clip_features", np.ones((2, 4)), np.ones((2, 4)), Gate(atol=0.0)),
        compare("decoder", "logits", np.array([[0.0, 1.0]]), np.array([[0.0, 3.0]]),
                Gate(atol=0.0, rtol=0.5, relative_to="element"), top1=True),
        compare_exact("frame_selector", "selected_frames", [0, 1], [0, 1]),
    ]
    text = render_table(rows)
    print(text)
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[0].startswith("| stage | output | shape | max abs err") and "subject" not in lines[0]
    assert "| image_encoder | clip_features | 2x4 | 0 | 0 | 1 | 0.000 | 1.000000 | 1.000000 | - | 0 | ok |" in text
    assert "**FAIL** max err 2 exceeds 0 + 0.5 x \\|ref\\| per element" in lines[3]
    assert lines[4].endswith("| ok (identical) |")
    with_subject = render_table([Comparison("s", "o", "onnxruntime fp16")])
    assert with_subject.splitlines()[0].startswith("| subject |") and "| onnxruntime fp16 |" in with_subject
    assert not all_passed([]) and all_passed(rows[:1]) and not all_passed(rows)


def test_tolerances_hand_out_the_documented_gates() -> None:
    """fp32 vision: cosine 0.9999, 1e-4 + 1e-3 max|ref|; fp16 logits: error not gated, top-1 0.99, top-5 rule."""
    fp32, fp16 = tolerance_for("fp32"), tolerance_for("fp16")
    assert fp32.vision == Gate(atol=1e-4, rtol=1e-3, min_token_cosine=0.9999)
    assert fp32.logits == Gate(atol=1e-3, rtol=1e-3, relative_to="element", min_top1=1.0, ref_top1_in_top5=True)
    assert fp16.logits.atol is None and fp16.logits.min_top1 == 0.99 and fp16.logits.ref_top1_in_top5
    assert fp16.logits_values.min_top1 is None
    with pytest.raises(ValueError, match="no tolerances for precision 'fp8'"):
        tolerance_for("fp8")
