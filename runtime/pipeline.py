"""The streaming engine: capture -> ring buffer -> inference worker (stages) -> events.

Threads and queues:

* **capture** (:class:`~runtime.ring_buffer.CaptureThread`): reads the source into the bounded
  :class:`~runtime.ring_buffer.FrameRingBuffer`. It never waits for inference (a full buffer overwrites its oldest
  frame).
* **inference worker** (one thread): polls the :class:`~runtime.windowing.WindowScheduler` (latest-wins: stale
  complete windows are reported as ``WindowSkipped``) and runs one window through the stages below, in order. The
  stages share one model and, on CPU, the same cores, so they run sequentially on this thread; overlapping them would
  only make them contend (see docs/design.md, "Batching and threads").

Stages (each a small object with one ``process`` method, wired together only in :class:`StreamingEngine`):

1. :class:`ImageStage`: CLIP-branch preprocessing and ``encode_images`` of the frames not in the
   :class:`~runtime.feature_cache.FrameFeatureCache` (consecutive windows share frames).
2. :class:`FrameSelectStage`: ``select_frames`` on the 16 frames' CLIP features.
3. :class:`VideoStage`: video-branch preprocessing of the 8 selected frames and ``encode_video``.
4. :class:`DecoderStage`: ``embed(window_prefix) + 16 x 144 image rows + 2 x 49 video rows + embed(window_suffix)``
   appended to the :class:`~runtime.context.DecoderContext`; returns the logits at the action query.
5. :class:`DecisionStage`: the policy (model: softmax over the three action-token logits; or a rule-based policy),
   then the :class:`~runtime.policies.FeedbackGate`.
6. :class:`FeedbackStage`: on ``<feedback>`` only, greedy generation continuing the same KV context after the
   ``<feedback>`` token, streamed as ``FeedbackToken`` events.

Errors in either thread stop both and are re-raised by :meth:`StreamingEngine.run`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from mobile_videogpt.preprocess import ClipPreprocessConfig, preprocess_clip_branch, preprocess_video_branch
from mobile_videogpt.prompt import DEFAULT_COACH_SYSTEM, StreamingPromptIds, streaming_prompt_ids
from runtime.backends.base import ModelBackend
from runtime.config import ConfigError, GenerationConfig, StreamingConfig
from runtime.context import DecoderContext
from runtime.events import (
    EventBus,
    FeedbackFinished,
    FeedbackStarted,
    FeedbackToken,
    WindowDecided,
    WindowSkipped,
)
from runtime.feature_cache import FrameFeatureCache
from runtime.frames import Frame
from runtime.policies import (
    ACTIONS,
    FEEDBACK,
    ActionDecision,
    ActionPolicy,
    FeedbackGate,
    GateResult,
    PolicyContext,
    WindowFeatures,
    build_policy,
)
from runtime.ring_buffer import CaptureThread, FrameRingBuffer
from runtime.sources import FrameSource
from runtime.windowing import Window, WindowScheduler, sample_window_frames

logger = logging.getLogger(__name__)

#: Stage names reported in ``WindowDecided.latency_ms`` and the run summary, in pipeline order.
STAGES = (
    "frame_decode",
    "preprocess",
    "image_encoder",
    "frame_selection",
    "video_encoder",
    "decoder_append",
    "action_decision",
    "total",
)
CHUNKS, CHUNK_FRAMES = 2, 8  # the model's frame-selection geometry: 2 chunks of 8, top 4 each

# How long blocking waits last before re-checking stop/errors; short enough for a responsive Ctrl-C.
_POLL_S = 0.1


class TokenizerLike(Protocol):
    """What the engine needs from a tokenizer (a Hugging Face fast tokenizer satisfies it)."""

    def __call__(self, text: str, add_special_tokens: bool = ...) -> Any: ...

    def convert_tokens_to_ids(self, tokens: str) -> int | None: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


# --------------------------------------------------------------------------- stages


@dataclass
class Timings:
    """Per-stage milliseconds of one window (filled as the stages run)."""

    ms: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        """Adds ``ms`` to ``stage`` (preprocessing happens in two places)."""
        self.ms[stage] = self.ms.get(stage, 0.0) + ms


class _Clock:
    """Context manager adding the elapsed time to one stage of a :class:`Timings`."""

    def __init__(self, timings: Timings, stage: str) -> None:
        self.timings, self.stage = timings, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings.add(self.stage, (time.perf_counter() - self.start) * 1e3)


@dataclass(frozen=True)
class ImageResult:
    """Per-frame image-encoder outputs of one window, in sample order.

    Attributes:
        clip_features: ``[16, 196, 768]`` (frame selection input).
        image_tokens: ``[16, 144, H]``.
    """

    clip_features: np.ndarray
    image_tokens: np.ndarray


class ImageStage:
    """CLIP-branch preprocessing + ``encode_images`` with a per-frame cache.

    Only frames missing from the cache are preprocessed and encoded, as one batch.

    Args:
        backend: The model backend.
        cache: Frame index -> ``(clip_features [196,768], image_tokens [144,H])``.
        clip_cfg: CLIP-branch preprocessing parameters.
    """

    def __init__(
        self,
        backend: ModelBackend,
        cache: FrameFeatureCache[tuple[np.ndarray, np.ndarray]],
        clip_cfg: ClipPreprocessConfig,
    ) -> None:
        self.backend, self.cache, self.clip_cfg = backend, cache, clip_cfg

    def process(self, frames: Sequence[Frame], timings: Timings) -> ImageResult:
        """Encodes the window's sampled frames (cached ones are reused)."""
        by_index = {f.index: f for f in frames}

        def compute(missing: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
            with _Clock(timings, "preprocess"):
                pixels = preprocess_clip_branch(np.stack([by_index[i].image for i in missing]), self.clip_cfg).numpy()
            with _Clock(timings, "image_encoder"):
                out = self.backend.encode_images(pixels)
            # Copies: backends may reuse output buffers, and the cache keeps rows across windows.
            return [(out.clip_features[j].copy(), out.image_tokens[j].copy()) for j in range(len(missing))]

        timings.add("image_encoder", 0.0)  # reported even when every frame was cached
        rows = self.cache.get_or_compute([f.index for f in frames], compute)
        return ImageResult(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))


