"""Run statistics: typed counters, bounded latency reservoirs and the :class:`RunSummary` a run ends with.

Every per-window figure goes into a fixed-size reservoir (exact percentiles up to its capacity, a uniform sample
after), so an hours-long stream keeps bounded memory.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine_format.vocab import ACTION_TOKENS

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


#: Why a run ended (``RunSummary.ended_by``): the stream ended (``end_of_stream``; ``source_truncated`` when the
#: source stopped early: a cut or corrupt file), the caller stopped it (``duration``, ``stopped``: ``q`` in the
#: window or :meth:`StreamingEngine.stop`, ``interrupted``: Ctrl-C, ``terminated``: SIGTERM), or it failed
#: (``source_error``, ``error``: the inference raised, ``output_closed``: the event output was closed, e.g. a pipe
#: into ``head``).
ENDED_BY = (
    "end_of_stream",
    "source_truncated",
    "duration",
    "stopped",
    "interrupted",
    "terminated",
    "source_error",
    "error",
    "output_closed",
)


class Reservoir:
    """A uniform sample of at most ``capacity`` values (Vitter's algorithm R, seeded: runs are reproducible).

    Args:
        capacity: Values kept.
        seed: Sampling seed.
    """

    def __init__(self, capacity: int = 4096, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity = {capacity}: must be >= 1")
        self.capacity = capacity
        self.values: list[float] = []
        self.count = 0
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        """Offers one value."""
        self.count += 1
        if len(self.values) < self.capacity:
            self.values.append(float(value))
            return
        slot = self._rng.randrange(self.count)
        if slot < self.capacity:
            self.values[slot] = float(value)

    def percentiles(self) -> dict[str, float]:
        """``{"p50", "p95", "n"}`` (n counts every value offered)."""
        if not self.values:
            return {"p50": 0.0, "p95": 0.0, "n": 0}
        arr = np.asarray(self.values, dtype=np.float64)
        return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "n": self.count}


@dataclass
class RunStats:
    """Counters and reservoirs of one streaming session (filled by the session, read by the summary)."""

    processed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=lambda: Counter({a: 0 for a in ACTION_TOKENS}))
    feedbacks: int = 0
    suppressed: int = 0
    kv_max: int = 0
    lag: Reservoir = field(default_factory=Reservoir)
    stage: dict[str, Reservoir] = field(default_factory=lambda: {s: Reservoir() for s in STAGES})
    ttft: Reservoir = field(default_factory=Reservoir)
    tokens_per_s: Reservoir = field(default_factory=Reservoir)

    @property
    def skipped_total(self) -> int:
        """Windows skipped, every reason."""
        return sum(self.skipped.values())


@dataclass
class RunSummary:
    """What one streaming run did.

    Attributes:
        backend: Backend name.
        precision: Backend precision.
        device: Backend device.
        random_weights: The model has random weights (its actions and text are meaningless).
        policy: Policy name.
        ended_by: One of :data:`ENDED_BY`.
        wall_s: Wall-clock duration of the run.
        stream_s: Stream time covered: to the stream's end time when a finite source ended (the last frame plus
            its duration), else to the last captured timestamp, from the first.
        frames_captured: Frames read from the source.
        frames_overwritten: Frames lost because the ring buffer was full.
        windows_processed: Windows decided.
        windows_skipped: Windows never processed.
        skipped_by_reason: Of which, by reason (``behind``, ``overwritten``).
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
        gate_downgrades: Gate downgrades by reason (``repeat`` counts suppressed texts).
        window_at_stop: The window in progress when a stop (Ctrl-C, SIGTERM, ``--duration``) was requested.
        window_at_stop_outcome: ``finished`` (it was completed before stopping) or ``abandoned`` (a second
            signal); empty when no window was in progress.
        warnings: Run-level problems a person must see (a truncated source, frames lost from the ring buffer).
    """

    backend: str
    precision: str
    device: str
    random_weights: bool
    policy: str
    ended_by: str = "end_of_stream"
    wall_s: float = 0.0
    stream_s: float = 0.0
    frames_captured: int = 0
    frames_overwritten: int = 0
    windows_processed: int = 0
    windows_skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
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
    window_at_stop: int | None = None
    window_at_stop_outcome: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def headline(self) -> str:
        """One human-readable line (the webcam CLI prints it)."""
        p50 = ", ".join(f"{k} {v['p50']:.0f}" for k, v in self.stage_ms.items() if v.get("n"))
        label = " [RANDOM WEIGHTS: actions and text are meaningless]" if self.random_weights else ""
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped_by_reason.items()) if n)
        stop = ""
        if self.window_at_stop is not None:
            stop = f" (window {self.window_at_stop} in progress: {self.window_at_stop_outcome})"
        warnings = "".join(f"; WARNING: {w}" for w in self.warnings)
        return (
            f"{self.backend}/{self.precision}/{self.device}{label}: ended by {self.ended_by}{stop} after "
            f"{self.stream_s:.1f} s of stream; {self.windows_processed} windows processed, "
            f"{self.windows_skipped} skipped{f' ({skipped})' if skipped else ''}, {self.feedbacks} feedbacks, "
            f"cache hit rate {self.cache_hit_rate:.2f}, lag p50 {self.lag_s.get('p50', 0.0):.2f} s; "
            f"stage p50 ms: {p50}{warnings}"
        )
