"""The one compare function of the project: an output against its reference, judged by a :class:`Gate`.

Habit taken from Polygraphy's ``CompareFunc.simple``: every compared output gets the same metrics, the results are
printed as one table (:func:`render_table`), and only then is the verdict drawn (:func:`all_passed`).

Metrics of :func:`compare` (both arrays are read as float64; non-finite backend values count as NaN/Inf and are
zeroed for the other metrics, so one NaN does not hide the rest of the picture):

* ``max_abs_err`` / ``mean_abs_err``: of ``|out - ref|`` over all elements;
* ``max_abs_ref``: ``max |ref|`` (the scale of a relative bound);
* ``mean_token_cosine`` / ``min_token_cosine``: cosine of every vector along the last axis (a token's features, a
  step's logits, a chunk's frame scores); 1 where both vectors are zero, 0 where only one is;
* ``nonfinite``: NaN/Inf count of ``out`` (a NaN/Inf in ``ref`` is reported in the note and fails too);
* with ``top1=True`` (logits ``[..., V]``): the fraction of vectors whose arg-max equals the reference's, and
  whether the reference arg-max is in the output's top 5 for every vector.

A :class:`Gate` passes when ``|out - ref| <= atol + rtol * scale`` (scale ``max |ref|`` of the whole output, or
``|ref|`` per element), the lowest token cosine, the top-1 agreement and the top-5 rule hold, and nothing is NaN/Inf.
``err_ratio`` is the largest ``|out - ref| / (atol + rtol * scale)`` (<= 1 passes), so one column tells how close an
output came to its bound. Discrete results (selected frames, greedy tokens, decisions, texts) use
:func:`compare_exact` and land in the same table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.common import markdown_table

RELATIVE_TO = ("max", "element")


@dataclass(frozen=True)
class Gate:
    """The pass/fail rule of one compared output.

    Attributes:
        atol: Absolute part of the error bound; ``None``: the error is reported, not gated.
        rtol: Relative part, times the scale given by ``relative_to``.
        relative_to: ``"max"`` (``max |ref|`` of the whole output) or ``"element"`` (``|ref|`` of each element).
        min_token_cosine: Lowest per-vector cosine allowed (``None``: not gated).
        min_top1: Lowest top-1 agreement allowed (``None``: not gated; needs ``compare(..., top1=True)``).
        ref_top1_in_top5: The reference arg-max must be in the output's top 5 for every vector.

    Raises:
        ValueError: For a negative bound or an unknown ``relative_to``.
    """

    atol: float | None = 0.0
    rtol: float = 0.0
    relative_to: str = "max"
    min_token_cosine: float | None = None
    min_top1: float | None = None
    ref_top1_in_top5: bool = False

    def __post_init__(self) -> None:
        if self.relative_to not in RELATIVE_TO:
            raise ValueError(f"Gate.relative_to = {self.relative_to!r}: must be one of {RELATIVE_TO}")
        if (self.atol is not None and self.atol < 0) or self.rtol < 0:
            raise ValueError(f"Gate bounds must be >= 0, got atol={self.atol}, rtol={self.rtol}")


EXACT = Gate(atol=0.0, rtol=0.0)
"""Bit-identical outputs (numpy code shared by both sides, integer results)."""


@dataclass
class Comparison:
    """One compared output (a row of the report table).

    Attributes:
        stage: Stage or phase (``image_encoder``, ``decoder``, ``stream``).
        output: Output name (``clip_features``, ``teacher_forced_logits``).
        subject: What was compared with the reference (``onnxruntime fp16``); empty when obvious.
        shape: Shape of the output.
        max_abs_err: ``max |out - ref|`` (None for discrete results).
        mean_abs_err: ``mean |out - ref|``.
        max_abs_ref: ``max |ref|``.
        err_ratio: Largest error / bound (<= 1 passes; None when the error is not gated).
        mean_token_cosine: Mean per-vector cosine.
        min_token_cosine: Lowest per-vector cosine.
        nonfinite: NaN/Inf count of the output.
        top1_agreement: Fraction of vectors with the reference's arg-max (logits only).
        ref_top1_in_top5: The reference arg-max is in the output's top 5 for every vector (logits only).
        passed: Within the gate.
        note: Why it failed, or a remark.
    """

    stage: str
    output: str
    subject: str = ""
    shape: tuple[int, ...] = ()
    max_abs_err: float | None = None
    mean_abs_err: float | None = None
    max_abs_ref: float | None = None
    err_ratio: float | None = None
    mean_token_cosine: float | None = None
    min_token_cosine: float | None = None
    nonfinite: int = 0
    top1_agreement: float | None = None
    ref_top1_in_top5: bool | None = None
    passed: bool = True
    note: str = ""

    def fail(self, problem: str) -> None:
        """Marks the row failed, adding ``problem`` to the note."""
        self.passed = False
        self.note = f"{self.note}; {problem}" if self.note else problem


def token_cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Cosine of every vector along the last axis of two arrays of one shape.

    Args:
        ref: Reference ``[..., D]``.
        out: Output ``[..., D]``.

    Returns:
        Cosines ``[N]`` (float64): 1 where both vectors are zero, 0 where only one is.
    """
    a, b = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    width = a.shape[-1] if a.ndim else 1
    a, b = a.reshape(-1, width), b.reshape(-1, width)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    denom = na * nb
    dot = (a * b).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    return np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), np.where(both_zero, 1.0, 0.0))