class FrameSelectStage:
    """``select_frames``: top 4 of each chunk of 8 by CLIP attention mass."""

    def __init__(self, backend: ModelBackend) -> None:
        self.backend = backend

    def process(self, clip_features: np.ndarray, timings: Timings) -> np.ndarray:
        """Returns the selected indices ``[2, 4]`` within each chunk (ascending)."""
        with _Clock(timings, "frame_selection"):
            _, selected = self.backend.select_frames(clip_features)
        return np.asarray(selected, dtype=np.int64)


class VideoStage:
    """Video-branch preprocessing of the 8 selected frames + ``encode_video``."""

    def __init__(self, backend: ModelBackend) -> None:
        self.backend = backend

    def process(self, frames: Sequence[Frame], selected: np.ndarray, timings: Timings) -> np.ndarray:
        """Returns video tokens ``[2, 49, H]``."""
        slots = (np.arange(selected.shape[0])[:, None] * CHUNK_FRAMES + selected).reshape(-1)  # chunk-major
        with _Clock(timings, "preprocess"):
            pixels = preprocess_video_branch(np.stack([frames[int(s)].image for s in slots])).numpy()
        with _Clock(timings, "video_encoder"):
            return self.backend.encode_video(pixels)


class DecoderStage:
    """Appends a window's visual rows to the decoder context; returns the logits at the action query."""

    def __init__(self, context: DecoderContext) -> None:
        self.context = context

    def process(
        self, window: Window, image_tokens: np.ndarray, video_tokens: np.ndarray, timings: Timings
    ) -> np.ndarray:
        """Returns logits ``[V]``."""
        hidden = image_tokens.shape[-1]
        visual = np.concatenate([image_tokens.reshape(-1, hidden), video_tokens.reshape(-1, hidden)], axis=0)
        with _Clock(timings, "decoder_append"):
            return self.context.append_window(window, visual)


