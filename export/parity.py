"""``python -m export.parity``: every exported backend against the PyTorch reference, stage by stage.

Usage::

    python -m export.parity --engines engines/tiny [--model DIR --clip DIR] [--steps 16] [--out DIR] [--threads N]

Without ``--model`` the checkpoint recorded in the manifest is used (a missing synthetic one is regenerated from its
preset); its fingerprint must equal the manifest's. The reference is the PyTorch model in fp32 with the sequential
selective scan (``scan_impl="ref"``, the golden yardstick). Backends: ONNX Runtime for every exported precision and
TensorRT for every built precision when ``tensorrt`` and CUDA are available (otherwise reported as skipped, with the
reason).

Inputs: 16 synthetic frames (seeded moving pattern), both preprocessing branches, the streaming prompt of the
manifest. Each stage is fed the reference's own input tensors, so errors do not compound:

* ``image_encoder`` (clip_features, image_tokens), ``frame_selector`` (scores, selected frames), ``video_encoder``
  (video_tokens), ``embed_tokens`` (rows of the prompt ids): max |err|, max |ref|, mean and min per-token cosine.
* decoder, in the streaming order: prefill of the system prompt (Past = 0), append of one window (prefix + 2402
  visual rows + question, Past > 0), then N single-token steps. Teacher-forced on the reference's greedy tokens and
  on N seeded random probe tokens (random weights make greedy decoding repeat one token, so the probes keep top-1
  agreement discriminating): logits error per step, top-1 agreement, reference top-1 within top-5, the
  probabilities of the three action tokens at the action query. Free-running: whether greedy decoding of N tokens
  is identical, and where it first diverges.

Gates: ``export.tolerances``. Writes ``parity.json`` and ``parity.md`` to ``--out`` (default ``<engines>/parity``)
and exits 1 when any backend is outside tolerance (2 for usage or checkpoint problems).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.manifest import Manifest, ManifestError, checkpoint_fingerprint, library_versions, utc_now
from export.tolerances import Tolerance, tolerance_for
from mobile_videogpt.checkpoint import CheckpointError, load_model
from mobile_videogpt.config import ConfigError
from mobile_videogpt.frame_selection import gather_selected_frames
from mobile_videogpt.model import MobileVideoGPT
from mobile_videogpt.synthetic import ensure_synthetic_checkpoint
from runtime.backends.base import BackendError, KVState, ModelBackend

logger = logging.getLogger("export.parity")

EXIT_FAIL = 1
EXIT_USAGE = 2
ACTION_NAMES = ("<next>", "<feedback>", "<correct>")


# --------------------------------------------------------------------------------------------------- metrics
@dataclass
class StageResult:
    """One compared output.

    Attributes:
        stage: Stage name.
        output: Output name.
        max_abs_err: max |backend - ref|.
        max_abs_ref: max |ref|.
        mean_token_cosine: Mean cosine over tokens (vectors along the last axis).
        min_token_cosine: Lowest token cosine.
        nonfinite: NaN/Inf count in the backend output.
        passed: Within tolerance.
        note: Why it failed, or a remark.
    """

    stage: str
    output: str
    max_abs_err: float
    max_abs_ref: float
    mean_token_cosine: float
    min_token_cosine: float
    nonfinite: int
    passed: bool = True
    note: str = ""


def token_cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Cosine of every token vector (last axis) between two arrays of the same shape.

    Args:
        ref: Reference [..., D].
        out: Backend output [..., D].

    Returns:
        Cosines, flattened [N]; 1.0 where both vectors are zero.
    """
    a = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    b = out.reshape(-1, out.shape[-1]).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = (a * b).sum(axis=1)
    denom = na * nb
    return np.where(denom > 0, dot / np.maximum(denom, 1e-300), np.where((na == 0) & (nb == 0), 1.0, 0.0))


