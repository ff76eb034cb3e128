"""A tiny fine-tuning run end to end: train, write the checkpoint, and the runtime decides as training computed.

``pytest tests/training/test_training_smoke.py`` (~30 s on 2 cores): one 6.5 s episode (4 windows) of the faulted
squat scene on the session's synthetic tiny checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine_format.prompt import streaming_prompt_ids
from engine_format.vocab import ACTION_TOKENS
from evaluation.episodes import episode_windows
from evaluation.matching import TimedText
from evaluation.synthetic_benchmark import write_video
from mobile_videogpt.checkpoint import load_model
from runtime.config import apply_overrides, load_config
from runtime.session import StreamSession
from runtime.sources.scene import Fault, SquatScene
from training.export_checkpoint import write_checkpoint
from training.features import window_visual_rows
from training.sequences import build_samples, feedback_stop_id, label_windows
from training.trainer import ActionTokenTrainer, TrainSettings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def episode_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6.5 s at 15 fps, knees caving from 3.2 s."""
    path = tmp_path_factory.mktemp("smoke") / "ep.mp4"
    write_video(path, SquatScene((64, 80), seed=1, faults=[Fault("knees_caving", 3.2, 6.2)]), 6.5, 15.0)
    return path


def test_fine_tuned_checkpoint_makes_the_runtime_decide_as_training_computed(
    tiny_checkpoint: tuple[Path, Path], episode_video: Path, tmp_path: Path
) -> None:
    """After one epoch the written checkpoint loads strictly, and the runtime's action logits equal the trainer's.

    This pins the whole chain: the samples are the runtime's conversation, the adapters are merged and the trained
    rows written in the official layout, and the frozen-context forward of training is the streaming forward.
    """
    from runtime.backends.torch_backend import TorchBackend

    model_dir, clip_dir = tiny_checkpoint
    cfg = apply_overrides(load_config(REPO / "evaluation" / "timing_bench.yaml"), {"backend.name": "pytorch"})
    backend = TorchBackend(model_dir, clip_dir)
    tokenizer = backend.load_tokenizer()
    episode = episode_windows("ep", episode_video, cfg)
    rows = window_visual_rows(backend, episode, cfg)
    labels = label_windows("ep", episode.windows, [TimedText(4.2, "Push your knees out over your toes.")], cfg)
    prompt = streaming_prompt_ids(tokenizer.encode, cfg.generation.instruction)
    samples = build_samples("ep", episode.windows, labels, prompt, tokenizer.encode, cfg, backend.facts,
                            backend.action_token_ids, feedback_stop_id(backend, tokenizer, cfg))
    trainer = ActionTokenTrainer(backend.model, backend.action_token_ids, TrainSettings(epochs=1, batch=2))
    history = trainer.fit(samples, {"ep": rows})
    assert np.isfinite(history[0]["action_loss"]) and history[0]["text_loss"] > 0
    with torch.no_grad():
        trained = [trainer.forward(s, rows)[0].numpy() for s in samples]
    out = tmp_path / "coach"
    write_checkpoint(trainer.merged_state(), model_dir, clip_dir, out, backend.action_token_ids,
                     {"history": history}, dtype="float32")
    assert json.loads((out / "model" / "action_tokens.json").read_text())["vocab_size"] == backend.facts.vocab_size
    load_model(out / "model", out / "clip")  # strict: every tensor consumed, every parameter loaded

    runtime = TorchBackend(out / "model", out / "clip")
    session = StreamSession(apply_overrides(cfg, {"decision.confidence_threshold": 1.0}), runtime,
                            runtime.load_tokenizer())  # threshold 1: every window closes with <next>, as labelled
    session.start()
    for window, frames, expected in zip(episode.windows, episode.frames, trained):
        decided = session.step(window, frames).decided
        np.testing.assert_allclose(decided.action_logits, expected, rtol=1e-4, atol=1e-4)
    assert labels[1].action == ACTION_TOKENS[1], "the correction lands on the window ending nearest to 4.2 s"