class DecisionStage:
    """Policy then gate: ``(window features) -> GateResult``.

    Args:
        policy: Any :class:`~runtime.policies.ActionPolicy`.
        gate: The feedback gate.
    """

    def __init__(self, policy: ActionPolicy, gate: FeedbackGate) -> None:
        self.policy, self.gate = policy, gate
        self.context = PolicyContext()

    def process(self, features: WindowFeatures, timings: Timings) -> GateResult:
        """Decides and gates the window's action."""
        with _Clock(timings, "action_decision"):
            decision = self.policy.decide(features, self.context)
            gated = self.gate.apply(decision, features.window.t_end)
            self.context.update(features, ActionDecision(gated.action, gated.confidence))
        return gated


@dataclass(frozen=True)
class FeedbackResult:
    """One generated feedback.

    Attributes:
        text: The decoded text (stop tokens excluded).
        token_ids: Generated ids (a final stop token excluded).
        ttft_ms: From the start of generation (feeding ``<feedback>``) to the first token.
        tokens_per_s: Decoding speed after the first token (0 with fewer than 2 tokens).
        suppressed: The gate dropped it as a repeat.
    """

    text: str
    token_ids: list[int]
    ttft_ms: float
    tokens_per_s: float
    suppressed: bool


class FeedbackStage:
    """Greedy feedback generation after ``<feedback>``, in the same KV context, streamed as events.

    Args:
        context: The decoder context (the window that asked for feedback is its last one).
        tokenizer: Decodes the text.
        gen: The ``generation`` config section.
        feedback_id: Id of ``<feedback>``.
        stop_ids: Ids that end the text (configured stop tokens plus the action tokens).
        gate: Repeat suppression.
        publish: Event sink.
    """

    def __init__(
        self,
        context: DecoderContext,
        tokenizer: TokenizerLike,
        gen: GenerationConfig,
        feedback_id: int,
        stop_ids: set[int],
        gate: FeedbackGate,
        publish: Callable[[Any], None],
    ) -> None:
        self.context, self.tokenizer, self.gen = context, tokenizer, gen
        self.feedback_id, self.stop_ids, self.gate, self.publish = feedback_id, stop_ids, gate, publish

    def process(self, window: Window) -> FeedbackResult:
        """Generates, streams and returns one feedback for ``window``."""
        self.publish(FeedbackStarted(window.index, window.t_end))
        start = time.perf_counter()
        logits = self.context.extend([self.feedback_id])
        ids: list[int] = []
        emitted = ""
        pieces = 0
        first_at = last_at = start
        stopped = False
        last_unfed = False  # the final text token is fed only if generation goes on; the closing turn feeds it
        for step in range(self.gen.max_new_tokens):
            token = int(np.argmax(logits))
            last_at = time.perf_counter()
            if step == 0:
                first_at = last_at
            if token in self.stop_ids:
                stopped = True
                break
            ids.append(token)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            # Hold back an incomplete UTF-8 sequence (byte-level BPE) until a later token completes it.
            if not text.endswith("\ufffd") and len(text) > len(emitted):
                self.publish(FeedbackToken(window.index, text[len(emitted) :], pieces))
                emitted, pieces = text, pieces + 1
            if step + 1 < self.gen.max_new_tokens:
                logits = self.context.extend([token])
            else:
                last_unfed = True
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if len(text) > len(emitted):
            self.publish(FeedbackToken(window.index, text[len(emitted) :], pieces))
        ttft_ms = (first_at - start) * 1e3
        n_after_first = len(ids) + (1 if stopped else 0) - 1
        tps = n_after_first / (last_at - first_at) if n_after_first > 0 and last_at > first_at else 0.0
        suppressed = self.gate.suppress_repeat(text)
        result = FeedbackResult(text.strip(), ids, ttft_ms, tps, suppressed)
        self.publish(FeedbackFinished(window.index, result.text, len(ids), ttft_ms, tps, suppressed))
        self.context.end_feedback(ids[-1] if last_unfed else None, window.index)
        return result


