"""StreamingEngine + StreamSession with the scripted backend: latest-wins, the gate, feedback generation, errors.

``pytest tests/runtime/test_engine.py``. Sources run unpaced (as fast as frames render) and nothing is asserted
about durations; where a slow model matters, the fake model blocks until the whole stream has been captured.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import numpy as np
import pytest

from runtime.config import ConfigError, StreamingConfig, apply_overrides, config_from_dict
from runtime.events import (
    Event,
    EventBus,
    FeedbackFinished,
    FeedbackStarted,
    FeedbackToken,
    WindowDecided,
    WindowSkipped,
)
from runtime.frames import Frame
from runtime.engine import StreamingEngine
from runtime.sources import FrameSource, SourceError, SyntheticSource
from runtime.stats import STAGES, RunSummary
from tests.runtime.fakes import CharTokenizer, FakeBackend


def _config(**overrides: Any) -> StreamingConfig:
    base = {"capture.ring_buffer_frames": 512, "window.latest_wins": False, "decision.min_feedback_interval_s": 0.0}
    return apply_overrides(config_from_dict({}), {**base, **overrides})


def _run(cfg: StreamingConfig, backend: FakeBackend, source: FrameSource) -> tuple[RunSummary, list[Event]]:
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    engine = StreamingEngine(cfg, backend, source, bus, CharTokenizer())
    return engine.run(), events


def _source(duration_s: float, **kwargs: Any) -> SyntheticSource:
    return SyntheticSource(duration_s=duration_s, size=(48, 64), **kwargs)


def _decided(events: list[Event]) -> list[WindowDecided]:
    return [e for e in events if isinstance(e, WindowDecided)]


def test_latest_wins_skips_stale_windows_under_a_slow_backend() -> None:
    """While window 0 is being processed the whole 9 s stream arrives: only the newest window is processed next."""
    engine_ref: list[StreamingEngine] = []

    def slow(window_number: int) -> None:
        if window_number == 0:
            deadline = time.monotonic() + 60
            while not engine_ref[0].buffer.closed:  # the model is "slow": the capture finishes meanwhile
                if time.monotonic() > deadline:
                    raise TimeoutError("capture did not finish")
                time.sleep(0.01)

    backend = FakeBackend(before_video=slow)
    cfg = _config(**{"window.latest_wins": True, "policy.every_n.n": 100})
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    engine = StreamingEngine(cfg, backend, _source(9.0), bus, CharTokenizer())
    engine_ref.append(engine)
    summary = engine.run()

    # At the end of the 9 s stream the newest window is the final one, [7, 9], after the grid window [6, 8].
    final = math.floor((9.0 - 2.0) / 1.5) + 1
    decided = _decided(events)
    assert [(e.window_index, e.final) for e in decided] == [(0, False), (final, True)]
    assert (decided[-1].t_start, decided[-1].t_end) == pytest.approx((7.0, 9.0))
    skipped = [e for e in events if isinstance(e, WindowSkipped)]
    assert [(e.window_index, e.reason) for e in skipped] == [(k, "behind") for k in range(1, final)]
    assert decided[-1].skipped_total == final - 1
    assert (summary.windows_processed, summary.windows_skipped) == (2, final - 1)
    assert summary.ended_by == "end_of_stream"


def test_text_appears_only_after_feedback_and_nothing_is_generated_for_next() -> None:
    backend = FakeBackend(feedback_text="Go!")
    summary, events = _run(_config(**{"policy.every_n.n": 2}), backend, _source(6.5))  # windows 0-3, none final
    decided = {e.window_index: e for e in _decided(events)}
    assert [decided[k].action for k in sorted(decided)] == ["<next>", "<feedback>", "<next>", "<feedback>"]

    current: int | None = None  # window whose feedback is streaming
    seen_decided: set[int] = set()
    text: dict[int, str] = {}
    for event in events:
        if isinstance(event, WindowDecided):
            assert current is None, "a window was decided while a feedback was streaming"
            seen_decided.add(event.window_index)
        elif isinstance(event, FeedbackStarted):
            assert event.window_index in seen_decided and decided[event.window_index].action == "<feedback>"
            current = event.window_index
        elif isinstance(event, FeedbackToken):
            assert event.window_index == current, "feedback text outside a <feedback> window"
            text[current] = text.get(current, "") + event.token_text
        elif isinstance(event, FeedbackFinished):
            assert event.window_index == current and event.text == text[current] == "Go!" and event.n_tokens == 3
            current = None
    assert sorted(text) == [1, 3]
    # Decoder calls of one token happen only in generation: <feedback> + 3 characters per feedback.
    assert sum(1 for c in backend.calls if c.length == 1) == 2 * 4
    assert summary.feedbacks == 2


def test_feedback_interval_is_never_violated_and_repeats_are_suppressed() -> None:
    cfg = _config(**{"policy.every_n.n": 1, "decision.min_feedback_interval_s": 4.0})
    summary, events = _run(cfg, FakeBackend(), _source(11.0))  # windows 0-6, the last ends at 11 s
    decided = _decided(events)
    assert len(decided) == 7 and all(e.raw_action == "<feedback>" for e in decided)
    fed = [e.t_end for e in decided if e.action == "<feedback>"]
    assert fed == [2.0, 6.5, 11.0]
    assert all(b - a >= 4.0 for a, b in itertools.pairwise(fed))
    assert {e.gate_reason for e in decided if e.action == "<next>"} == {"interval"}
    finished = [e for e in events if isinstance(e, FeedbackFinished)]
    assert [e.suppressed for e in finished] == [False, True, True]  # the fake always says "Go!"
    assert summary.gate_downgrades == {"interval": 4, "repeat": 2}


def test_model_policy_decides_from_the_action_token_logits() -> None:
    scripted = [(3.0, 0.0, 0.0), (0.0, 3.0, 0.0), (0.0, 0.0, 3.0), (0.0, 0.2, 0.0)]
    backend = FakeBackend(action_logits=lambda i: scripted[i])
    cfg = _config(**{"policy.name": "model", "decision.confidence_threshold": 0.5})
    _, events = _run(cfg, backend, _source(6.5))
    decided = _decided(events)
    p = math.exp(3) / (math.exp(3) + 2)
    assert [(e.raw_action, e.action, e.gate_reason) for e in decided] == [
        ("<next>", "<next>", None),
        ("<feedback>", "<feedback>", None),
        ("<correct>", "<next>", "correct_disabled"),
        ("<feedback>", "<next>", "low_confidence"),
    ]
    assert decided[1].confidence == pytest.approx(p, rel=1e-6)
    assert decided[1].action_logits == pytest.approx([0.0, 3.0, 0.0])


def test_feature_cache_encodes_shared_frames_once_and_latencies_are_reported() -> None:
    backend = FakeBackend()
    summary, events = _run(_config(**{"policy.every_n.n": 100}), backend, _source(6.5))
    # Adjacent windows share 4 of 16 sampled frames: 16 + 3 x 12 frames encoded for 4 windows.
    assert backend.encoded_frames == 52
    assert summary.cache_hit_rate == pytest.approx(12 / 64)
    for event in _decided(events):
        assert set(event.latency_ms) == set(STAGES)
        assert event.kv_bytes > 0 and event.context_windows >= 1
    assert summary.stage_ms["video_encoder"]["n"] == 4
    assert summary.random_weights is False and summary.kv_bytes_max >= summary.kv_bytes_last > 0


def test_worker_error_is_raised_by_run() -> None:
    def boom(_window_number: int) -> None:
        raise RuntimeError("video encoder exploded")

    with pytest.raises(RuntimeError, match="video encoder exploded"):
        _run(_config(), FakeBackend(before_video=boom), _source(4.0))


class _FailingSource(SyntheticSource):
    """Delivers 2.5 s of frames, then fails like an unplugged camera."""

    def _read(self) -> Frame | None:
        if self._next_index >= 75:
            raise SourceError("camera unplugged")
        return super()._read()


def test_source_error_is_raised_by_run() -> None:
    with pytest.raises(SourceError, match="camera unplugged"):
        _run(_config(), FakeBackend(), _FailingSource(duration_s=10.0, size=(48, 64)))


def test_duration_stops_a_live_stream() -> None:
    engine = StreamingEngine(_config(), FakeBackend(), _source(600.0, paced=True), EventBus(), CharTokenizer())
    assert engine.run(duration_s=0.3).ended_by == "duration"


def test_stop_tokens_must_be_single_tokens() -> None:
    cfg = _config(**{"generation.stop_tokens": "[ab]"})
    with pytest.raises(ConfigError, match=r"generation\.stop_tokens\[0\] = 'ab': is not a single token"):
        StreamingEngine(cfg, FakeBackend(), _source(1.0), EventBus(), CharTokenizer())


def test_frames_carry_their_decode_time() -> None:
    with _source(0.2) as source:
        frames = list(source)
    assert all(f.decode_ms > 0 for f in frames)
    assert np.isfinite([f.decode_ms for f in frames]).all()