def compare_tensor(stage: str, output: str, ref: np.ndarray, out: np.ndarray, tol: Tolerance) -> StageResult:
    """Compares one vision-like output under the precision's vision gates.

    Args:
        stage: Stage name.
        output: Output name.
        ref: Reference.
        out: Backend output.
        tol: Tolerances.

    Returns:
        The result (``passed`` set).
    """
    if ref.shape != out.shape:
        return StageResult(
            stage,
            output,
            float("inf"),
            float(np.abs(ref).max()),
            0.0,
            0.0,
            0,
            False,
            f"shape {out.shape} != reference {ref.shape}",
        )
    out32 = out.astype(np.float32)
    nonfinite = int(np.count_nonzero(~np.isfinite(out32)))
    err = float(np.abs(out32 - ref).max()) if ref.size else 0.0
    ref_max = float(np.abs(ref).max()) if ref.size else 0.0
    cos = token_cosines(ref, np.nan_to_num(out32))
    result = StageResult(stage, output, err, ref_max, float(cos.mean()), float(cos.min()), nonfinite)
    bound = tol.vision_abs + tol.vision_rel_to_max * ref_max
    problems = []
    if nonfinite:
        problems.append(f"{nonfinite} NaN/Inf")
    if err > bound:
        problems.append(f"max err {err:.3g} > {bound:.3g}")
    if result.min_token_cosine < tol.vision_min_token_cosine:
        problems.append(f"min token cosine {result.min_token_cosine:.6f} < {tol.vision_min_token_cosine}")
    result.passed = not problems
    result.note = "; ".join(problems)
    return result


@dataclass
class DecoderResult:
    """Decoder parity over the streaming sequence (prefill, append, N decode steps).

    Attributes:
        steps: Compared steps: the action query, N - 1 steps teacher-forced on the reference's greedy tokens, and N
            steps teacher-forced on seeded random probe tokens.
        distinct_ref_top1: Distinct reference argmax tokens over those steps (how discriminating top-1 agreement is).
        max_abs_logits_err: Largest logits error over all steps.
        max_abs_logits_ref: Largest |ref logit|.
        logits_bound_ratio: max |err| / (abs + rel |ref|) (<= 1 passes; None when not gated).
        top1_agreement: Fraction of steps whose argmax equals the reference's.
        ref_top1_in_top5: Whether the reference top-1 is in the backend's top-5 on every step.
        greedy_identical: Free-running greedy tokens equal the reference's.
        first_divergence: First step where they differ (None if identical).
        ref_margin_at_divergence: Reference top-1/top-2 logit margin at that step.
        ref_tokens: Reference greedy tokens.
        backend_tokens: Backend greedy tokens.
        action_probs_ref: Softmax probability of each action token at the action query (reference).
        action_probs_backend: Same for the backend.
        system_prefill_err: Logits error of the system-prompt prefill (Past = 0).
        nonfinite: NaN/Inf count in the backend logits.
        passed: Within tolerance.
        note: Why it failed.
    """

    steps: int
    distinct_ref_top1: int
    max_abs_logits_err: float
    max_abs_logits_ref: float
    logits_bound_ratio: float | None
    top1_agreement: float
    ref_top1_in_top5: bool
    greedy_identical: bool
    first_divergence: int | None
    ref_margin_at_divergence: float | None
    ref_tokens: list[int]
    backend_tokens: list[int]
    action_probs_ref: dict[str, float]
    action_probs_backend: dict[str, float]
    system_prefill_err: float
    nonfinite: int
    passed: bool = True
    note: str = ""


@dataclass
class BackendReport:
    """Everything measured for one backend.

    Attributes:
        backend: Backend name ("onnxruntime", "tensorrt").
        precision: "fp32" or "fp16".
        skipped: Reason it could not run (None when it ran).
        stages: Stage comparisons.
        decoder: Decoder comparison.
        seconds: Wall time of its run.
        note: Remarks (e.g. CPU fp16 arithmetic).
        passed: All gates passed.
    """

    backend: str
    precision: str
    skipped: str | None = None
    stages: list[StageResult] = field(default_factory=list)
    decoder: DecoderResult | None = None
    seconds: float = 0.0
    note: str = ""
    passed: bool = True


