"""The reference trajectory: every stage of the PyTorch model run once on one window, recorded as numpy.

:func:`run_trajectory` is the one reference runner of the parity harness and the GPU numerics check. It runs, in the
streaming order of the runtime (``runtime.context.DecoderContext``):

1. both preprocessing branches of the frames (``MobileVideoGPT.preprocess``);
2. the image encoder (CLIP features, their per-frame mean, image tokens), the frame scores and the top-K selection,
   the video encoder on the selected frames (video tokens), and the embedding rows of every prompt id;
3. the decoder on a preallocated cache (``MobileVideoGPT.forward_cached``): the system prefill (past = 0), the
   window append (prefix ids + the visual rows + suffix ids, past > 0) whose logits are the action query, then
   teacher forcing on the greedy tokens (all in one call, ``all_logits``) and, from the same window state, on
   seeded probe tokens (random weights make greedy decoding repeat one token, so the probes keep top-1 agreement
   discriminating);
4. free greedy decoding of the same prompt through the reference's one greedy loop, ``MobileVideoGPT.generate``.

With ``teacher`` (another trajectory) every stage takes the teacher's inputs instead of its own (context pixels,
selected frames, visual rows, greedy tokens, probes), so the errors of a model under test do not compound from one
stage to the next: this is how the GPU numerics check runs its fp16 modes against the fp32 trajectory.

Dimensions: F frames, C chunks of T, K kept per chunk, P patches, E CLIP width, H hidden, V vocabulary rows,
N = ``steps``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine_format.prompt import StreamingPromptIds
from mobile_videogpt.frame_selection import gather_selected_frames
from mobile_videogpt.model import MobileVideoGPT
from runtime.sources.scene import SquatScene
from validation.compare import EXACT, Comparison, compare, compare_exact, compare_tokens, top2_margins
from validation.tolerances import Tolerance

logger = logging.getLogger(__name__)

#: The reference window: 16 frames of the squat scene at 8 fps (one 2 s window) from t = 3 s, when the squats start.
FRAMES_FPS = 8.0
FRAMES_START = 24


def reference_frames(seed: int = 0) -> np.ndarray:
    """The 16 frames the parity harness and the GPU numerics check feed: uint8 ``[16, 240, 320, 3]``."""
    return SquatScene(seed=seed).frames(16, fps=FRAMES_FPS, start=FRAMES_START)


@dataclass(frozen=True)
class ReferenceTrajectory:
    """Every recorded tensor of one window (numpy, float32 unless noted).

    Attributes:
        frames: The input frames, uint8 ``[F, h, w, 3]``.
        prompt: The streaming prompt ids.
        video_pixels: Video-branch pixels ``[F, 3, 224, 224]``.
        context_pixels: CLIP-branch pixels ``[F, 3, 224, 224]``.
        clip_features: ``[F, P, E]``.
        clip_mean: Mean CLIP feature per frame ``[F, E]`` (the motion policy's embedding).
        image_tokens: ``[F, 144, H]``.
        frame_scores: ``[C, T]``.
        selected: Kept frames per chunk, int64 ``[C, K]`` ascending.
        selected_pixels: Video-branch pixels of the kept frames in slot order ``[C*K, 3, 224, 224]``.
        video_tokens: ``[C, 49, H]``.
        text_ids: Every prompt, greedy and probe id, sorted (the teacher's with ``teacher``).
        text_rows: Their embedding rows ``[n, H]``.
        system_logits: Logits after the system prefill ``[V]``.
        window_logits: Logits at the action query after the window append ``[V]``.
        teacher_tokens: Ids fed after the window in teacher forcing (the teacher's greedy tokens, else its own).
        teacher_logits: The action-query logits, then the logits after each of the first N-1 teacher tokens ``[N, V]``.
        probe_tokens: Seeded ids fed after the window.
        probe_logits: Logits after each probe token ``[N, V]``.
        greedy_tokens: Free greedy decoding of N tokens after the window (``generate``).
        greedy_logits: The logits each greedy token was chosen from ``[N, V]``.
    """

    frames: np.ndarray
    prompt: StreamingPromptIds
    video_pixels: np.ndarray
    context_pixels: np.ndarray
    clip_features: np.ndarray
    clip_mean: np.ndarray
    image_tokens: np.ndarray
    frame_scores: np.ndarray
    selected: np.ndarray
    selected_pixels: np.ndarray
    video_tokens: np.ndarray
    text_ids: list[int]
    text_rows: np.ndarray
    system_logits: np.ndarray
    window_logits: np.ndarray
    teacher_tokens: list[int]
    teacher_logits: np.ndarray
    probe_tokens: list[int]
    probe_logits: np.ndarray
    greedy_tokens: list[int]
    greedy_logits: np.ndarray

    @property
    def steps(self) -> int:
        """N, decoded tokens per decoder check."""
        return len(self.greedy_tokens)

    @property
    def system_length(self) -> int:
        """Positions of the system prefill."""
        return len(self.prompt.system_ids)

    @property
    def window_length(self) -> int:
        """Positions of the window append."""
        p = self.prompt
        return len(p.window_prefix_ids) + self.image_tokens.shape[0] * self.image_tokens.shape[1] + (
            self.video_tokens.shape[0] * self.video_tokens.shape[1]
        ) + len(p.window_suffix_ids)


def probe_token_ids(steps: int, vocab: int, seed: int = 0) -> list[int]:
    """``steps`` seeded token ids in ``[0, vocab)`` (the probes of teacher forcing)."""
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, steps)]


def _host(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


@torch.no_grad()
def run_trajectory(
    model: MobileVideoGPT,
    frames: np.ndarray,
    prompt: StreamingPromptIds,
    steps: int,
    probe_tokens: list[int],
    *,
    teacher: ReferenceTrajectory | None = None,
) -> ReferenceTrajectory:
    """Runs every stage of ``model`` once on one window (see the module docstring).

    Args:
        model: The model (any dtype/device; outputs are recorded as float32 on the host).
        frames: RGB uint8 frames ``[F, h, w, 3]``.
        prompt: The streaming prompt ids.
        steps: N >= 1, tokens decoded and teacher-forced.
        probe_tokens: N ids for the probe steps.
        teacher: Feed each stage this trajectory's inputs instead of this model's own (its frames, prompt, probes
            and step count replace the arguments).

    Returns:
        The recorded trajectory.

    Raises:
        ValueError: If ``steps`` < 1 or the probes are not ``steps`` ids.
    """
    if teacher is not None:
        frames, prompt, probe_tokens, steps = teacher.frames, teacher.prompt, teacher.probe_tokens, teacher.steps
    if steps < 1 or len(probe_tokens) != steps:
        raise ValueError(f"steps = {steps} must be >= 1 with as many probe tokens (got {len(probe_tokens)})")
    device = model.device
    video_px, context_px = model.preprocess(frames)
    if teacher is not None:
        context_px = torch.from_numpy(teacher.context_pixels)
    clip = model.encode_images(context_px.to(device))
    image_tokens = model.project_images(clip)
    scores = model.score_frames(clip)
    selected = model.select_frames(scores)
    if teacher is not None:
        selected_px = torch.from_numpy(teacher.selected_pixels)
    else:
        selected_px = gather_selected_frames(video_px, selected.cpu())
    video_tokens = model.project_video(model.pool_video(model.encode_video(selected_px.to(device))))
    if teacher is not None:  # the decoder sees the teacher's visual rows
        visual = model.merge_visual(torch.from_numpy(teacher.image_tokens), torch.from_numpy(teacher.video_tokens))
    else:
        visual = model.merge_visual(image_tokens, video_tokens)

    system = model.embed_tokens(prompt.system_ids)[None]
    window = model.build_inputs_embeds(prompt.window_prefix_ids, visual, prompt.window_suffix_ids)[None]
    greedy_tokens, greedy_logits = model.generate(torch.cat([system, window], dim=1), steps)
    teacher_tokens = list(teacher.greedy_tokens) if teacher is not None else list(greedy_tokens)

    cache = model.allocate_cache(system.shape[1] + window.shape[1] + steps)
    system_logits = model.forward_cached(system, cache)[0]
    window_logits = model.forward_cached(window, cache)[0]
    after_window = cache.length
    forced = [window_logits[None]]
    if steps > 1:
        fed = model.embed_tokens(teacher_tokens[: steps - 1])[None]
        forced.append(model.forward_cached(fed, cache, all_logits=True)[0])
    cache.set_length(after_window)  # the probes continue from the same window state
    probe_logits = model.forward_cached(model.embed_tokens(probe_tokens)[None], cache, all_logits=True)[0]

    if teacher is not None:  # the same rows as the teacher's, whatever this model decoded
        text_ids = list(teacher.text_ids)
    else:
        text_ids = sorted(
            set(prompt.system_ids)
            | set(prompt.window_prefix_ids)
            | set(prompt.window_suffix_ids)
            | set(prompt.turn_end_ids)
            | set(greedy_tokens)
            | set(probe_tokens)
        )
    logger.debug("reference trajectory: %d + %d positions, %d steps", system.shape[1], window.shape[1], steps)
    return ReferenceTrajectory(
        frames=np.asarray(frames),
        prompt=prompt,
        video_pixels=_host(video_px),
        context_pixels=_host(context_px),
        clip_features=_host(clip),
        clip_mean=_host(clip.float().mean(dim=1)),
        image_tokens=_host(image_tokens),
        frame_scores=_host(scores),
        selected=selected.cpu().numpy().astype(np.int64),
        selected_pixels=_host(selected_px),
        video_tokens=_host(video_tokens),
        text_ids=text_ids,
        text_rows=_host(model.embed_tokens(text_ids)),
        system_logits=_host(system_logits),
        window_logits=_host(window_logits),
        teacher_tokens=teacher_tokens,
        teacher_logits=_host(torch.cat(forced, dim=0)),
        probe_tokens=list(probe_tokens),
        probe_logits=_host(probe_logits),
        greedy_tokens=list(greedy_tokens),
        greedy_logits=_host(greedy_logits),
    )


def compare_selection(
    ref: ReferenceTrajectory, selected: np.ndarray, score_error: float | None, *, subject: str = ""
) -> Comparison:
    """The kept frames: identical to the reference's, or different only at a near tie within the score error.

    Args:
        ref: The reference (its scores and selection).
        selected: The selection under test ``[C, K]``.
        score_error: Max |score error| of the same output (None: unknown, no near-tie allowance).
        subject: What produced ``selected``.
    """
    chosen = np.asarray(selected, dtype=np.int64)
    row = compare_exact("frame_selector", "selected_frames", ref.selected.reshape(-1).tolist(),
                        chosen.reshape(-1).tolist(), subject=subject)
    k = ref.selected.shape[1]
    if not row.passed and k < ref.frame_scores.shape[1] and score_error is not None:
        ordered = np.sort(ref.frame_scores, axis=-1)[:, ::-1]
        gap = float((ordered[:, k - 1] - ordered[:, k]).min())
        if gap <= 2 * score_error:
            row.passed, row.note = True, f"differs at a near tie (score gap {gap:.3g} <= 2 x score error)"
        else:
            row.note += f" (score gap {gap:.3g})"
    return row


#: Every compared output of a trajectory: ``(stage, row name, ReferenceTrajectory field, kind of gate)``.
OUTPUTS: tuple[tuple[str, str, str, str], ...] = (
    ("preprocess", "context_pixels", "context_pixels", "exact"),
    ("image_encoder", "clip_features", "clip_features", "vision"),
    ("image_encoder", "clip_mean", "clip_mean", "vision"),
    ("image_encoder", "image_tokens", "image_tokens", "vision"),
    ("frame_selector", "frame_scores", "frame_scores", "scores"),
    ("frame_selector", "selected_frames", "selected", "selection"),
    ("video_encoder", "video_tokens", "video_tokens", "vision"),
    ("embed_tokens", "rows", "text_rows", "vision"),
    ("decoder", "system_prefill", "system_logits", "logits"),
    ("decoder", "action_query", "window_logits", "logits"),
    ("decoder", "teacher_forced_greedy", "teacher_logits", "logits"),
    ("decoder", "teacher_forced_probes", "probe_logits", "logits"),
    ("decoder", "free_greedy", "greedy_tokens", "greedy"),
)


def compare_trajectory(
    ref: ReferenceTrajectory, out: Mapping[str, Any], tol: Tolerance, *, subject: str = ""
) -> list[Comparison]:
    """Compares recorded outputs with the reference under one precision's gates, in :data:`OUTPUTS` order.

    Args:
        ref: The reference trajectory.
        out: Field name -> the output under test (host arrays; token lists); absent fields are not compared.
            ``teacher_logits`` rows are compared from step 1 (step 0 is ``window_logits``, its own row).
        tol: The gates.
        subject: What produced ``out``.

    Returns:
        One row per present field.

    Raises:
        KeyError: For a field of ``out`` that is not in :data:`OUTPUTS`.
    """
    known = {f for _, _, f, _ in OUTPUTS}
    unknown = sorted(set(out) - known)
    if unknown:
        raise KeyError(f"not trajectory outputs: {unknown} (known: {sorted(known)})")
    gates = {"exact": EXACT, "vision": tol.vision, "scores": tol.scores, "logits": tol.logits}
    rows: list[Comparison] = []
    score_error: float | None = None
    for stage, name, fld, kind in OUTPUTS:
        if fld not in out:
            continue
        expected, got = getattr(ref, fld), out[fld]
        if kind == "selection":
            rows.append(compare_selection(ref, got, score_error, subject=subject))
        elif kind == "greedy":
            near_tie = None if tol.greedy_identical else tol.near_tie_margin
            margins = top2_margins(ref.greedy_logits).tolist()
            rows.append(compare_tokens(stage, name, expected, list(got), margins, near_tie, subject=subject))
        elif kind == "logits":
            expected, got = np.asarray(expected), np.asarray(got)
            if fld == "teacher_logits":
                if ref.steps < 2:
                    continue
                expected, got = expected[1:], got[1:]
            elif expected.ndim == 1:
                expected, got = expected[None], got[None]
            rows.append(compare(stage, name, expected, got, gates[kind], subject=subject, top1=True))
        else:
            rows.append(compare(stage, name, expected, got, gates[kind], subject=subject))
            if fld == "frame_scores":
                score_error = rows[-1].max_abs_err
    return rows