def compare(
    stage: str,
    output: str,
    ref: Any,
    out: Any,
    gate: Gate,
    *,
    subject: str = "",
    top1: bool = False,
) -> Comparison:
    """Compares one output with its reference and judges it by ``gate`` (see the module docstring).

    Args:
        stage: Stage name.
        output: Output name.
        ref: Reference array (anything ``np.asarray`` takes; torch tensors must be on the host).
        out: The output, same shape.
        gate: The rule.
        subject: What produced ``out`` (for the table).
        top1: Also measure arg-max agreement along the last axis (logits).

    Returns:
        The result; a shape mismatch is a failed row with the two shapes in the note.
    """
    r = np.asarray(ref, dtype=np.float64)
    o = np.asarray(out, dtype=np.float64)
    row = Comparison(stage, output, subject, tuple(o.shape))
    if r.shape != o.shape:
        row.fail(f"shape {tuple(o.shape)} != reference {tuple(r.shape)}")
        return row
    finite = np.isfinite(o)
    row.nonfinite = int(o.size - np.count_nonzero(finite))
    ref_nonfinite = int(r.size - np.count_nonzero(np.isfinite(r)))
    o = np.where(finite, o, 0.0)
    r = np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
    if r.size == 0:
        row.max_abs_err = row.mean_abs_err = row.max_abs_ref = 0.0
        row.note = "empty"
        return row
    err = np.abs(o - r)
    row.max_abs_err, row.mean_abs_err = float(err.max()), float(err.mean())
    row.max_abs_ref = float(np.abs(r).max())
    cos = token_cosines(r, o)
    row.mean_token_cosine, row.min_token_cosine = float(cos.mean()), float(cos.min())
    if top1:
        rr, oo = r.reshape(-1, r.shape[-1]), o.reshape(-1, o.shape[-1])
        ref_top = rr.argmax(axis=1)
        row.top1_agreement = float(np.mean(oo.argmax(axis=1) == ref_top))
        k = min(5, oo.shape[1])
        top5 = np.argpartition(-oo, k - 1, axis=1)[:, :k]
        row.ref_top1_in_top5 = bool(np.all((top5 == ref_top[:, None]).any(axis=1)))
    _judge(row, err, r, gate, ref_nonfinite)
    return row


def _judge(row: Comparison, err: np.ndarray, ref: np.ndarray, gate: Gate, ref_nonfinite: int) -> None:
    """Applies ``gate`` to a measured row."""
    if row.nonfinite:
        row.fail(f"{row.nonfinite} NaN/Inf")
    if ref_nonfinite:
        row.fail(f"{ref_nonfinite} NaN/Inf in the reference")
    if gate.atol is not None:
        scale = np.abs(ref) if gate.relative_to == "element" else np.float64(row.max_abs_ref)
        bound = gate.atol + gate.rtol * scale
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0), np.where(err > 0, np.inf, 0.0))
        row.err_ratio = float(ratios.max())
        if row.err_ratio > 1.0:
            where = "|ref| per element" if gate.relative_to == "element" else f"max |ref| = {row.max_abs_ref:.3g}"
            row.fail(f"max err {row.max_abs_err:.3g} exceeds {gate.atol:g} + {gate.rtol:g} x {where}")
    if gate.min_token_cosine is not None and row.min_token_cosine is not None:
        if row.min_token_cosine < gate.min_token_cosine:
            row.fail(f"min token cosine {row.min_token_cosine:.6f} < {gate.min_token_cosine}")
    if gate.min_top1 is not None:
        if row.top1_agreement is None:
            raise ValueError(f"{row.stage}.{row.output}: a gate with min_top1 needs compare(..., top1=True)")
        if row.top1_agreement < gate.min_top1:
            row.fail(f"top-1 agreement {row.top1_agreement:.3f} < {gate.min_top1}")
    if gate.ref_top1_in_top5 and row.ref_top1_in_top5 is False:
        row.fail("reference top-1 not in the top 5 at some step")


