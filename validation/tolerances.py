"""Parity tolerances: the one documented place the parity harness, the GPU numerics check and the tests read them from.

Reference = the PyTorch model in fp32 (same weights, same input tensors fed to every backend). Values follow
``/work/shared/reference/deployment_anchors.md`` §7b:

fp32 backends (ONNX Runtime fp32, TensorRT fp32 without TF32) must match to near machine precision:
    * vision stages: per-token cosine >= 0.9999 for every token, and max |err| <= 1e-4 + 1e-3 * max |ref|;
    * frame scores: max |err| <= 1e-3 * max |ref| and the selected frames identical (a near tie within the score
      error is reported, not failed);
    * decoder logits, teacher-forced: |err| <= 1e-3 * (1 + |ref|) per element; top-1 agreement 100 %;
      greedy decoding of N tokens identical.
fp16 backends (fp16 graphs with fp32 islands: ONNX Runtime fp16, TensorRT fp16):
    * vision stages: per-token cosine >= 0.999 for every token, and max |err| <= 5e-2 * max |ref|;
    * frame scores as fp32 (the frame selector is an fp32 graph in both precisions);
    * decoder, teacher-forced: top-1 agreement >= 99 %, reference top-1 within the backend's top-5 on every
      step; greedy decoding may diverge only at a near tie (reference top-1/top-2 logit margin < 0.5 at the first
      divergent step).
All backends: no NaN or Inf anywhere.

Random-weight checkpoints give flat logits and near ties; the near-tie rule above is what keeps the fp16 greedy gate
meaningful for them. The same rule judges the feedback texts of the end-to-end streaming check.

Each :class:`Tolerance` hands out the :class:`~validation.compare.Gate` of one kind of output (``vision``,
``scores``, ``logits``), so every comparison goes through :func:`validation.compare.compare`.
"""

from __future__ import annotations

from dataclasses import dataclass

from validation.compare import Gate


@dataclass(frozen=True)
class Tolerance:
    """Gates of one backend precision.

    Attributes:
        vision_min_token_cosine: Lowest per-token cosine allowed on vision outputs.
        vision_abs: Absolute part of the vision max-error bound.
        vision_rel_to_max: Relative part, times max |ref| of the stage.
        score_rel_to_max: Frame-score max error, times max |ref|.
        logits_abs: Decoder logits bound ``logits_abs + logits_rel * |ref|`` per element (None: not gated).
        logits_rel: See ``logits_abs``.
        top1_agreement: Minimum teacher-forced top-1 agreement (fraction of steps).
        ref_top1_in_top5: Whether the reference top-1 must be in the backend's top-5 on every step.
        greedy_identical: Whether free-running greedy tokens must equal the reference exactly.
        near_tie_margin: Otherwise, the first divergence must occur where the reference top-1/top-2 margin is below
            this.
    """

    vision_min_token_cosine: float
    vision_abs: float
    vision_rel_to_max: float
    score_rel_to_max: float
    logits_abs: float | None
    logits_rel: float
    top1_agreement: float
    ref_top1_in_top5: bool
    greedy_identical: bool
    near_tie_margin: float

    @property
    def vision(self) -> Gate:
        """Vision outputs (CLIP features, image/video tokens) and embedding rows: cosine and max-relative bound."""
        return Gate(atol=self.vision_abs, rtol=self.vision_rel_to_max, min_token_cosine=self.vision_min_token_cosine)

    @property
    def scores(self) -> Gate:
        """Frame scores: max error relative to max |ref| (the selection itself is compared exactly)."""
        return Gate(atol=0.0, rtol=self.score_rel_to_max)

    @property
    def logits(self) -> Gate:
        """Decoder logits ``[steps, V]``: per-element bound (fp32), top-1 agreement and the top-5 rule."""
        return Gate(
            atol=self.logits_abs,
            rtol=self.logits_rel,
            relative_to="element",
            min_top1=self.top1_agreement,
            ref_top1_in_top5=self.ref_top1_in_top5,
        )

    @property
    def logits_values(self) -> Gate:
        """A few selected logits (the three action tokens): the per-element bound only, no arg-max rule.

        The tiny synthetic model's three action rows are identical, so their logits tie exactly and an arg-max
        among them would only measure rounding.
        """
        return Gate(atol=self.logits_abs, rtol=self.logits_rel, relative_to="element")


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(
        vision_min_token_cosine=0.9999,
        vision_abs=1e-4,
        vision_rel_to_max=1e-3,
        score_rel_to_max=1e-3,
        logits_abs=1e-3,
        logits_rel=1e-3,
        top1_agreement=1.0,
        ref_top1_in_top5=True,
        greedy_identical=True,
        near_tie_margin=0.0,
    ),
    "fp16": Tolerance(
        vision_min_token_cosine=0.999,
        vision_abs=0.0,
        vision_rel_to_max=5e-2,
        score_rel_to_max=1e-3,
        logits_abs=None,
        logits_rel=0.0,
        top1_agreement=0.99,
        ref_top1_in_top5=True,
        greedy_identical=False,
        near_tie_margin=0.5,
    ),
}


def tolerance_for(precision: str) -> Tolerance:
    """The gates of one precision.

    Args:
        precision: "fp32" or "fp16".

    Returns:
        The tolerance.

    Raises:
        ValueError: For an unknown precision.
    """
    if precision not in TOLERANCES:
        raise ValueError(f"no tolerances for precision {precision!r}; known: {sorted(TOLERANCES)}")
    return TOLERANCES[precision]
