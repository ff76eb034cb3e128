"""The runtime's greedy loop under the checkpoint's generation config: HF's repetition penalty, precedence, wiring.

``pytest tests/runtime/test_generation.py``. The penalty is checked against transformers' own
``RepetitionPenaltyLogitsProcessor``; the session test uses the scripted backend with feedback logits where the
penalty flips the arg-max, so the text says whether it was applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from engine_format.generation import CheckpointGeneration, apply_repetition_penalty
from runtime.backends.base import Segment
from runtime.backends.kv import KVCache
from runtime.config import GenerationConfig, apply_overrides, config_from_dict
from runtime.generation import DEFAULT_MAX_NEW_TOKENS, GreedyState, RepetitionPenalty, greedy_decode, resolve_generation
from runtime.session import StreamSession
from runtime.sources import SyntheticSource
from runtime.windowing import WindowScheduler
from tests.runtime.fakes import SPECIAL, VOCAB, CharTokenizer, FakeBackend


@pytest.mark.parametrize("penalty", [0.7, 1.1, 1.5])
def test_repetition_penalty_equals_transformers_processor(penalty: float) -> None:
    """On random logits (both signs) and repeated ids, the penalised logits equal HF's processor bit for bit."""
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal(5000) * 8).astype(np.float32)
    generated = rng.integers(0, 5000, size=40).tolist() + [3, 3, 3]
    hf = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([generated]), torch.from_numpy(logits.copy())[None])
    ours = apply_repetition_penalty(logits, generated, penalty)
    np.testing.assert_array_equal(ours, hf[0].numpy())
    assert not np.array_equal(ours, logits), "the penalty changed nothing: the test cannot fail"


def test_greedy_loop_with_penalty_equals_an_hf_style_loop_over_generated_ids() -> None:
    """Greedy decoding with the penalty processor picks the ids of a loop that runs HF's processor over the ids
    generated so far (the prompt, given as embeddings, never counts) and differs from plain arg-max."""
    rng = np.random.default_rng(3)
    steps = [(rng.standard_normal(50) * 2).astype(np.float32) for _ in range(30)]
    steps = [s + np.where(np.arange(50) == 4, 6.0, 0.0).astype(np.float32) for s in steps]  # id 4 keeps winning
    processor = RepetitionPenaltyLogitsProcessor(1.5)
    expected: list[int] = []
    for scores in steps:
        t = torch.from_numpy(scores.copy())[None]
        if expected:
            t = processor(torch.tensor([expected]), t)
        expected.append(int(torch.argmax(t)))

    def run(processors: Sequence) -> list[int]:
        feed_at = iter(steps[1:])
        return list(greedy_decode(steps[0], lambda ids: next(feed_at), len(steps), (), GreedyState(), processors))

    assert run([RepetitionPenalty(1.5)]) == expected
    assert run([]) != expected, "the penalty did not change the text: the test cannot fail"


def test_penalty_one_is_todays_plain_argmax() -> None:
    """Penalty 1.0 returns the backend's logits themselves (no copy) and the same ids as no processor at all."""
    logits = np.arange(10, dtype=np.float32)
    assert apply_repetition_penalty(logits, [9, 9], 1.0) is logits
    settings = resolve_generation(GenerationConfig(repetition_penalty=1.0), CheckpointGeneration(), (1001,),
                                  CharTokenizer())
    assert settings.processors() == []


def test_precedence_config_key_then_checkpoint_then_default() -> None:
    """Each value comes from the config key if set, else the checkpoint's generation config, else the default."""
    tok = CharTokenizer()
    checkpoint = CheckpointGeneration("generation_config.json", (1002,), 1.1, 64)
    unset = GenerationConfig(max_new_tokens=None, repetition_penalty=None, stop_tokens=None)
    from_ckpt = resolve_generation(unset, checkpoint, (1002,), tok)
    assert (from_ckpt.max_new_tokens, from_ckpt.repetition_penalty, from_ckpt.stop_ids) == (64, 1.1, {1002})
    assert set(from_ckpt.sources.values()) == {"checkpoint"}
    configured = GenerationConfig(max_new_tokens=8, repetition_penalty=1.3, stop_tokens=("<|im_end|>",))
    from_cfg = resolve_generation(configured, checkpoint, (1002,), tok)
    assert (from_cfg.max_new_tokens, from_cfg.repetition_penalty, from_cfg.stop_ids) == (8, 1.3, {SPECIAL["<|im_end|>"]})
    assert set(from_cfg.sources.values()) == {"config"}
    defaults = resolve_generation(unset, CheckpointGeneration(), (), tok)
    assert (defaults.max_new_tokens, defaults.repetition_penalty) == (DEFAULT_MAX_NEW_TOKENS, 1.0)
    assert defaults.stop_ids == {SPECIAL["<|im_end|>"], SPECIAL["<|endoftext|>"]}
    assert set(defaults.sources.values()) == {"default"}


def test_repetition_penalty_config_key_is_validated() -> None:
    """generation.repetition_penalty must be > 0 and <= 10, or null; the error names the key."""
    from runtime.config import ConfigError

    with pytest.raises(ConfigError, match=r"generation\.repetition_penalty = 0\.0: must be > 0"):
        config_from_dict({"generation": {"repetition_penalty": 0}})
    assert config_from_dict({"generation": {"repetition_penalty": None}}).generation.repetition_penalty is None


class _RepeatingBackend(FakeBackend):
    """After ``<feedback>``, every step scores 'a' 10.0 and 'b' 9.5: plain greedy repeats 'a'; with a 1.1 penalty
    'a' (10 / 1.1 = 9.09) loses to 'b' once, then both are penalised (HF counts each id once) and 'a' wins again:
    "abaaaa". Its checkpoint asks for penalty 1.1."""

    generation = CheckpointGeneration("generation_config.json", (SPECIAL["<|im_end|>"],), 1.1, None)

    def decode(self, segments: Sequence[Segment], kv: KVCache) -> np.ndarray:
        logits = super().decode(segments, kv)
        if self.calls[-1].length == 1 and (self.calls[-1].last_id == SPECIAL["<feedback>"] or self.calls[-1].last_id < 256):
            logits = np.full(VOCAB, -10.0, dtype=np.float32)
            logits[ord("a")], logits[ord("b")] = 10.0, 9.5
        return logits


def _feedback_text(**overrides: object) -> str:
    cfg = apply_overrides(
        config_from_dict({}),
        {"decision.min_feedback_interval_s": 0.0, "policy.every_n.n": 1, "generation.max_new_tokens": 6, **overrides},
    )
    session = StreamSession(cfg, _RepeatingBackend(), CharTokenizer())
    session.start()
    with SyntheticSource(duration_s=2.5, size=(32, 32)) as source:
        frames = list(source)
    scheduler = WindowScheduler(2.0, 0.5, latest_wins=False)
    scheduler.set_origin(0.0)
    window = next(iter(scheduler.ready_windows(frames[-1].timestamp)))
    outcome = session.step(window, [f for f in frames if window.t_start <= f.timestamp <= window.t_end])
    assert outcome.feedback is not None
    return outcome.feedback.text


def test_feedback_generation_applies_the_checkpoint_penalty_and_the_config_overrides_it() -> None:
    """The session's FeedbackStage uses the backend's (checkpoint's) penalty; generation.repetition_penalty: 1.0
    in the config turns it off."""
    assert _feedback_text() == "abaaaa"
    assert _feedback_text(**{"generation.repetition_penalty": 1.0}) == "aaaaaa"
