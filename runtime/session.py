"""``StreamSession``: the synchronous per-window step every consumer runs.

The webcam CLI and the demo run it through :class:`~runtime.engine.StreamingEngine` (capture and inference threads);
the benchmarks (CPU and GPU), the parity harness's end-to-end check and training's data checks call it directly:

    session = StreamSession(config, backend, tokenizer, publish=bus.publish)
    session.start()                                  # KV cache + system prefix, outside any window's latency
    outcome = session.step(window, frames_in_window) # decide (and speak) one window
    session.skip(window, "behind")                   # account for a window that will never be processed

``step`` samples the window's frames by time, runs the stages of :mod:`runtime.stages` in order, publishes
``WindowDecided`` (and the feedback events), and returns what happened. Every count and latency lands in
:attr:`StreamSession.stats`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine_format.prompt import StreamingPromptIds, streaming_prompt_ids
from engine_format.vocab import FEEDBACK
from runtime.backends.base import Array, ModelBackend
from runtime.config import ConfigError, StreamingConfig
from runtime.context import DecoderContext
from runtime.events import Event, WindowDecided, WindowSkipped
from runtime.feature_cache import FrameFeatureCache
from runtime.frames import Frame
from runtime.generation import resolve_generation
from runtime.policies import FeedbackGate, RepeatFilter, build_policy
from runtime.stages import (
    DecisionStage,
    DecoderStage,
    FeedbackResult,
    FeedbackStage,
    FrameSelectStage,
    ImageStage,
    TokenizerLike,
    VideoStage,
    WindowWork,
)
from runtime.stats import STAGES, RunStats, RunSummary
from runtime.windowing import Window, sample_window_frames

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowOutcome:
    """What :meth:`StreamSession.step` did for one window.

    Attributes:
        decided: The published decision.
        feedback: The generated feedback when the action was ``<feedback>``.
        work: The stage record (features, logits; for benchmarks and checks).
    """

    decided: WindowDecided
    feedback: FeedbackResult | None
    work: WindowWork


class StreamSession:
    """The streaming conversation over one backend: stages, decoder context, policy, gate and statistics.

    Args:
        config: The streaming configuration.
        backend: The model backend.
        tokenizer: The model's tokenizer (``backend.load_tokenizer()``).
        publish: Receives every event (``WindowDecided``, ``WindowSkipped``, feedback and context events).

    Raises:
        ConfigError: If the configuration does not fit the model (stop tokens, ``context.max_tokens``).
    """

    def __init__(
        self,
        config: StreamingConfig,
        backend: ModelBackend,
        tokenizer: TokenizerLike,
        publish: Callable[[Event], Any] | None = None,
    ) -> None:
        self.config, self.backend, self.tokenizer = config, backend, tokenizer
        self._publish = publish or (lambda event: None)
        gen = config.generation
        self.action_ids = backend.action_token_ids
        self.prompt: StreamingPromptIds = streaming_prompt_ids(tokenizer.encode, gen.instruction)
        # Config key if set, else the checkpoint's generation_config.json (via the backend), else the defaults.
        self.generation = resolve_generation(gen, backend.generation, backend.facts.eos_token_ids, tokenizer)
        stop_ids = set(self.generation.stop_ids) | set(self.action_ids.ids)
        self.visual_rows = backend.facts.num_visual_tokens
        if config.window.frames_per_window != backend.facts.num_frames:
            raise ConfigError(
                f"window.frames_per_window = {config.window.frames_per_window}: the model takes "
                f"{backend.facts.num_frames} frames per window"
            )
        self.cache: FrameFeatureCache[tuple[Array, Array, np.ndarray]] = FrameFeatureCache(config.cache.max_frames)
        reserve = 1 + self.generation.max_new_tokens + len(self.prompt.turn_end_ids)
        self.context = DecoderContext(backend, self.prompt, config.context, reserve_tokens=reserve, on_event=self._emit)
        self.context.check_fits(self.visual_rows)
        self.gate = FeedbackGate.from_config(config.decision)
        self.repeats = RepeatFilter(config.decision.suppress_repeats)
        self.policy = build_policy(config.policy)
        self.stages = (
            ImageStage(backend, self.cache),
            FrameSelectStage(backend),
            VideoStage(backend),
            DecoderStage(self.context, self.action_ids, self.visual_rows),
            DecisionStage(self.policy, self.gate),
        )
        self.feedback_stage = FeedbackStage(
            self.context, tokenizer, self.generation.max_new_tokens, stop_ids, self.action_ids, self.repeats,
            self._emit, processors=self.generation.processors(),
        )
        self.stats = RunStats()
        self.last_decision: WindowDecided | None = None

    def _emit(self, event: Event) -> None:
        self._publish(event)

    def start(self) -> None:
        """Allocates the KV cache and prefills the system prefix (idempotent)."""
        self.context.prefill_prefix()

    def skip(self, window: Window, reason: str, detail: str = "") -> None:
        """Accounts for a window that will never be decided and publishes ``WindowSkipped``.

        Raises:
            ValueError: If ``reason`` is not one of ``runtime.events.SKIP_REASONS``.
        """
        event = WindowSkipped(window.index, reason, detail)
        self.stats.skipped[reason] += 1
        self._emit(event)

    def step(
        self, window: Window, frames: Sequence[Frame], latest_timestamp: Callable[[], float | None] | None = None
    ) -> WindowOutcome:
        """Decides one complete window (and generates its feedback when the action is ``<feedback>``).

        Args:
            window: The window.
            frames: Candidate frames (normally those inside the window); ``num_frames`` are sampled by time.
            latest_timestamp: Returns the newest captured timestamp; called once the window is decided, after the
                stages, so the lag includes the inference time (default: no lag, the window's end).

        Returns:
            The outcome.

        Raises:
            ValueError: If ``frames`` is empty.
        """
        started = time.perf_counter()
        sampled = sample_window_frames(frames, window, self.config.window.frames_per_window)
        work = WindowWork(window, sampled)
        work.timings.add("frame_decode", float(np.mean([f.decode_ms for f in sampled])))
        for stage in self.stages:
            stage.process(work)
        timings = work.timings.ms
        timings["total"] = (time.perf_counter() - started) * 1e3 + timings["frame_decode"]
        assert work.decision is not None and work.action_logits is not None
        gated = work.decision
        newest = latest_timestamp() if latest_timestamp is not None else None
        lag = max(0.0, (newest if newest is not None else window.t_end) - window.t_end)
        decided = WindowDecided(
            window_index=window.index,
            t_start=window.t_start,
            t_end=window.t_end,
            action=gated.action,
            confidence=gated.confidence,
            raw_action=gated.raw_action,
            latency_ms={k: round(v, 3) for k, v in timings.items()},
            skipped_total=self.stats.skipped_total,
            cache_hit_rate=self.cache.hit_rate,
            kv_bytes=self.context.kv_bytes,
            gate_reason=gated.reason,
            lag_s=lag,
            context_tokens=self.context.length,
            context_windows=len(self.context.windows),
            action_logits=[float(x) for x in work.action_logits],
            final=window.final,
        )
        self._record(decided, timings)
        self._emit(decided)
        self.last_decision = decided
        feedback = None
        if gated.action == FEEDBACK:
            feedback = self.feedback_stage.process(work)
            self.stats.feedbacks += 1
            self.stats.suppressed += int(feedback.suppressed)
            self.stats.ttft.add(feedback.ttft_ms)
            if feedback.tokens_per_s > 0:
                self.stats.tokens_per_s.add(feedback.tokens_per_s)
        else:
            self.context.close_turn(self.action_ids.id_of(gated.action))  # <next> or <correct>
        self.stats.kv_max = max(self.stats.kv_max, self.context.kv_bytes)
        return WindowOutcome(decided, feedback, work)

    def _record(self, decided: WindowDecided, timings: dict[str, float]) -> None:
        s = self.stats
        s.processed += 1
        s.actions[decided.action] += 1
        s.lag.add(decided.lag_s)
        s.kv_max = max(s.kv_max, decided.kv_bytes)
        for stage in STAGES:
            if stage in timings:
                s.stage[stage].add(timings[stage])

    def summary(
        self,
        *,
        ended_by: str = "end_of_stream",
        wall_s: float = 0.0,
        stream_s: float = 0.0,
        frames_captured: int = 0,
        frames_overwritten: int = 0,
        window_at_stop: int | None = None,
        window_at_stop_outcome: str = "",
        warnings: Sequence[str] = (),
    ) -> RunSummary:
        """The session's statistics as a :class:`RunSummary` (the capture and stop figures come from the caller)."""
        s, ctx = self.stats, self.context
        downgrades = dict(self.gate.downgrades)
        if self.repeats.suppressed:
            downgrades["repeat"] = self.repeats.suppressed
        return RunSummary(
            backend=self.backend.name,
            precision=self.backend.precision,
            device=self.backend.device,
            random_weights=bool(self.backend.random_weights),
            policy=self.policy.name,
            ended_by=ended_by,
            wall_s=wall_s,
            stream_s=stream_s,
            frames_captured=frames_captured,
            frames_overwritten=frames_overwritten,
            windows_processed=s.processed,
            windows_skipped=s.skipped_total,
            skipped_by_reason=dict(s.skipped),
            actions=dict(s.actions),
            feedbacks=s.feedbacks,
            feedbacks_suppressed=s.suppressed,
            cache_hit_rate=self.cache.hit_rate,
            lag_s=s.lag.percentiles(),
            stage_ms={k: v.percentiles() for k, v in s.stage.items()},
            ttft_ms=s.ttft.percentiles(),
            tokens_per_s=s.tokens_per_s.percentiles(),
            kv_bytes_last=ctx.kv_bytes,
            kv_bytes_max=s.kv_max,
            context_evictions=dict(ctx.evictions),
            context_clears=dict(ctx.clears),
            gate_downgrades=downgrades,
            window_at_stop=window_at_stop,
            window_at_stop_outcome=window_at_stop_outcome,
            warnings=list(warnings),
        )

