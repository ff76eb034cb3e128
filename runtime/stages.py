"""The per-window stages: small objects with one ``process(work)`` method, run in order by the session.

Each stage reads and fills fields of one :class:`WindowWork` record (nothing else is passed between stages):

1. :class:`ImageStage`: the window's frames handed to the backend once (``upload_frames``), CLIP-branch
   preprocessing and ``encode_images`` of the sampled frames not in the
   :class:`~runtime.feature_cache.FrameFeatureCache` (consecutive windows share frames).
2. :class:`FrameSelectStage`: ``select_frames`` on the 16 frames' CLIP features.
3. :class:`VideoStage`: video-branch preprocessing of the 8 selected frames and ``encode_video``.
4. :class:`DecoderStage`: the window's turn appended to the :class:`~runtime.context.DecoderContext`; the logits at
   the action query and their three action-token entries.
5. :class:`DecisionStage`: the policy (model: softmax over the three action logits; or a rule-based policy), then
   the :class:`~runtime.policies.FeedbackGate`.
6. :class:`FeedbackStage`: on ``<feedback>`` only, greedy generation continuing the same KV context after the
   ``<feedback>`` token (with the checkpoint's repetition penalty over the generated ids, when it sets one),
   streamed as ``FeedbackToken`` events.

The model geometry (frames, chunks, rows per frame) comes from the backend's ``facts``, never from constants here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine_format.vocab import FEEDBACK, ActionTokenIds
from runtime.backends.base import Array, ModelBackend
from runtime.context import DecoderContext
from runtime.events import Event, FeedbackFinished, FeedbackStarted, FeedbackToken
from runtime.feature_cache import FrameFeatureCache
from runtime.frames import Frame
from runtime.generation import GreedyState, LogitsProcessor, greedy_decode
from runtime.policies import ActionDecision, ActionPolicy, FeedbackGate, GateResult, PolicyContext, RepeatFilter, WindowFeatures
from runtime.windowing import Window


class TextStreamLike(Protocol):
    """Incremental detokenisation (``engine_format.tokenizer.TextStream``)."""

    text: str

    def push(self, token_id: int) -> str: ...


class TokenizerLike(Protocol):
    """What the session needs from a tokenizer (``engine_format.tokenizer.Tokenizer`` satisfies it)."""

    def encode(self, text: str) -> list[int]: ...

    def single_token_id(self, token: str, where: str) -> int: ...

    def text_stream(self, skip_special_tokens: bool = True) -> TextStreamLike: ...


@dataclass
class Timings:
    """Per-stage milliseconds of one window (filled as the stages run)."""

    ms: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        """Adds ``ms`` to ``stage`` (preprocessing happens in two places)."""
        self.ms[stage] = self.ms.get(stage, 0.0) + ms

    def clock(self, stage: str) -> _Clock:
        """A context manager adding the time it encloses to ``stage``."""
        return _Clock(self, stage)


class _Clock:
    def __init__(self, timings: Timings, stage: str) -> None:
        self.timings, self.stage = timings, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings.add(self.stage, (time.perf_counter() - self.start) * 1e3)


@dataclass
class WindowWork:
    """One window on its way through the stages.

    Attributes:
        window: The window.
        frames: Its sampled frames (``num_frames``, in time order).
        timings: Per-stage milliseconds.
        uploaded: The window's frames as the backend holds them (``upload_frames``; both branches read them).
        clip_features: CLIP features ``[F, 196, E]`` (backend arrays).
        image_tokens: Image-ETP rows ``[F, 144, H]`` (backend arrays).
        clip_mean: Mean CLIP feature per frame ``[F, E]`` (host).
        selected: Selected frames per chunk ``[C, K]``.
        video_tokens: Video-ETP rows ``[C, 49, H]`` (backend arrays).
        logits: Decoder logits at the action query ``[V]``.
        action_logits: Their ``<next>``, ``<feedback>``, ``<correct>`` entries ``[3]``.
        decision: The gated decision.
    """

    window: Window
    frames: list[Frame]
    timings: Timings = field(default_factory=Timings)
    uploaded: Any = None
    clip_features: Array | None = None
    image_tokens: Array | None = None
    clip_mean: np.ndarray | None = None
    selected: np.ndarray | None = None
    video_tokens: Array | None = None
    logits: np.ndarray | None = None
    action_logits: np.ndarray | None = None
    decision: GateResult | None = None


class ImageStage:
    """CLIP-branch preprocessing + ``encode_images`` with a per-frame cache (missing frames in one batch).

    Args:
        backend: The model backend (its ``clip_preprocess`` values are the checkpoint's).
        cache: Frame index -> ``(clip_features [196,E], image_tokens [144,H], clip_mean [E])``.
    """

    def __init__(self, backend: ModelBackend, cache: FrameFeatureCache[tuple[Array, Array, np.ndarray]]) -> None:
        self.backend, self.cache = backend, cache

    def process(self, work: WindowWork) -> None:
        """Fills ``clip_features``, ``image_tokens`` and ``clip_mean``."""
        position = {f.index: i for i, f in enumerate(work.frames)}
        with work.timings.clock("preprocess"):
            work.uploaded = self.backend.upload_frames([f.image for f in work.frames])

        def compute(missing: list[int]) -> list[tuple[Array, Array, np.ndarray]]:
            with work.timings.clock("preprocess"):
                pixels = self.backend.preprocess_images(work.uploaded, [position[i] for i in missing])
            with work.timings.clock("image_encoder"):
                out = self.backend.encode_images(pixels)
            return [(out.clip_features[j], out.image_tokens[j], out.clip_mean[j]) for j in range(len(missing))]

        work.timings.add("image_encoder", 0.0)  # reported even when every frame was cached
        rows = self.cache.get_or_compute([f.index for f in work.frames], compute)
        work.clip_features = self.backend.stack([r[0] for r in rows])
        work.image_tokens = self.backend.stack([r[1] for r in rows])
        work.clip_mean = np.stack([r[2] for r in rows])


class FrameSelectStage:
    """``select_frames``: top K of each chunk by CLIP attention mass."""

    def __init__(self, backend: ModelBackend) -> None:
        self.backend = backend

    def process(self, work: WindowWork) -> None:
        """Fills ``selected`` ``[C, K]`` (ascending within each chunk)."""
        with work.timings.clock("frame_selection"):
            _, selected = self.backend.select_frames(work.clip_features)
        work.selected = np.asarray(selected, dtype=np.int64)


class VideoStage:
    """Video-branch preprocessing of the selected frames + ``encode_video``."""

    def __init__(self, backend: ModelBackend) -> None:
        self.backend = backend

    def process(self, work: WindowWork) -> None:
        """Fills ``video_tokens`` ``[C, 49, H]``."""
        assert work.selected is not None
        chunk = self.backend.facts.chunk_size
        slots = (np.arange(work.selected.shape[0])[:, None] * chunk + work.selected).reshape(-1)  # chunk-major
        with work.timings.clock("preprocess"):
            if work.uploaded is None:  # run without ImageStage (checks): hand the frames over here
                work.uploaded = self.backend.upload_frames([f.image for f in work.frames])
            pixels = self.backend.preprocess_video(work.uploaded, [int(s) for s in slots])
        with work.timings.clock("video_encoder"):
            work.video_tokens = self.backend.encode_video(pixels)


class DecoderStage:
    """Appends the window's visual rows to the decoder context; takes the logits at the action query.

    Args:
        context: The decoder context.
        action_ids: Ids of the action tokens (their logits decide the action).
        visual_rows: Visual rows per window (2402 at the release geometry).
    """

    def __init__(self, context: DecoderContext, action_ids: ActionTokenIds, visual_rows: int) -> None:
        self.context, self.action_ids, self.visual_rows = context, action_ids, visual_rows

    def process(self, work: WindowWork) -> None:
        """Fills ``logits`` and ``action_logits``."""
        with work.timings.clock("decoder_append"):
            logits = self.context.append_window(work.window, [work.image_tokens, work.video_tokens], self.visual_rows)
        work.logits = logits
        work.action_logits = np.asarray([logits[i] for i in self.action_ids.ids], dtype=np.float32)


class DecisionStage:
    """Policy then gate.

    Args:
        policy: Any :class:`~runtime.policies.ActionPolicy`.
        gate: The feedback gate.
    """

    def __init__(self, policy: ActionPolicy, gate: FeedbackGate) -> None:
        self.policy, self.gate = policy, gate
        self.context = PolicyContext()

    def process(self, work: WindowWork) -> None:
        """Fills ``decision``."""
        features = WindowFeatures(
            window=work.window,
            frames=[f.image for f in work.frames],
            frame_embeddings=work.clip_mean,
            action_logits=work.action_logits,
        )
        with work.timings.clock("action_decision"):
            decision = self.policy.decide(features, self.context)
            gated = self.gate.apply(decision, work.window.t_end)
            self.context.update(features, ActionDecision(gated.action, gated.confidence))
        work.decision = gated


@dataclass(frozen=True)
class FeedbackResult:
    """One generated feedback.

    Attributes:
        window_index: The window that asked for it.
        text: The decoded text (stop tokens excluded).
        token_ids: Generated ids (a final stop token excluded).
        ttft_ms: From the start of generation (feeding ``<feedback>``) to the first token.
        tokens_per_s: Decoding speed after the first token (0 with fewer than 2 tokens).
        suppressed: Dropped as a repeat of the previous feedback.
    """

    window_index: int
    text: str
    token_ids: list[int]
    ttft_ms: float
    tokens_per_s: float
    suppressed: bool


class FeedbackStage:
    """Greedy feedback generation after ``<feedback>``, in the same KV context, streamed as events.

    Args:
        context: The decoder context (the window that asked for feedback is its last one).
        tokenizer: Detokenises the text incrementally.
        max_new_tokens: Upper bound on generated tokens.
        stop_ids: Ids that end the text (configured stop tokens plus the action tokens).
        action_ids: Ids of the action tokens.
        repeats: Repeat suppression.
        publish: Event sink.
        processors: Logits processors before each arg-max (``GenerationSettings.processors()``: the repetition
            penalty over this feedback's generated ids; none = plain arg-max).
    """

    def __init__(
        self,
        context: DecoderContext,
        tokenizer: TokenizerLike,
        max_new_tokens: int,
        stop_ids: Collection[int],
        action_ids: ActionTokenIds,
        repeats: RepeatFilter,
        publish: Callable[[Event], Any],
        processors: Sequence[LogitsProcessor] = (),
    ) -> None:
        self.context, self.tokenizer = context, tokenizer
        self.max_new_tokens, self.stop_ids = max_new_tokens, frozenset(stop_ids)
        self.processors = tuple(processors)
        self.feedback_id = action_ids.id_of(FEEDBACK)
        self.repeats, self.publish = repeats, publish

    def process(self, work: WindowWork) -> FeedbackResult:
        """Generates, streams and returns one feedback for the window."""
        window = work.window
        self.publish(FeedbackStarted(window.index, window.t_end))
        start = time.perf_counter()
        logits = self.context.extend([self.feedback_id])
        stream = self.tokenizer.text_stream()
        state = GreedyState()
        pieces = 0
        first_at = last_at = start
        tokens = greedy_decode(logits, self.context.extend, self.max_new_tokens, self.stop_ids, state, self.processors)
        for step, token in enumerate(tokens):
            last_at = time.perf_counter()
            if step == 0:
                first_at = last_at
            piece = stream.push(token)  # incremental: no re-decode of the text so far
            if piece:
                self.publish(FeedbackToken(window.index, piece, pieces))
                pieces += 1
        if state.stopped:
            last_at = time.perf_counter()
            if not state.ids:
                first_at = last_at
        ttft_ms = (first_at - start) * 1e3
        n_after_first = len(state.ids) + (1 if state.stopped else 0) - 1
        tps = n_after_first / (last_at - first_at) if n_after_first > 0 and last_at > first_at else 0.0
        text = stream.text.strip()
        suppressed = self.repeats.is_repeat(text)
        result = FeedbackResult(window.index, text, list(state.ids), ttft_ms, tps, suppressed)
        self.publish(FeedbackFinished(window.index, text, len(state.ids), ttft_ms, tps, suppressed))
        self.context.end_feedback(state.ids[-1] if state.last_unfed else None, window.index)
        return result

