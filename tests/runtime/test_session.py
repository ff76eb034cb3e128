"""StreamSession: the synchronous per-window step that the engine, the benchmarks and the parity harness run.

``pytest tests/runtime/test_session.py``. No threads: windows are cut from a rendered synthetic stream and stepped
in order; the scripted backend makes the outcome exact.
"""

from __future__ import annotations

import pytest

from runtime.config import ConfigError, apply_overrides, config_from_dict
from runtime.events import Event, FeedbackToken, WindowDecided, WindowSkipped
from runtime.session import StreamSession
from runtime.sources import SyntheticSource
from runtime.windowing import WindowScheduler
from tests.runtime.fakes import CharTokenizer, FakeBackend


def _session(**overrides: object) -> tuple[StreamSession, list[Event], FakeBackend]:
    cfg = apply_overrides(config_from_dict({}), {"decision.min_feedback_interval_s": 0.0, **overrides})
    events: list[Event] = []
    backend = FakeBackend(feedback_text="Knees!")
    session = StreamSession(cfg, backend, CharTokenizer(), publish=events.append)
    session.start()
    return session, events, backend


def test_stepping_windows_decides_generates_and_counts() -> None:
    session, events, backend = _session(**{"policy.every_n.n": 2})
    with SyntheticSource(duration_s=6.0, size=(48, 64)) as source:
        frames = list(source)
    scheduler = WindowScheduler(2.0, 0.5, latest_wins=False)
    scheduler.set_origin(0.0)
    outcomes = []
    for window in scheduler.ready_windows(frames[-1].timestamp):
        inside = [f for f in frames if window.t_start <= f.timestamp <= window.t_end]
        outcomes.append(session.step(window, inside))
    assert [o.decided.action for o in outcomes] == ["<next>", "<feedback>", "<next>"]
    assert outcomes[1].feedback is not None and outcomes[1].feedback.text == "Knees!"
    assert [o.feedback for o in (outcomes[0], outcomes[2])] == [None, None]
    pieces = [e.token_text for e in events if isinstance(e, FeedbackToken)]
    assert pieces == list("Knees!"), "text is streamed one token at a time"
    session.skip(scheduler.window(7), "behind")
    summary = session.summary(ended_by="end_of_stream")
    assert (summary.windows_processed, summary.windows_skipped, summary.feedbacks) == (3, 1, 1)
    assert summary.skipped_by_reason == {"behind": 1} and summary.device == "cpu"
    assert [type(e) for e in events if isinstance(e, (WindowDecided, WindowSkipped))][-1] is WindowSkipped
    assert outcomes[0].work.selected is not None and outcomes[0].work.action_logits.shape == (3,)


def test_frames_per_window_must_match_the_model() -> None:
    with pytest.raises(ConfigError, match=r"window\.frames_per_window = 8: the model takes 16 frames per window"):
        _session(**{"window.frames_per_window": 8})