# --------------------------------------------------------------------------- summary


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "n": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "n": len(values)}


@dataclass
class RunSummary:
    """What one :meth:`StreamingEngine.run` did.

    Attributes:
        backend: Backend name.
        precision: Backend precision.
        random_weights: The model has random weights (its actions and text are meaningless).
        policy: Policy name.
        ended_by: ``end_of_stream``, ``duration``, ``stopped`` or ``interrupted`` (Ctrl-C).
        wall_s: Wall-clock duration of the run.
        stream_s: Stream time covered (last captured timestamp minus the first).
        frames_captured: Frames read from the source.
        frames_overwritten: Frames lost because the ring buffer was full.
        windows_processed: Windows decided.
        windows_skipped: Windows never processed (latest-wins or overwritten).
        actions: Count of each gated action.
        feedbacks: Feedbacks generated (suppressed repeats included).
        feedbacks_suppressed: Of which suppressed as repeats.
        cache_hit_rate: Feature-cache hit rate.
        lag_s: p50/p95 of the stream-time lag from a window's end to its decision.
        stage_ms: p50/p95 per stage (see :data:`STAGES`).
        ttft_ms: p50/p95 of feedback time to first token.
        tokens_per_s: p50/p95 of feedback decoding speed.
        kv_bytes_last: KV cache size at the end.
        kv_bytes_max: Largest KV cache size seen.
        context_evictions: Evictions by reason.
        context_clears: Clears by reason.
        gate_downgrades: Gate downgrades by reason.
    """

    backend: str
    precision: str
    random_weights: bool
    policy: str
    ended_by: str = "end_of_stream"
    wall_s: float = 0.0
    stream_s: float = 0.0
    frames_captured: int = 0
    frames_overwritten: int = 0
    windows_processed: int = 0
    windows_skipped: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    feedbacks: int = 0
    feedbacks_suppressed: int = 0
    cache_hit_rate: float = 0.0
    lag_s: dict[str, float] = field(default_factory=dict)
    stage_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    ttft_ms: dict[str, float] = field(default_factory=dict)
    tokens_per_s: dict[str, float] = field(default_factory=dict)
    kv_bytes_last: int = 0
    kv_bytes_max: int = 0
    context_evictions: dict[str, int] = field(default_factory=dict)
    context_clears: dict[str, int] = field(default_factory=dict)
    gate_downgrades: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def headline(self) -> str:
        """One human-readable line (the webcam CLI prints it)."""
        p50 = ", ".join(f"{k} {v['p50']:.0f}" for k, v in self.stage_ms.items() if v.get("n"))
        label = " [RANDOM WEIGHTS: actions and text are meaningless]" if self.random_weights else ""
        return (
            f"{self.backend}/{self.precision}{label}: {self.windows_processed} windows processed, "
            f"{self.windows_skipped} skipped, {self.feedbacks} feedbacks, cache hit rate {self.cache_hit_rate:.2f}, "
            f"lag p50 {self.lag_s.get('p50', 0.0):.2f} s; stage p50 ms: {p50}"
        )


# --------------------------------------------------------------------------- engine


def coach_system_prompt(instruction: str) -> str:
    """The streaming system message: the action-token protocol, then the configured coaching instruction."""
    return f"{DEFAULT_COACH_SYSTEM} {instruction.strip()}"


def resolve_stop_ids(tokenizer: TokenizerLike, gen: GenerationConfig) -> list[int]:
    """Maps ``generation.stop_tokens`` to single token ids.

    Raises:
        ConfigError: Naming the stop token that is not one token of the tokenizer.
    """
    ids = []
    for i, token in enumerate(gen.stop_tokens):
        token_id = tokenizer.convert_tokens_to_ids(token)
        encoded = list(tokenizer(token, add_special_tokens=False).input_ids)
        if token_id is None or encoded != [token_id]:
            raise ConfigError(f"generation.stop_tokens[{i}] = {token!r}: is not a single token of the tokenizer")
        ids.append(int(token_id))
    return ids


