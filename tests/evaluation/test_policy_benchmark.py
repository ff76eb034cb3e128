"""The training-split tuning of ``evaluation.policy_benchmark`` against real session runs.

``pytest tests/evaluation/test_policy_benchmark.py``: the scripted backend of ``tests/runtime/fakes.py`` behind the
runtime's StreamSession (``evaluation.stream``), on a short synthetic video.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.annotations import load_predictions
from evaluation.episodes import episode_windows
from evaluation.policy_benchmark import replay_model_gate, replay_rule_policy
from evaluation.stream import stream_split
from runtime.config import StreamingConfig, apply_overrides, config_from_dict
from runtime.sources import write_sample_video
from tests.runtime.fakes import CharTokenizer, FakeBackend

# <feedback> logits per window: confidences from ~0.3 to ~0.95 in a fixed pattern.
FEEDBACK_LOGIT = (2.0, 0.1, 3.0, 0.5, 4.0, 1.0, 3.5, 0.0, 2.5, 1.5, 5.0, 0.2)


def _cfg(**overrides: object) -> StreamingConfig:
    base = {"policy.name": "model", "context.max_windows": 1, "window.latest_wins": False,
            "capture.ring_buffer_frames": 512, "decision.suppress_repeats": False}
    return apply_overrides(config_from_dict({}), {**base, **overrides})


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 19 s synthetic episodes (12 windows each)."""
    root = tmp_path_factory.mktemp("videos")
    for k in range(2):
        write_sample_video(root / f"ep{k}.mp4", fps=15.0, duration_s=19.0, size=(48, 64), seed=k)
    return root


def _run(cfg: StreamingConfig, videos: Path, out: Path) -> None:
    backend = FakeBackend(action_logits=lambda i: (1.0, FEEDBACK_LOGIT[i % len(FEEDBACK_LOGIT)], 0.0))
    stream_split(cfg, backend, CharTokenizer(), ["ep0", "ep1"], videos, out)


def test_threshold_replay_equals_a_real_run_at_that_threshold(videos: Path, tmp_path: Path) -> None:
    """With one window per decision, replaying the gate over a threshold-0 pass gives the real run's feedbacks."""
    _run(_cfg(**{"decision.confidence_threshold": 0.0, "decision.min_feedback_interval_s": 0.0}), videos, tmp_path / "a")
    real = _cfg(**{"decision.confidence_threshold": 0.7, "decision.min_feedback_interval_s": 4.0})
    _run(real, videos, tmp_path / "b")
    replayed = replay_model_gate(real, {e: tmp_path / "a" / f"{e}.jsonl" for e in ("ep0", "ep1")}, 0.7)
    actual = load_predictions([tmp_path / "b" / f"{e}.jsonl" for e in ("ep0", "ep1")])
    assert {e: [(x.t, x.text) for x in items] for e, items in replayed.items()} == {
        e: [(x.t, x.text) for x in p.decision] for e, p in actual.items()}
    assert 0 < sum(len(v) for v in replayed.values()) < 24, "the threshold and interval removed some, not all"


def test_rule_policy_replay_equals_a_real_run(videos: Path, tmp_path: Path) -> None:
    """every_n decided by the runtime's DecisionStage alone matches its feedback times in a session run."""
    cfg = _cfg(**{"policy.name": "every_n", "policy.every_n.n": 3, "decision.min_feedback_interval_s": 4.0})
    _run(cfg, videos, tmp_path / "c")
    actual = load_predictions([tmp_path / "c" / f"{e}.jsonl" for e in ("ep0", "ep1")])
    replayed = replay_rule_policy(cfg, [episode_windows(e, videos / f"{e}.mp4", cfg) for e in ("ep0", "ep1")])
    assert {e: [x.t for x in v] for e, v in replayed.items()} == {e: [x.t for x in p.decision] for e, p in actual.items()}