def first_difference(ref: Sequence[Any], out: Sequence[Any]) -> int | None:
    """Index of the first element where two sequences differ (a length difference counts), or None if equal."""
    for i, (a, b) in enumerate(zip(ref, out, strict=False)):  # a length difference is handled below
        if a != b:
            return i
    return None if len(ref) == len(out) else min(len(ref), len(out))


def compare_exact(stage: str, output: str, ref: Sequence[Any], out: Sequence[Any], *, subject: str = "") -> Comparison:
    """A discrete result (indices, token ids, decisions, texts) that must equal the reference element for element.

    Returns:
        A row without numeric metrics; the note names the first difference.
    """
    row = Comparison(stage, output, subject, (len(out),))
    index = first_difference(ref, out)
    if index is None:
        row.note = "identical"
    else:
        got = out[index] if index < len(out) else "<end>"
        want = ref[index] if index < len(ref) else "<end>"
        row.fail(f"differs at [{index}]: {got!r} != reference {want!r}")
    return row


def top2_margins(logits: Any) -> np.ndarray:
    """Top-1 minus top-2 logit of every vector along the last axis (how close greedy decoding was to a tie).

    Args:
        logits: ``[..., V]`` with V >= 2.

    Returns:
        Margins ``[N]`` float64.
    """
    x = np.asarray(logits, dtype=np.float64)
    x = x.reshape(-1, x.shape[-1])
    top2 = np.partition(x, x.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def compare_tokens(
    stage: str,
    output: str,
    ref: Sequence[int],
    out: Sequence[int],
    ref_margins: Sequence[float],
    near_tie_margin: float | None,
    *,
    subject: str = "",
) -> Comparison:
    """Greedy token sequences: identical, or (with ``near_tie_margin``) first diverging at a near tie.

    Args:
        stage: Stage name.
        output: Output name.
        ref: The reference's greedy ids.
        out: The output's greedy ids.
        ref_margins: The reference's top-1/top-2 logit margin at each step (``ref_margins[i]`` chose ``ref[i]``; one
            more entry when the reference stopped on a stop id after ``ref``).
        near_tie_margin: ``None``: the sequences must be identical; otherwise a divergence passes when the
            reference margin at the first divergent step is below it (later tokens are then free to differ).
        subject: What produced ``out``.

    Returns:
        The row; its note names the first divergence and the reference margin there.
    """
    row = compare_exact(stage, output, list(ref), list(out), subject=subject)
    index = first_difference(list(ref), list(out))
    if index is None:
        return row
    margin = float(ref_margins[index]) if index < len(ref_margins) else None
    where = f"diverges at step {index} (reference margin {_num(margin)})"
    if near_tie_margin is not None and margin is not None and margin < near_tie_margin:
        row.passed, row.note = True, f"{where} < near tie {near_tie_margin:g}"
    else:
        rule = "must be identical" if near_tie_margin is None else f">= near tie {near_tie_margin:g}"
        row.passed, row.note = False, f"{where}, {rule}"
    return row


def all_passed(rows: Sequence[Comparison]) -> bool:
    """The verdict over a table: every row passed (an empty table does not pass)."""
    return bool(rows) and all(r.passed for r in rows)


# ------------------------------------------------------------------------------------------------------ rendering
TABLE_HEADER = (
    "subject",
    "stage",
    "output",
    "shape",
    "max abs err",
    "mean abs err",
    "max abs ref",
    "err/bound",
    "mean cos",
    "min cos",
    "top-1",
    "NaN/Inf",
    "status",
)


def _num(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _status(row: Comparison) -> str:
    if not row.passed:
        return f"**FAIL** {row.note}"
    return f"ok ({row.note})" if row.note else "ok"


def table_cells(row: Comparison) -> list[str]:
    """The cells of one row, in :data:`TABLE_HEADER` order."""
    top1 = "-"
    if row.top1_agreement is not None:
        top1 = f"{row.top1_agreement:.3f}" + ("" if row.ref_top1_in_top5 else " (ref not in top-5)")
    return [
        row.subject or "-",
        row.stage,
        row.output,
        "x".join(str(d) for d in row.shape) or "-",
        _num(row.max_abs_err),
        _num(row.mean_abs_err),
        _num(row.max_abs_ref),
        _num(row.err_ratio, ".3f"),
        _num(row.mean_token_cosine, ".6f"),
        _num(row.min_token_cosine, ".6f"),
        top1,
        str(row.nonfinite),
        _status(row),
    ]


def render_table(rows: Sequence[Comparison]) -> str:
    """A Markdown table of compared outputs (printed before any verdict is drawn).

    The ``subject`` column is left out when no row has one.
    """
    header = list(TABLE_HEADER)
    cells = [[c.replace("|", "\\|") for c in table_cells(r)] for r in rows]  # notes may say |ref|
    if not any(r.subject for r in rows):
        header, cells = header[1:], [c[1:] for c in cells]
    return markdown_table(header, cells)
