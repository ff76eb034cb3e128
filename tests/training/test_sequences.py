"""Training sequences equal what the streaming runtime feeds its decoder, window by window.

``pytest tests/training/test_sequences.py``. The runtime side is the real :class:`~runtime.engine.StreamingEngine`
(capture thread, ring buffer, scheduler, :class:`~runtime.session.StreamSession`) over a video file, on the scripted
backend of ``tests/runtime/fakes.py`` wrapped so that every visual row it is given carries a marker (window, row);
its KV cache values then spell out, at each action query, exactly which tokens and rows the decoder holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from engine_format.prompt import streaming_prompt_ids
from engine_format.vocab import FEEDBACK, NEXT
from evaluation.matching import TimedText
from runtime.backends.base import Segment
from runtime.backends.kv import KVCache
from runtime.config import StreamingConfig, apply_overrides, config_from_dict
from runtime.engine import StreamingEngine
from runtime.events import EventBus
from runtime.sources import VideoFileSource, write_sample_video
from runtime.windowing import Window
from tests.runtime.fakes import HIDDEN, SPECIAL, CharTokenizer, FakeBackend
from training.features import episode_windows
from training.sequences import LabelError, WindowLabel, build_samples, label_windows

FEEDBACK_WINDOWS = (1, 4)


class MarkingBackend(FakeBackend):
    """The scripted backend with marked visual rows and a snapshot of its cache at every action query."""

    def __init__(self) -> None:
        super().__init__(action_logits=lambda i: (0.0, 3.0, 0.0) if i in FEEDBACK_WINDOWS else (3.0, 0.0, 0.0),
                         feedback_text="Go!")
        self.appends = 0
        self.snapshots: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.sampled: list[list[int]] = []

    def decode(self, segments: Sequence[Segment], kv: KVCache) -> np.ndarray:
        visual = any(not isinstance(s, (list, tuple)) for s in segments)
        if visual:
            key, row, marked = self.appends, 0, []
            self.appends += 1
            for segment in segments:
                if isinstance(segment, (list, tuple)):
                    marked.append(segment)
                    continue
                n = int(np.prod(np.asarray(segment).shape[:-1]))
                rows = np.zeros((n, HIDDEN), np.float32)
                rows[:, 0], rows[:, 1] = -1 - key, np.arange(row, row + n)
                row += n
                marked.append(rows)
            segments = marked
        logits = super().decode(segments, kv)
        if visual:
            values = kv.layer_views()[0][1][0, 0]  # the fake stores each input row as its value
            code = np.rint(values[:, 0]).astype(np.int64)
            rows = np.where(code < 0, np.rint(values[:, 1]), 0).astype(np.int64)
            self.snapshots.append((code, rows, np.array(kv.positions)))
        return logits


def _config(clear_after_feedback: bool) -> StreamingConfig:
    return apply_overrides(config_from_dict({}), {
        "policy.name": "model", "decision.confidence_threshold": 0.0, "decision.min_feedback_interval_s": 0.0,
        "context.max_windows": 2, "context.clear_after_feedback": clear_after_feedback,
        "window.latest_wins": False, "capture.ring_buffer_frames": 400, "decision.suppress_repeats": False,
    })


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eleven seconds of the synthetic scene at 15 fps (seven windows; the last, [9, 11], ends with the file)."""
    return write_sample_video(tmp_path_factory.mktemp("seq") / "ep.mp4", fps=15.0, duration_s=11.0, size=(48, 64))


@pytest.mark.parametrize("clear_after_feedback", [True, False])
def test_training_sequences_equal_what_the_streaming_decoder_holds(video: Path, clear_after_feedback: bool) -> None:
    """At every action query the builder's context equals the engine's KV content: tokens, rows and positions.

    Covers the system prefix, per-window turns, deferred closing tokens, feedback text after ``<feedback>``, eviction
    with re-based positions (``max_windows`` 2) and, when configured, clearing after feedback.
    """
    cfg = _config(clear_after_feedback)
    backend, tokenizer = MarkingBackend(), CharTokenizer()
    engine = StreamingEngine(cfg, backend, VideoFileSource(video, paced=False), EventBus(), tokenizer)
    summary = engine.run()
    assert summary.windows_processed == 7 and summary.feedbacks == len(FEEDBACK_WINDOWS)

    episode = episode_windows("ep", video, cfg)
    labels = [WindowLabel(FEEDBACK, "Go!") if k in FEEDBACK_WINDOWS else WindowLabel(NEXT) for k in range(7)]
    prompt = streaming_prompt_ids(tokenizer.encode, cfg.generation.instruction)
    samples = build_samples("ep", episode.windows, labels, prompt, tokenizer.encode, cfg, backend.facts,
                            backend.action_token_ids, SPECIAL["<|im_end|>"])
    assert len(samples) == len(backend.snapshots) == 7
    for sample, (code, rows, positions) in zip(samples, backend.snapshots):
        np.testing.assert_array_equal(sample.context.code, code)
        np.testing.assert_array_equal(sample.context.row, rows)
        np.testing.assert_array_equal(positions, np.arange(len(code)))
        assert list(code[sample.query_start :]) == prompt.window_suffix_ids
    assert samples[1].text_ids == tokenizer.encode("Go!") + [SPECIAL["<|im_end|>"]]
    evicted = samples[3].context.code
    assert not np.any(evicted == -1 - 1) and np.any(evicted == -1 - 2), "window 1 left, window 2 stayed"


def test_training_windows_and_frames_are_the_engines(video: Path) -> None:
    """The windows and the 16 sampled frame indices of each equal those the engine's session processed."""
    cfg = _config(True)
    backend = MarkingBackend()
    engine = StreamingEngine(cfg, backend, VideoFileSource(video, paced=False), EventBus(), CharTokenizer())
    seen: list[tuple[Window, list[int]]] = []
    step = engine.session.step

    def recording_step(window, frames, latest=None):  # noqa: ANN001, ANN202 - a pass-through spy
        outcome = step(window, frames, latest)
        seen.append((window, [f.index for f in outcome.work.frames]))
        return outcome

    engine.session.step = recording_step  # type: ignore[method-assign]
    engine.run()
    episode = episode_windows("ep", video, cfg)
    assert [w for w, _ in seen] == episode.windows
    assert [idx for _, idx in seen] == [[f.index for f in frames] for frames in episode.frames]


def _windows(n: int) -> list[Window]:
    return [Window(k, 1.5 * k, 1.5 * k + 2.0) for k in range(n)]


def test_labels_put_each_correction_on_its_nearest_window_and_leave_gated_windows_out() -> None:
    """The nearest window end decides; windows within the gate's interval after a feedback carry no action loss."""
    cfg = apply_overrides(config_from_dict({}), {"decision.min_feedback_interval_s": 4.0})
    labels = label_windows("ep", _windows(8), [TimedText(3.3, "Knees out.")], cfg)
    assert [l.action for l in labels].index(FEEDBACK) == 1 and labels[1].text == "Knees out."
    assert [l.train_action for l in labels] == [True, True, False, False, True, True, True, True]


def test_a_correction_the_gate_would_suppress_is_an_error() -> None:
    """Two corrections closer than the gate's minimum interval cannot both be spoken by the runtime."""
    cfg = apply_overrides(config_from_dict({}), {"decision.min_feedback_interval_s": 4.0})
    with pytest.raises(LabelError, match="would suppress it"):
        label_windows("ep", _windows(8), [TimedText(3.5, "a"), TimedText(6.5, "b")], cfg)
