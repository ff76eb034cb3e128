"""Fault injection in the squat scene and the seeded benchmark episodes.

``pytest tests/evaluation/test_synthetic_benchmark.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.annotations import load_ground_truth
from evaluation.synthetic_benchmark import FEEDBACK_DELAY_S, BenchmarkSettings, load_benchmark, main, plan_episodes
from runtime.sources.scene import Fault, SquatScene


def test_frames_outside_a_fault_are_the_plain_scenes() -> None:
    """Injection changes only the frames inside the fault: the plain scene stays bit-identical."""
    plain = SquatScene((64, 80), seed=2)
    faulted = SquatScene((64, 80), seed=2, faults=[Fault("back_rounding", 4.0, 6.0)])
    for i, t in enumerate((0.5, 3.5, 3.99, 6.0, 7.5)):
        np.testing.assert_array_equal(plain.render(t, i), faulted.render(t, i))
    assert not np.array_equal(plain.render(5.0, 9), faulted.render(5.0, 9))


def test_fast_tempo_doubles_the_rep_speed_during_the_fault() -> None:
    """Half a normal rep after the fault starts the figure is back up, as after a full fast rep."""
    scene = SquatScene((64, 80), faults=[Fault("fast_tempo", 4.0, 6.0)])
    assert scene.depth_at(4.0 + SquatScene.REP_S / 2) == pytest.approx(0.0, abs=1e-9)
    assert scene.depth_at(4.0 + SquatScene.REP_S / 4) == pytest.approx(1.0)


def test_overlapping_faults_are_rejected() -> None:
    """Two faults cannot be shown at once."""
    with pytest.raises(ValueError, match="overlap"):
        SquatScene(faults=[Fault("knees_caving", 1.0, 3.0), Fault("fast_tempo", 2.0, 4.0)])


def test_episodes_follow_from_the_seed() -> None:
    """The same seed plans the same episodes, another seed other ones; faults lie in rep phases."""
    a, b = plan_episodes(BenchmarkSettings(seed=3)), plan_episodes(BenchmarkSettings(seed=3))
    assert [(e.id, e.room, e.noise_seed, e.faults) for e in a] == [(e.id, e.room, e.noise_seed, e.faults) for e in b]
    assert [e.faults for e in plan_episodes(BenchmarkSettings(seed=4))] != [e.faults for e in a]
    for episode in a:
        assert len(episode.faults) == 2  # three cycles, one clean
        for fault in episode.faults:
            assert SquatScene.is_moving(fault.t_start) and SquatScene.is_moving(fault.t_end - 1e-6)


def test_cli_writes_videos_and_ground_truth(tmp_path: Path) -> None:
    """One train and one held-out episode: videos, per-split ground truth at fault start + delay, episodes.json."""
    out = tmp_path / "bench"
    assert main(["--out", str(out), "--train", "1", "--heldout", "1", "--duration", "16", "--size", "48x64"]) == 0
    settings, specs = load_benchmark(out)
    assert settings.size == (48, 64) and [s.split for s in specs] == ["train", "heldout"]
    gt = load_ground_truth(out / "train.jsonl")["train_00"]
    assert [x.t for x in gt.items] == pytest.approx([f.t_start + FEEDBACK_DELAY_S for f in specs[0].faults])
    assert gt.duration_s == 16.0 and (out / "videos" / "heldout_00.mp4").stat().st_size > 0
    assert json.loads((out / "episodes.json").read_text())["settings"]["seed"] == 0
