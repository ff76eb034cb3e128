"""End-to-end check: the real streaming session (``runtime.session.StreamSession``) on every backend, window by window.

The parity harness compares stages with teacher forcing; this check runs what a user runs. The same consecutive
windows of the synthetic squat scene (``runtime.sources.scene.SquatScene``) go through a ``StreamSession`` on the
PyTorch backend (the reference: the checkpoint the engines were exported from) and on each exported backend, and the
results are compared window by window:

* the logits at each window's action query ``[W, V]`` and their three action-token entries ``[W, 3]``
  (:func:`validation.compare.compare` under the precision's logits gates);
* the decisions with the context bookkeeping (action, cached tokens, windows in the context) — identical;
* every generated feedback: its greedy token ids under the near-tie rule of the tolerances (the reference's
  top-1/top-2 margins are recorded for every decoder call), and the text.

The policy must not depend on the logits, so that every backend walks the same path through the session:
:func:`stream_config` uses ``every_n`` and a feedback-gate interval of 0. With ``n = 2`` four windows cover a first
append, feedback generation, the clear after feedback, an append to the cleared context, an append carrying the
previous turn's deferred closing tokens, and a second feedback. ``n = 3`` with ``max_windows = 2`` (the parity CLI's
default) adds an eviction whose later window is re-based (``KVCache.drop`` + ``shift_positions``) before the third
window's append and its feedback.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.backends.base import Array, ImageFeatures, ModelBackend, Segment
from runtime.backends.kv import KVCache
from runtime.config import StreamingConfig, config_from_dict
from runtime.frames import Frame
from runtime.session import StreamSession
from runtime.sources.scene import SquatScene
from runtime.windowing import Window, WindowScheduler
from validation.compare import Comparison, compare, compare_exact, compare_tokens, top2_margins
from validation.tolerances import Tolerance

logger = logging.getLogger(__name__)

STREAM_FPS = 30.0


def stream_config(
    max_new_tokens: int, max_windows: int | None = None, every_n: int = 2, base: StreamingConfig | None = None
) -> StreamingConfig:
    """The session configuration of the check (see the module docstring); other keys keep ``base``'s values.

    Args:
        max_new_tokens: Feedback length bound (``generation.max_new_tokens``).
        max_windows: ``context.max_windows`` (default: ``base``'s).
        every_n: Feedback on every n-th window (``policy.every_n.n``).
        base: Starting configuration (default: the runtime's defaults, so the prompt instruction is the runtime's).

    Raises:
        runtime.config.ConfigError: For an invalid value.
    """
    data = (base or StreamingConfig()).to_dict()
    data["policy"]["name"] = "every_n"
    data["policy"]["every_n"]["n"] = every_n
    if max_windows is not None:
        data["context"]["max_windows"] = max_windows
    data["decision"]["min_feedback_interval_s"] = 0.0
    data["generation"]["max_new_tokens"] = max_new_tokens
    return config_from_dict(data)


@dataclass(frozen=True)
class StreamPlan:
    """What every backend's session runs on.

    Attributes:
        config: The session configuration (:func:`stream_config`).
        windows: The windows, in order.
        frames: The frames inside each window (consecutive windows share their overlapping frames, same indices).
    """

    config: StreamingConfig
    windows: list[Window]
    frames: list[list[Frame]]


def stream_plan(config: StreamingConfig, windows: int, seed: int = 0) -> StreamPlan:
    """The first ``windows`` windows of the synthetic squat scene at 30 fps (from t = 0) and the frames in each."""
    scheduler = WindowScheduler(config.window.window_s, config.window.overlap_s)
    scheduler.set_origin(0.0)
    chosen = [scheduler.window(k) for k in range(windows)]
    scene = SquatScene(seed=seed)
    count = int(math.floor(chosen[-1].t_end * STREAM_FPS + 1e-6)) + 1
    frames = [Frame(i, i / STREAM_FPS, scene.render(i / STREAM_FPS, i)) for i in range(count)]
    inside = [[f for f in frames if w.t_start - 1e-9 <= f.timestamp <= w.t_end + 1e-9] for w in chosen]
    return StreamPlan(config, chosen, inside)


class _MarginRecorder(ModelBackend):
    """Delegates to a backend and records the top-1/top-2 margin of every ``decode`` (the reference's near ties)."""

    def __init__(self, inner: ModelBackend) -> None:
        self.inner = inner
        for attr in (
            "name",
            "precision",
            "device",
            "facts",
            "clip_preprocess",
            "action_token_ids",
            "random_weights",
            "tokenizer_dir",
        ):
            setattr(self, attr, getattr(inner, attr))
        self.margins: list[float] = []

    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        return self.inner.encode_images(context_pixels)

    def select_frames(self, clip_features: Array) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.select_frames(clip_features)

    def encode_video(self, video_pixels: np.ndarray) -> Array:
        return self.inner.encode_video(video_pixels)

    def allocate_kv(self, capacity: int) -> KVCache:
        return self.inner.allocate_kv(capacity)

    def decode(self, segments: Sequence[Segment], kv: KVCache) -> np.ndarray:
        logits = self.inner.decode(segments, kv)
        self.margins.append(float(top2_margins(logits)[0]))
        return logits

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        return self.inner.embed_tokens(ids)

    def stack(self, arrays: Sequence[Array]) -> Array:
        return self.inner.stack(arrays)

    def to_host(self, array: Array) -> np.ndarray:
        return self.inner.to_host(array)


@dataclass
class StreamRecord:
    """What one backend's session did over the windows.

    Attributes:
        subject: ``backend precision``.
        decisions: Per window ``(window index, action, context tokens, context windows)``.
        window_logits: Logits at each window's action query ``[W, V]``.
        action_logits: Their action-token entries ``[W, 3]``.
        feedback_tokens: Window index -> generated ids (stop id excluded).
        feedback_texts: Window index -> text.
        feedback_margins: Window index -> the reference margin of each generation step (reference runs only).
        evictions: Context evictions by reason.
        clears: Context clears by reason.
    """

    subject: str
    decisions: list[tuple[int, str, int, int]] = field(default_factory=list)
    window_logits: np.ndarray | None = None
    action_logits: np.ndarray | None = None
    feedback_tokens: dict[int, list[int]] = field(default_factory=dict)
    feedback_texts: dict[int, str] = field(default_factory=dict)
    feedback_margins: dict[int, list[float]] = field(default_factory=dict)
    evictions: dict[str, int] = field(default_factory=dict)
    clears: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """JSON-ready summary (no arrays)."""
        return {
            "subject": self.subject,
            "decisions": [list(d) for d in self.decisions],
            "feedback_texts": {str(k): v for k, v in self.feedback_texts.items()},
            "feedback_tokens": {str(k): v for k, v in self.feedback_tokens.items()},
            "evictions": self.evictions,
            "clears": self.clears,
        }


def run_stream(backend: ModelBackend, plan: StreamPlan, *, record_margins: bool = False) -> StreamRecord:
    """Runs a fresh ``StreamSession`` over the plan's windows on ``backend``.

    Args:
        backend: Any backend (its own tokenizer is used).
        plan: Configuration, windows and frames.
        record_margins: Record the top-1/top-2 margin of every decoder call (the reference run).

    Returns:
        The record.

    Raises:
        runtime.backends.BackendError: If the backend fails.
        runtime.config.ConfigError: If the configuration does not fit the model.
    """
    recorder = _MarginRecorder(backend) if record_margins else None
    session = StreamSession(plan.config, recorder or backend, backend.load_tokenizer())
    session.start()
    record = StreamRecord(f"{backend.name} {backend.precision}")
    logits, actions = [], []
    for window, inside in zip(plan.windows, plan.frames, strict=True):
        if recorder is not None:
            recorder.margins.clear()
        outcome = session.step(window, inside)
        d = outcome.decided
        record.decisions.append((d.window_index, d.action, d.context_tokens, d.context_windows))
        assert outcome.work.logits is not None and outcome.work.action_logits is not None  # set by DecoderStage
        logits.append(np.asarray(outcome.work.logits, dtype=np.float32))
        actions.append(np.asarray(outcome.work.action_logits, dtype=np.float32))
        if outcome.feedback is not None:
            record.feedback_tokens[window.index] = list(outcome.feedback.token_ids)
            record.feedback_texts[window.index] = outcome.feedback.text
            if recorder is not None:  # call 0 is the window append; then one call per generation step
                record.feedback_margins[window.index] = recorder.margins[1:]
    record.window_logits, record.action_logits = np.stack(logits), np.stack(actions)
    record.evictions = dict(session.context.evictions)
    record.clears = dict(session.context.clears)
    logger.info("%s: %d windows, decisions %s", record.subject, len(plan.windows), [d[1] for d in record.decisions])
    return record


def compare_streams(ref: StreamRecord, out: StreamRecord, tol: Tolerance) -> list[Comparison]:
    """Rows comparing one backend's session with the reference's (see the module docstring)."""
    rows = [
        compare("stream", "action_query_logits", ref.window_logits, out.window_logits, tol.logits, subject=out.subject,
                top1=True),
        compare("stream", "action_logits", ref.action_logits, out.action_logits, tol.logits_values,
                subject=out.subject),
        compare_exact("stream", "decisions", ref.decisions, out.decisions, subject=out.subject),
    ]
    near_tie = None if tol.greedy_identical else tol.near_tie_margin
    for index in sorted(set(ref.feedback_tokens) | set(out.feedback_tokens)):
        name = f"feedback_tokens[w{index}]"
        if index not in out.feedback_tokens or index not in ref.feedback_tokens:
            row = Comparison("stream", name, out.subject)
            row.fail("feedback generated by only one of reference and backend")
            rows.append(row)
            continue
        rows.append(
            compare_tokens(
                "stream",
                name,
                ref.feedback_tokens[index],
                out.feedback_tokens[index],
                ref.feedback_margins.get(index, []),
                near_tie,
                subject=out.subject,
            )
        )
    return rows