# --------------------------------------------------------------------------------------------------- inputs
def synthetic_frames(n: int = 16, height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """Seeded RGB frames: a bright disc moving over a smooth gradient, plus mild noise.

    Args:
        n: Frames.
        height: Height.
        width: Width.
        seed: Noise seed.

    Returns:
        uint8 [n, height, width, 3].
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    for t in range(n):
        cx, cy = width * (0.2 + 0.6 * t / max(n - 1, 1)), height * (0.5 + 0.25 * np.sin(t / 3))
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < (height / 6) ** 2).astype(np.float32)
        base = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 23 + t / 4)], axis=-1) * 160
        img = base + 90 * disc[..., None] + rng.normal(0, 6, (height, width, 3))
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


@dataclass
class Reference:
    """The reference's inputs and outputs of every stage (numpy, fp32).

    Attributes:
        context_pixels: CLIP-branch pixels [16,3,224,224].
        selected_pixels: Selected video-branch pixels [8,3,224,224].
        clip_features: [16,196,768].
        image_tokens: [16,144,H].
        frame_scores: [2,8].
        selected: [2,4].
        video_tokens: [2,49,H].
        text_ids: Ids whose embedding rows are compared.
        text_rows: Their rows [n,H].
        system_embeds: [1,S0,H].
        window_embeds: [1,S1,H].
        system_logits: Logits after the system prefill [V].
        step_logits: Logits of each compared step [N,V] (action query first).
        probe_tokens: Seeded random token ids fed after the window (teacher forcing with diverse inputs).
        probe_logits: Logits after each probe token [N,V].
        tokens: Greedy tokens [N].
        embed: Reference embedding lookup (for teacher forcing).
    """

    context_pixels: np.ndarray
    selected_pixels: np.ndarray
    clip_features: np.ndarray
    image_tokens: np.ndarray
    frame_scores: np.ndarray
    selected: np.ndarray
    video_tokens: np.ndarray
    text_ids: list[int]
    text_rows: np.ndarray
    system_embeds: np.ndarray
    window_embeds: np.ndarray
    system_logits: np.ndarray
    step_logits: np.ndarray
    tokens: list[int]
    probe_tokens: list[int]
    probe_logits: np.ndarray
    embed: Callable[[Sequence[int]], np.ndarray]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


def run_reference(
    model: MobileVideoGPT, prompt: dict[str, list[int]], steps: int, frames: np.ndarray, text_vocab: int, seed: int = 0
) -> Reference:
    """Runs every stage of the PyTorch reference and greedy-decodes ``steps`` tokens in the streaming order.

    Greedy decoding of random weights tends to repeat one token, which makes "top-1 agreement" on its own steps a
    weak check; so ``steps`` seeded random text tokens are also fed after the window (teacher forcing with diverse
    inputs) and their logits compared too.

    Args:
        model: Reference model (fp32).
        prompt: The manifest's streaming prompt ids.
        steps: Tokens to decode (the first is chosen at the action query).
        frames: uint8 frames [16, H, W, 3].
        text_vocab: Probe tokens are drawn from ``[0, text_vocab)``.
        seed: Probe-token seed.

    Returns:
        The reference record.
    """
    video_px, context_px = model.preprocess(frames)
    clip_features = model.encode_images(context_px)
    image_tokens = model.project_images(clip_features)
    scores = model.score_frames(clip_features)
    selected = model.select_frames(scores)
    selected_px = gather_selected_frames(video_px, selected.cpu())
    video_tokens = model.project_video(model.pool_video(model.encode_video(selected_px)))
    visual = model.merge_visual(image_tokens, video_tokens)
    system = model.embed_tokens(prompt["system_ids"])[None]
    window = model.build_inputs_embeds(prompt["window_prefix_ids"], visual, prompt["window_suffix_ids"])[None]
    p0, s1 = system.shape[1], window.shape[1]
    sys_logits, past = model.decode_step(system, None, torch.arange(p0)[None])
    logits, past = model.decode_step(window, past, torch.arange(p0, p0 + s1)[None])
    after_window = past
    tokens: list[int] = []
    step_logits = []
    position = p0 + s1
    for i in range(steps):
        step_logits.append(_np(logits[0]))
        tokens.append(int(torch.argmax(logits[0])))
        if i + 1 < steps:
            logits, past = model.decode_step(model.embed_tokens([tokens[-1]])[None], past, torch.tensor([[position]]))
            position += 1
    probe_tokens = [int(t) for t in np.random.default_rng(seed).integers(0, text_vocab, steps)]
    probe_logits, past = [], after_window
    for i, token in enumerate(probe_tokens):
        logits, past = model.decode_step(model.embed_tokens([token])[None], past, torch.tensor([[p0 + s1 + i]]))
        probe_logits.append(_np(logits[0]))
    text_ids = sorted(set(prompt["system_ids"] + prompt["window_prefix_ids"] + prompt["window_suffix_ids"] + tokens))
    return Reference(
        context_pixels=_np(context_px),
        selected_pixels=_np(selected_px),
        clip_features=_np(clip_features),
        image_tokens=_np(image_tokens),
        frame_scores=_np(scores),
        selected=selected.cpu().numpy().astype(np.int64),
        video_tokens=_np(video_tokens),
        text_ids=text_ids,
        text_rows=_np(model.embed_tokens(text_ids)),
        system_embeds=_np(system),
        window_embeds=_np(window),
        system_logits=_np(sys_logits[0]),
        step_logits=np.stack(step_logits),
        tokens=tokens,
        probe_tokens=probe_tokens,
        probe_logits=np.stack(probe_logits),
        embed=lambda ids: _np(model.embed_tokens(list(ids))),
    )


# --------------------------------------------------------------------------------------------------- checks
def _softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - x.max()
    e = np.exp(z)
    return e / e.sum()


def check_frame_selector(backend: ModelBackend, ref: Reference, tol: Tolerance) -> list[StageResult]:
    """Frame scores and selection; a differing selection passes only at a near tie within the score error."""
    scores, selected = backend.select_frames(ref.clip_features)
    result = compare_tensor("frame_selector", "frame_scores", ref.frame_scores, scores, tol)
    bound = tol.score_rel_to_max * result.max_abs_ref
    problems = (
        []
        if result.max_abs_err <= bound and not result.nonfinite
        else [f"score err {result.max_abs_err:.3g} > {bound:.3g}"]
    )
    result.min_token_cosine = result.mean_token_cosine = float(token_cosines(ref.frame_scores, scores).min())
    same = np.array_equal(np.asarray(selected, dtype=np.int64), ref.selected)
    sel = StageResult(
        "frame_selector", "selected_frames", 0.0 if same else 1.0, 0.0, 1.0, 1.0, 0, True, "identical" if same else ""
    )
    if not same:
        ordered = np.sort(ref.frame_scores, axis=-1)[:, ::-1]
        k = ref.selected.shape[1]
        gap = float((ordered[:, k - 1] - ordered[:, k]).min())
        if gap <= 2 * result.max_abs_err:
            sel.note = f"differs at a near tie (score gap {gap:.3g} <= 2 x score error)"
        else:
            sel.passed = False
            sel.note = f"selection {np.asarray(selected).tolist()} != reference {ref.selected.tolist()} (gap {gap:.3g})"
    result.passed = not problems
    result.note = "; ".join(problems)
    return [result, sel]


def check_decoder(backend: ModelBackend, ref: Reference, tol: Tolerance) -> DecoderResult:
    """Runs the streaming sequence on the backend, teacher-forced and free-running (see the module docstring)."""
    p0, s1 = ref.system_embeds.shape[1], ref.window_embeds.shape[1]
    sys_logits, past = backend.decode(ref.system_embeds, None, np.arange(p0, dtype=np.int64)[None])
    logits, after_window = backend.decode(ref.window_embeds, past, np.arange(p0, p0 + s1, dtype=np.int64)[None])
    steps = len(ref.tokens)
    # Teacher-forced on the reference tokens.
    got: list[np.ndarray] = []
    state: KVState = after_window
    for i in range(steps):
        got.append(logits[0].astype(np.float32))
        if i + 1 < steps:
            pos = np.array([[p0 + s1 + i]], dtype=np.int64)
            logits, state = backend.decode(ref.embed([ref.tokens[i]])[None], state, pos)
    state = after_window
    for i, token in enumerate(ref.probe_tokens):
        logits, state = backend.decode(ref.embed([token])[None], state, np.array([[p0 + s1 + i]], dtype=np.int64))
        got.append(logits[0].astype(np.float32))
    teacher = np.stack(got)  # [2N, V]: greedy-teacher steps, then probe steps
    expected = np.concatenate([ref.step_logits, ref.probe_logits])
    # Free-running greedy from the same window state, with the backend's own embedding rows.
    tokens: list[int] = [int(np.argmax(teacher[0]))]
    state = after_window
    for i in range(1, steps):
        pos = np.array([[p0 + s1 + i - 1]], dtype=np.int64)
        step_logits, state = backend.decode(backend.embed_tokens([tokens[-1]])[None], state, pos)
        tokens.append(int(np.argmax(step_logits[0])))

    err = np.abs(teacher - expected)
    nonfinite = int(np.count_nonzero(~np.isfinite(teacher)) + np.count_nonzero(~np.isfinite(sys_logits)))
    ratio = None
    if tol.logits_abs is not None:
        ratio = float((err / (tol.logits_abs + tol.logits_rel * np.abs(expected))).max())
    top1 = teacher.argmax(axis=1) == expected.argmax(axis=1)
    top5 = np.argsort(-teacher, axis=1)[:, :5]
    in_top5 = all(int(r) in set(t.tolist()) for r, t in zip(expected.argmax(axis=1), top5))
    divergence = next((i for i, (a, b) in enumerate(zip(tokens, ref.tokens)) if a != b), None)
    margin = None
    if divergence is not None:
        top2 = np.sort(ref.step_logits[divergence])[-2:]
        margin = float(top2[1] - top2[0])
    action_ids = backend.action_token_ids.ids if backend.action_token_ids else ()
    p_ref, p_out = _softmax(ref.step_logits[0]), _softmax(teacher[0])
    result = DecoderResult(
        steps=len(teacher),
        distinct_ref_top1=len(set(expected.argmax(axis=1).tolist())),
        max_abs_logits_err=float(err.max()),
        max_abs_logits_ref=float(np.abs(expected).max()),
        logits_bound_ratio=ratio,
        top1_agreement=float(top1.mean()),
        ref_top1_in_top5=in_top5,
        greedy_identical=divergence is None,
        first_divergence=divergence,
        ref_margin_at_divergence=margin,
        ref_tokens=list(ref.tokens),
        backend_tokens=tokens,
        action_probs_ref={n: float(p_ref[i]) for n, i in zip(ACTION_NAMES, action_ids)},
        action_probs_backend={n: float(p_out[i]) for n, i in zip(ACTION_NAMES, action_ids)},
        system_prefill_err=float(np.abs(sys_logits[0] - ref.system_logits).max()),
        nonfinite=nonfinite,
    )
    problems = []
    if nonfinite:
        problems.append(f"{nonfinite} NaN/Inf logits")
    if ratio is not None and ratio > 1.0:
        problems.append(
            f"logits error {result.max_abs_logits_err:.3g} exceeds {tol.logits_abs} + {tol.logits_rel}|ref|"
        )
    if result.top1_agreement < tol.top1_agreement:
        problems.append(f"top-1 agreement {result.top1_agreement:.3f} < {tol.top1_agreement}")
    if tol.ref_top1_in_top5 and not in_top5:
        problems.append("reference top-1 not in the backend's top-5 at some step")
    if divergence is not None:
        if tol.greedy_identical:
            problems.append(f"greedy tokens differ from step {divergence}")
        elif margin is not None and margin >= tol.near_tie_margin:
            problems.append(
                f"greedy tokens differ at step {divergence} where the reference margin {margin:.3f} >= "
                f"{tol.near_tie_margin}"
            )
    result.passed = not problems
    result.note = "; ".join(problems)
    return result


def check_backend(backend: ModelBackend, ref: Reference) -> BackendReport:
    """All stage checks of one backend."""
    tol = tolerance_for(backend.precision)
    report = BackendReport(backend.name, backend.precision)
    start = time.perf_counter()
    images = backend.encode_images(ref.context_pixels)
    report.stages.append(compare_tensor("image_encoder", "clip_features", ref.clip_features, images.clip_features, tol))
    report.stages.append(compare_tensor("image_encoder", "image_tokens", ref.image_tokens, images.image_tokens, tol))
    report.stages.extend(check_frame_selector(backend, ref, tol))
    video = backend.encode_video(ref.selected_pixels)
    report.stages.append(compare_tensor("video_encoder", "video_tokens", ref.video_tokens, video, tol))
    rows = backend.embed_tokens(ref.text_ids)
    report.stages.append(compare_tensor("embed_tokens", "rows", ref.text_rows, rows, tol))
    report.decoder = check_decoder(backend, ref, tol)
    report.seconds = time.perf_counter() - start
    report.passed = all(s.passed for s in report.stages) and report.decoder.passed
    return report


# --------------------------------------------------------------------------------------------------- backends
def backend_factories(manifest: Manifest, threads: int) -> list[tuple[str, str, Callable[[], ModelBackend] | str]]:
    """Backends to run: ``(name, precision, factory or skip reason)``."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    entries: list[tuple[str, str, Callable[[], ModelBackend] | str]] = []
    for precision in manifest.precisions:
        entries.append(
            (
                "onnxruntime",
                precision,
                lambda p=precision: OnnxRuntimeBackend(manifest.root, precision=p, intra_op_threads=threads),
            )
        )
    built = sorted(manifest.data.get("tensorrt", {}))
    for precision in built or manifest.precisions:
        reason = tensorrt_unavailable_reason()
        if reason is None and not built:
            reason = "no TensorRT engines in the manifest (python -m export --tensorrt)"
        if reason is not None:
            entries.append(("tensorrt", precision, reason))
        else:
            from runtime.backends.tensorrt_backend import TensorRTBackend

            entries.append(("tensorrt", precision, lambda p=precision: TensorRTBackend(manifest.root, precision=p)))
    return entries


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None."""
    from export.tensorrt_builder import TensorRTUnavailable, import_tensorrt

    try:
        import_tensorrt()
    except TensorRTUnavailable as exc:
        return str(exc)
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


# --------------------------------------------------------------------------------------------------- report
def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def markdown_report(reports: list[BackendReport], header: dict[str, Any]) -> str:
    """The parity tables as Markdown."""
    lines = [
        f"# Parity: {header['engines']}",
        "",
        f"- machine: {header['machine']}",
        f"- date: {header['date']}",
        f"- command: `{header['command']}`",
        f"- checkpoint: {header['checkpoint']}{' (RANDOM WEIGHTS)' if header['random_weights'] else ''}",
        f"- reference: PyTorch fp32, scan_impl={header['reference_scan']}; tolerances: export/tolerances.py",
        "",
        "## Stages",
        "",
        (
            "| backend | precision | stage | output | max abs err | max abs ref | mean token cos | min token cos "
            "| status |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        if r.skipped:
            lines.append(f"| {r.backend} | {r.precision} | - | - | - | - | - | - | skipped: {r.skipped} |")
            continue
        for s in r.stages:
            status = "ok" if s.passed else f"**FAIL** {s.note}"
            if s.passed and s.note:
                status = f"ok ({s.note})"
            lines.append(
                f"| {r.backend} | {r.precision} | {s.stage} | {s.output} | {_fmt(s.max_abs_err)} "
                f"| {_fmt(s.max_abs_ref)} "
                f"| {s.mean_token_cosine:.6f} | {s.min_token_cosine:.6f} | {status} |"
            )
    lines += [
        "",
        "## Decoder (system prefill, window append, teacher-forced and greedy decode)",
        "",
        (
            "| backend | precision | steps (distinct ref top-1) | max abs logits err | max abs ref | top-1 agree "
            "| ref top-1 in top-5 "
            "| greedy identical | P(<next>,<feedback>,<correct>) ref | same, backend | status |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        if r.skipped or r.decoder is None:
            continue
        d = r.decoder
        greedy = (
            "yes"
            if d.greedy_identical
            else f"no (step {d.first_divergence}, ref margin {_fmt(d.ref_margin_at_divergence)})"
        )
        pr = ", ".join(f"{v:.3g}" for v in d.action_probs_ref.values())
        pb = ", ".join(f"{v:.3g}" for v in d.action_probs_backend.values())
        status = "ok" if d.passed else f"**FAIL** {d.note}"
        lines.append(
            f"| {r.backend} | {r.precision} | {d.steps} ({d.distinct_ref_top1}) | {_fmt(d.max_abs_logits_err)} "
            f"| {_fmt(d.max_abs_logits_ref)} "
            f"| {d.top1_agreement:.3f} | {'yes' if d.ref_top1_in_top5 else 'no'} | {greedy} | {pr} | {pb} | {status} |"
        )
    notes = [f"- {r.backend} {r.precision}: {r.note}" for r in reports if r.note]
    if notes:
        lines += ["", "## Notes", "", *notes]
    verdict = "PASS" if all(r.passed for r in reports if not r.skipped) else "FAIL"
    lines += ["", f"**{verdict}**", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- main
def machine_description() -> str:
    """CPU model, core count, torch threads and GPU (if any), for reports."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {gpu}"


def resolve_checkpoint(manifest: Manifest, model: Path | None, clip: Path | None) -> tuple[Path, Path]:
    """The checkpoint to compare against: the arguments, or the manifest's (regenerating a missing synthetic one).

    Raises:
        CheckpointError: If it is missing and not regenerable, or its fingerprint differs from the manifest's.
    """
    source = manifest.data["source"]
    if model is None:
        model, clip = Path(source["model_dir"]), Path(source["clip_dir"])
        if not (model / "config.json").is_file() and source.get("preset"):
            if model.parent != clip.parent or model.name != "model" or clip.name != "clip":
                raise CheckpointError(f"cannot regenerate preset {source['preset']} into {model} / {clip}")
            logger.info("regenerating the synthetic %s checkpoint in %s", source["preset"], model.parent)
            ensure_synthetic_checkpoint(source["preset"], model.parent)
    if clip is None:
        raise CheckpointError("--model needs --clip")
    if not (model / "config.json").is_file():
        raise CheckpointError(f"checkpoint {model} does not exist; pass --model/--clip")
    found = checkpoint_fingerprint(model, clip)["sha256"]
    if found != source.get("sha256"):
        raise CheckpointError(
            f"checkpoint {model} + {clip} has fingerprint {found[:12]}..., but {manifest.root} was exported from "
            f"{source.get('sha256', '?')[:12]}... ({source.get('model_dir')}); "
            "re-export or pass the right --model/--clip"
        )
    return model, clip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m export.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=Path, required=True, help="engines directory (manifest.json)")
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: the manifest's)")
    parser.add_argument("--clip", type=Path, help="CLIP directory (with --model)")
    parser.add_argument("--steps", type=int, default=16, help="decoded tokens compared (>= 1)")
    parser.add_argument("--out", type=Path, help="report directory (default: <engines>/parity)")
    parser.add_argument("--threads", type=int, default=0, help="torch and onnxruntime threads (0 = defaults)")
    parser.add_argument("--ref-scan", default="ref", help="reference selective-scan implementation")
    parser.add_argument("--seed", type=int, default=0, help="synthetic-frame seed")
    args = parser.parse_args(argv)
    if (args.model is None) != (args.clip is None):
        parser.error("--model and --clip go together")
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (defaults to sys.argv).

    Returns:
        0 when every available backend is within tolerance, 1 otherwise, 2 for usage/checkpoint errors.
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        manifest = Manifest.load(args.engines)
        model_dir, clip_dir = resolve_checkpoint(manifest, args.model, args.clip)
        model = load_model(model_dir, clip_dir, scan_impl=args.ref_scan, extend_vocab=True)
    except (ManifestError, CheckpointError, ConfigError, ValueError) as exc:
        print(f"parity: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if model.vocab_size != manifest.vocab_size:
        print(f"parity: reference has {model.vocab_size} rows, the engines {manifest.vocab_size}", file=sys.stderr)
        return EXIT_USAGE
    start = time.perf_counter()
    ref = run_reference(
        model,
        manifest.data["streaming_prompt_ids"],
        args.steps,
        synthetic_frames(seed=args.seed),
        text_vocab=int(manifest.model.get("tokenizer_size", manifest.vocab_size)),
        seed=args.seed,
    )
    logger.info("reference ran in %.1f s", time.perf_counter() - start)
    reports: list[BackendReport] = []
    for name, precision, factory in backend_factories(manifest, args.threads):
        if isinstance(factory, str):
            reports.append(BackendReport(name, precision, skipped=factory))
            logger.warning("%s %s skipped: %s", name, precision, factory)
            continue
        try:
            backend = factory()
        except BackendError as exc:
            reports.append(BackendReport(name, precision, skipped=None, passed=False, note=f"could not start: {exc}"))
            continue
        report = check_backend(backend, ref)
        if name == "onnxruntime" and precision == "fp16":
            report.note = (
                "CPU provider: fp16 weights and KV cache, but the fp16 products run in fp32 (onnxruntime drops "
                "the fp16 cast pairs on CPU); fp16 arithmetic is checked by export/gpu_check.py and TensorRT"
            )
        backend.close()
        reports.append(report)
        logger.info("%s %s: %s in %.1f s", name, precision, "ok" if report.passed else "FAIL", report.seconds)
    header = {
        "engines": str(args.engines),
        "machine": machine_description(),
        "date": utc_now(),
        "command": "python -m export.parity " + " ".join(argv if argv is not None else sys.argv[1:]),
        "checkpoint": f"{model_dir} + {clip_dir}",
        "random_weights": manifest.random_weights,
        "reference_scan": args.ref_scan,
        "libraries": library_versions(),
    }
    out = args.out or args.engines / "parity"
    out.mkdir(parents=True, exist_ok=True)
    ran = [r for r in reports if not r.skipped]
    ok = bool(ran) and all(r.passed for r in ran)
    payload = {**header, "passed": ok, "backends": [asdict(r) for r in reports]}
    (out / "parity.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = markdown_report(reports, header)
    (out / "parity.md").write_text(md)
    print(md)
    if not ran:
        print("parity: no backend could run", file=sys.stderr)
    return 0 if ok else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
