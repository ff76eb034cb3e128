"""Fault injection in the squat scene and the seeded benchmark episodes.

``pytest tests/evaluation/test_synthetic_benchmark.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evaluation.annotations import load_ground_truth
from evaluation.synthetic_benchmark import FEEDBACK_DELAY_S, BenchmarkSettings, load_benchmark, main, plan_episodes
from runtime.sources.scene import FAULT_KINDS, Fault, SquatScene


def test_frames_outside_a_fault_are_the_plain_scenes() -> None:
    """Injection changes only the frames inside the fault: the plain scene stays bit-identical."""
    plain = SquatScene((64, 80), seed=2)
    faulted = SquatScene((64, 80), seed=2, faults=[Fault("back_rounding", 4.0, 6.0)])
    for i, t in enumerate((0.5, 3.5, 3.99, 6.0, 7.5)):
        np.testing.assert_array_equal(plain.render(t, i), faulted.render(t, i))
    assert not np.array_equal(plain.render(5.0, 9), faulted.render(5.0, 9))


def test_fast_tempo_doubles_the_rep_speed_during_the_fault() -> None:
    """Once developed, a normal rep's time holds two fast reps: up after each, down half-way."""
    scene = SquatScene((64, 80), faults=[Fault("fast_tempo", 4.0, 6.5)])
    assert scene.depth_at(4.0 + SquatScene.REP_S) == pytest.approx(0.0, abs=1e-9)
    assert scene.depth_at(4.0 + 0.75 * SquatScene.REP_S) == pytest.approx(1.0)


def _motion_energy(scene: SquatScene, t0: float, t1: float, fps: float = 15.0) -> float:
    grey = [scene.render(t, i).astype(np.float32).mean(-1) for i, t in enumerate(np.arange(t0, t1, 1.0 / fps))]
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(grey[1:], grey[:-1])]))


@pytest.mark.parametrize("kind", ["knees_caving", "back_rounding", "fast_tempo"])
def test_a_fault_develops_without_a_jump_and_posture_faults_keep_the_motion_energy(kind: str) -> None:
    """No frame jumps at the onset (a motion detector would see the jump, not the form): one frame in, the faulted
    frame differs from the plain one by less than a clean rep moves per frame; a posture fault moves as much as a
    clean rep (within 10%), the tempo fault visibly more."""
    fault = Fault(kind, 5.0, 7.5)
    scene = SquatScene((120, 160), seed=1, noise_std=0.0, faults=[fault])
    plain = SquatScene((120, 160), seed=1, noise_std=0.0)
    onset = np.abs(scene.render(5.0 + 1 / 15, 1).astype(np.float32) - plain.render(5.0 + 1 / 15, 1)).mean()
    per_frame = _motion_energy(plain, 5.0, 7.5)
    assert onset < per_frame
    ratio = _motion_energy(scene, 5.0, 7.5) / per_frame
    assert (ratio > 1.3) if kind == "fast_tempo" else (0.9 < ratio < 1.1)


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
    assert main(["--out", str(out), "--train", "1", "--heldout", "1", "--duration", "16", "--clean-cycles", "1",
                 "--size", "48x64"]) == 0
    settings, specs = load_benchmark(out)
    assert settings.size == (48, 64) and [s.split for s in specs] == ["train", "heldout"]
    gt = load_ground_truth(out / "train.jsonl")["train_00"]
    assert len(gt.items) == 1
    assert [x.t for x in gt.items] == pytest.approx([f.t_start + FEEDBACK_DELAY_S for f in specs[0].faults])
    assert gt.duration_s == 16.0 and (out / "videos" / "heldout_00.mp4").stat().st_size > 0
    assert json.loads((out / "episodes.json").read_text())["settings"]["seed"] == 0


def test_fault_kinds_are_balanced_within_each_split() -> None:
    """Each split shows every kind equally often (to one): a split dominated by one kind would measure that kind."""
    specs = plan_episodes(BenchmarkSettings(seed=0))
    for split in ("train", "heldout"):
        counts = Counter(f.kind for e in specs if e.split == split for f in e.faults)
        assert set(counts) == set(FAULT_KINDS) and max(counts.values()) - min(counts.values()) <= 1, counts