class StreamingEngine:
    """Runs a frame source through the model and publishes decisions and feedback as events.

    Use :meth:`run` (blocking), or :meth:`start` / :meth:`wait` / :meth:`stop` / :meth:`summary` when the caller's
    thread has other work (the webcam window).

    Args:
        config: The streaming configuration.
        backend: The model backend.
        source: The frame source (opened by the capture thread if not open; closed at the end).
        events: The event bus every event is published on (from the inference thread).
        tokenizer: The model's tokenizer, with the action tokens at the backend's ids.

    Raises:
        ConfigError: If the configuration does not fit the model (policy ``model`` without action tokens, stop tokens,
            ``context.max_tokens``).
    """

    def __init__(
        self,
        config: StreamingConfig,
        backend: ModelBackend,
        source: FrameSource,
        events: EventBus,
        tokenizer: TokenizerLike,
    ) -> None:
        self.config, self.backend, self.source, self.events, self.tokenizer = config, backend, source, events, tokenizer
        action_ids = backend.action_token_ids
        if action_ids is None:
            raise ConfigError("the backend's model has no action tokens; the streaming conversation needs them")
        self.action_ids = dict(zip(ACTIONS, action_ids.ids, strict=True))
        gen = config.generation
        self.prompt: StreamingPromptIds = streaming_prompt_ids(tokenizer, system=coach_system_prompt(gen.instruction))
        stop_ids = set(resolve_stop_ids(tokenizer, gen)) | set(action_ids.ids)

        self.buffer = FrameRingBuffer(config.capture.ring_buffer_frames)
        self.scheduler = WindowScheduler(config.window.window_s, config.window.overlap_s, config.window.latest_wins)
        self.cache: FrameFeatureCache[tuple[np.ndarray, np.ndarray]] = FrameFeatureCache(config.cache.max_frames)
        reserve = 1 + gen.max_new_tokens + len(self.prompt.turn_end_ids)
        self.context = DecoderContext(
            backend, self.prompt, config.context, reserve_tokens=reserve, on_event=self._publish
        )
        self.context.check_fits(_visual_rows(config))
        self.gate = FeedbackGate.from_config(config.decision)
        self.policy = build_policy(config.policy)
        clip_cfg = getattr(backend, "clip_preprocess", None) or ClipPreprocessConfig()
        self.image_stage = ImageStage(backend, self.cache, clip_cfg)
        self.select_stage = FrameSelectStage(backend)
        self.video_stage = VideoStage(backend)
        self.decoder_stage = DecoderStage(self.context)
        self.decision_stage = DecisionStage(self.policy, self.gate)
        self.feedback_stage = FeedbackStage(
            self.context, tokenizer, gen, self.action_ids[FEEDBACK], stop_ids, self.gate, self._publish
        )

        self._capture: CaptureThread | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._ended_by = "end_of_stream"
        self._started_at = 0.0
        self._finished_at = 0.0
        self._first_ts: float | None = None
        self._stats: dict[str, Any] = {
            "processed": 0,
            "skipped": 0,
            "actions": {a: 0 for a in ACTIONS},
            "feedbacks": 0,
            "suppressed": 0,
            "lag": [],
            "stage": {s: [] for s in STAGES},
            "ttft": [],
            "tps": [],
            "kv_max": 0,
        }
        self.last_decision: WindowDecided | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Opens the source, prefills the system prefix and starts the capture and inference threads.

        Raises:
            SourceError: If the source cannot be opened (raised here, not in a thread).
            RuntimeError: If the engine was already started.
        """
        if self._worker is not None:
            raise RuntimeError("StreamingEngine.start called twice; create a new engine per run")
        self.context.prefill_prefix()  # outside any window's latency
        if not self.source.is_open:
            self.source.open()
        self._started_at = time.perf_counter()
        self._capture = CaptureThread(self.source, self.buffer)
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._capture.start()
        self._worker.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the run to end (end of stream, stop or error); returns whether it has."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        """Whether the inference thread has ended."""
        return self._done.is_set()

    def stop(self, reason: str = "stopped") -> None:
        """Asks both threads to finish (the window in progress completes first). Idempotent."""
        if not self._stop.is_set():
            self._ended_by = reason
            self._stop.set()
        if self._capture is not None:
            self._capture.stop()

    def join(self, timeout: float = 30.0) -> None:
        """Waits for both threads after :meth:`stop` and re-raises an error either of them hit.

        Raises:
            RuntimeError: If the inference thread did not end within ``timeout``.
            Exception: The error that ended the worker or the capture.
        """
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                raise RuntimeError(f"inference thread did not stop within {timeout:.0f} s")
        if self._capture is not None:
            self._capture.stop()
        if self._finished_at == 0.0:
            self._finished_at = time.perf_counter()
        if self._error is not None:
            raise self._error
        if self._capture is not None:
            self._capture.check()

    def run(self, duration_s: float | None = None) -> RunSummary:
        """Streams until the source ends, ``duration_s`` of wall time passes, :meth:`stop`, or Ctrl-C.

        Args:
            duration_s: Wall-clock limit in seconds (``None``: until the source ends).

        Returns:
            The run summary (``ended_by`` says why it ended; Ctrl-C gives ``interrupted``).

        Raises:
            Exception: Any error of the source or the inference stages, after both threads have stopped.
        """
        self.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self.wait(_POLL_S):  # short waits keep the main thread responsive to Ctrl-C
                if deadline is not None and time.monotonic() >= deadline:
                    self.stop("duration")
                    break
        except KeyboardInterrupt:
            logger.info("interrupted: stopping after the window in progress")
            self.stop("interrupted")
        finally:
            if not self._stop.is_set():
                self.stop(self._ended_by)
            self.join()
        return self.summary()

    # ------------------------------------------------------------------ worker
    def _publish(self, event: Any) -> None:
        self.events.publish(event)

    def _work(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by join(); never swallowed
            logger.error("inference worker failed: %s", exc)
            self._error = exc
            self._stop.set()
            if self._capture is not None:
                self._capture.request_stop()
        finally:
            self._finished_at = time.perf_counter()
            self._done.set()

    def _loop(self) -> None:
        assert self._capture is not None
        while not self._stop.is_set():
            if self.buffer.wait_for_frames(_POLL_S):
                break
            self._capture.check()
            if self.buffer.closed:
                self._capture.check()
                logger.warning("the source ended before delivering a frame")
                return
        else:
            return
        first = self.buffer.first_timestamp  # not the oldest buffered: that one moves when the buffer overwrites
        assert first is not None
        self._first_ts = first
        self.scheduler.set_origin(first)
        while not self._stop.is_set():
            self._capture.check()
            closed = self.buffer.closed  # read before polling: a window completed before the close is still seen
            latest = self.buffer.latest_timestamp
            result = self.scheduler.poll(latest) if latest is not None else None
            if result is not None:
                for stale in result.skipped:
                    self._skip(stale, "behind")
                if result.window is not None:
                    self._process(result.window)
                    continue
            if closed:
                self._capture.check()
                return
            self.buffer.wait_for(self.scheduler.window(self.scheduler.next_index).t_end, timeout=_POLL_S)

    def _skip(self, window: Window, reason: str) -> None:
        self._stats["skipped"] += 1
        self._publish(WindowSkipped(window.index, reason))

    def _process(self, window: Window) -> None:
        started = time.perf_counter()
        frames = self.buffer.frames_in(window.t_start, window.t_end)
        if not frames:
            logger.warning("window %d: its frames left the ring buffer before processing", window.index)
            self._skip(window, "overwritten")
            return
        sampled = sample_window_frames(frames, window, self.config.window.frames_per_window)
        timings = Timings()
        timings.add("frame_decode", float(np.mean([f.decode_ms for f in sampled])))

        images = self.image_stage.process(sampled, timings)
        selected = self.select_stage.process(images.clip_features, timings)
        video_tokens = self.video_stage.process(sampled, selected, timings)
        logits = self.decoder_stage.process(window, images.image_tokens, video_tokens, timings)
        action_logits = np.asarray([logits[self.action_ids[a]] for a in ACTIONS], dtype=np.float32)
        features = WindowFeatures(
            window=window,
            frames=[f.image for f in sampled],
            frame_embeddings=images.clip_features.mean(axis=1),  # [16, 768] per-frame mean CLIP feature
            action_logits=action_logits,
        )
        gated = self.decision_stage.process(features, timings)
        timings.ms["total"] = (time.perf_counter() - started) * 1e3 + timings.ms["frame_decode"]

        latest = self.buffer.latest_timestamp
        lag = max(0.0, (latest if latest is not None else window.t_end) - window.t_end)
        kv_bytes = self.context.kv_bytes
        decided = WindowDecided(
            window_index=window.index,
            t_start=window.t_start,
            t_end=window.t_end,
            action=gated.action,
            confidence=gated.confidence,
            raw_action=gated.raw_action,
            latency_ms={k: round(v, 3) for k, v in timings.ms.items()},
            skipped_total=self._stats["skipped"],
            cache_hit_rate=self.cache.hit_rate,
            kv_bytes=kv_bytes,
            gate_reason=gated.reason,
            lag_s=lag,
            context_tokens=self.context.length,
            context_windows=len(self.context.windows),
            action_logits=[float(x) for x in action_logits],
        )
        self._record(decided, timings)
        self._publish(decided)
        self.last_decision = decided

        if gated.action == FEEDBACK:
            result = self.feedback_stage.process(window)
            self._stats["feedbacks"] += 1
            self._stats["suppressed"] += int(result.suppressed)
            self._stats["ttft"].append(result.ttft_ms)
            if result.tokens_per_s > 0:
                self._stats["tps"].append(result.tokens_per_s)
        else:
            self.context.close_turn(self.action_ids[gated.action])  # <next> or <correct>
        self._stats["kv_max"] = max(self._stats["kv_max"], self.context.kv_bytes)

    def _record(self, decided: WindowDecided, timings: Timings) -> None:
        s = self._stats
        s["processed"] += 1
        s["actions"][decided.action] += 1
        s["lag"].append(decided.lag_s)
        s["kv_max"] = max(s["kv_max"], decided.kv_bytes)
        for stage in STAGES:
            if stage in timings.ms:
                s["stage"][stage].append(timings.ms[stage])

    # ------------------------------------------------------------------ results
    def latest_frame(self) -> Frame | None:
        """The newest captured frame (for a live view), or ``None``."""
        frames = self.buffer.snapshot()
        return frames[-1] if frames else None

    def summary(self) -> RunSummary:
        """The run's statistics so far."""
        s = self._stats
        end = self._finished_at or time.perf_counter()
        latest = self.buffer.latest_timestamp
        return RunSummary(
            backend=self.backend.name,
            precision=self.backend.precision,
            random_weights=bool(self.backend.random_weights),
            policy=self.policy.name,
            ended_by=self._ended_by,
            wall_s=(end - self._started_at) if self._started_at else 0.0,
            stream_s=(latest - self._first_ts) if latest is not None and self._first_ts is not None else 0.0,
            frames_captured=self._capture.frames_captured if self._capture is not None else 0,
            frames_overwritten=self.buffer.overwritten,
            windows_processed=s["processed"],
            windows_skipped=s["skipped"],
            actions=dict(s["actions"]),
            feedbacks=s["feedbacks"],
            feedbacks_suppressed=s["suppressed"],
            cache_hit_rate=self.cache.hit_rate,
            lag_s=_percentiles(s["lag"]),
            stage_ms={k: _percentiles(v) for k, v in s["stage"].items()},
            ttft_ms=_percentiles(s["ttft"]),
            tokens_per_s=_percentiles(s["tps"]),
            kv_bytes_last=self.context.kv_bytes,
            kv_bytes_max=s["kv_max"],
            context_evictions=dict(self.context.evictions),
            context_clears=dict(self.context.clears),
            gate_downgrades=dict(self.gate.downgrades),
        )


def _visual_rows(config: StreamingConfig) -> int:
    """Visual rows per window: 16 x 144 image rows + 2 x 49 video rows = 2402."""
    return config.window.frames_per_window * 144 + CHUNKS * 49
