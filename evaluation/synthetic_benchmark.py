"""``python -m evaluation.synthetic_benchmark``: deterministic squat episodes with injected form faults.

Usage::

    python -m evaluation.synthetic_benchmark --out artifacts/timing_bench --seed 0 [--train 10 --heldout 6]

Writes ``OUT/videos/<episode>.mp4`` (the squat scene of :mod:`runtime.sources.scene` with faults), the ground truth
``OUT/train.jsonl`` and ``OUT/heldout.jsonl`` (simple JSONL of :mod:`evaluation.annotations`: one
``{"episode", "t", "text"}`` line per correction and one ``{"episode", "duration"}`` line per episode) and
``OUT/episodes.json`` (every episode's split, seeds and faults, and the generation settings).

Episodes: the scene's 8 s cycle (3 s standing, 5 s of reps) repeats, three times in 24 s; ``clean_cycles`` of them
(one, drawn at random; ``--clean-cycles``) stay clean and every other cycle's rep phase gets a fault (kinds balanced
within each split, in a seeded order), starting ``FAULT_START_S`` (1.75-2.5 s) into the reps and lasting
``fault_s``. The late start keeps the correction away from the onset of motion. A detector of "a set is under way"
(which fires once per set) still scores the faulted share of sets as its precision: see docs/training.md. The coach
should
speak ``FEEDBACK_DELAY_S`` after the fault starts (once it has seen one rep of it), with the fault's correction text.
Backgrounds come from a pool of ``rooms`` seeds shared by both splits; fault times, kinds and sensor noise are drawn
per episode, so the held-out split has unseen faults and noise in known rooms. Everything follows from ``--seed``:
the same arguments give the same episodes (the videos up to the codec's own determinism).

Exit codes: 0 done, 2 bad arguments, 3 the video writer could not be created.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from runtime.sources.scene import FAULT_KINDS, Fault, SquatScene

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_USAGE, EXIT_WRITER = 0, 2, 3
FEEDBACK_DELAY_S = 1.0
"""Ground-truth time of a correction after its fault starts."""
SPLITS = ("train", "heldout")
FAULT_START_S = (1.75, 2.5)
"""Range of a fault's start after its rep phase begins."""


@dataclass(frozen=True)
class BenchmarkSettings:
    """How episodes are generated.

    Attributes:
        seed: Master seed.
        train: Training episodes.
        heldout: Held-out episodes.
        duration_s: Episode length.
        fps: Video frame rate.
        size: Frame ``(height, width)``.
        clean_cycles: Cycles per episode without a fault (the rest get one each).
        fault_s: Fault duration.
        rooms: Background seeds shared by both splits.
    """

    seed: int = 0
    train: int = 10
    heldout: int = 8
    duration_s: float = 24.0
    fps: float = 15.0
    size: tuple[int, int] = (120, 160)
    clean_cycles: int = 1
    fault_s: float = 2.5
    rooms: int = 3

    def check(self) -> None:
        """Raises ValueError naming the first bad setting."""
        if self.train < 1 or self.heldout < 1:
            raise ValueError(f"--train {self.train} / --heldout {self.heldout}: both must be >= 1")
        if not 2.0 < self.duration_s <= 600:
            raise ValueError(f"--duration {self.duration_s}: must be > 2 (one window) and <= 600 s")
        if not 8.0 <= self.fps <= 60:
            raise ValueError(f"--fps {self.fps}: must be in [8, 60] (16 frames per 2 s window)")
        if min(self.size) < 32:
            raise ValueError(f"--size {self.size}: height and width must be >= 32")
        if not 0 < self.fault_s <= SquatScene.CYCLE_S - SquatScene.STILL_S - FAULT_START_S[1]:
            raise ValueError(f"fault_s {self.fault_s}: must fit in a rep phase after its {FAULT_START_S} s start")
        if self.clean_cycles < 0 or self.rooms < 1:
            raise ValueError("clean_cycles must be >= 0 and rooms >= 1")


@dataclass
class EpisodeSpec:
    """One generated episode.

    Attributes:
        id: Episode id (also the video's stem).
        split: ``train`` or ``heldout``.
        room: Background seed.
        noise_seed: Sensor-noise seed.
        duration_s: Length.
        faults: The injected faults.
    """

    id: str
    split: str
    room: int
    noise_seed: int
    duration_s: float
    faults: list[Fault] = field(default_factory=list)

    def scene(self, settings: BenchmarkSettings) -> SquatScene:
        """The episode's scene."""
        return SquatScene(settings.size, seed=self.room, faults=self.faults, noise_seed=self.noise_seed)

    def ground_truth(self) -> list[dict[str, object]]:
        """Simple-JSONL ground-truth lines: one per correction, then the duration line."""
        lines: list[dict[str, object]] = [
            {"episode": self.id, "t": round(f.t_start + FEEDBACK_DELAY_S, 6), "text": f.correction} for f in self.faults
        ]
        return lines + [{"episode": self.id, "duration": self.duration_s}]


def _balanced_kinds(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` fault kinds, each of :data:`FAULT_KINDS` ``n // 3`` or ``n // 3 + 1`` times, in a seeded order."""
    reps = -(-n // len(FAULT_KINDS))
    extra = rng.permutation(len(FAULT_KINDS))  # which kinds get the remainder
    pool = [kind for _ in range(reps - 1) for kind in FAULT_KINDS]
    pool += [FAULT_KINDS[int(i)] for i in extra[: n - len(pool)]]
    return [pool[int(i)] for i in rng.permutation(len(pool))]


def plan_episodes(settings: BenchmarkSettings) -> list[EpisodeSpec]:
    """The episodes ``settings`` describe (deterministic in ``settings.seed``)."""
    settings.check()
    rng = np.random.default_rng(settings.seed)
    cycles = int(settings.duration_s // SquatScene.CYCLE_S)
    specs: list[EpisodeSpec] = []
    faulted = max(0, cycles - settings.clean_cycles)
    for split, count in zip(SPLITS, (settings.train, settings.heldout)):
        # Fault kinds are balanced within a split (each kind equally often, in a seeded order): independent draws
        # can leave a split dominated by one kind (seed 0 drew 11 of 16 held-out faults as fast_tempo).
        kinds = iter(_balanced_kinds(rng, count * faulted))
        for k in range(count):
            faults = []
            clean = set(rng.permutation(cycles)[: settings.clean_cycles].tolist())
            for c in range(cycles):
                if c in clean:
                    continue
                start = c * SquatScene.CYCLE_S + SquatScene.STILL_S + float(rng.uniform(*FAULT_START_S))
                faults.append(Fault(next(kinds), round(start, 3), round(start + settings.fault_s, 3)))
            room = int(rng.integers(settings.rooms))
            noise_seed = int(rng.integers(1_000_000))
            specs.append(EpisodeSpec(f"{split}_{k:02d}", split, room, noise_seed, settings.duration_s, faults))
    return specs


def write_video(path: Path, scene: SquatScene, duration_s: float, fps: float) -> int:
    """Renders ``scene`` to an mp4 (mp4v) file; returns the frame count.

    Raises:
        OSError: If OpenCV cannot create the writer.
    """
    height, width = scene.size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))  # type: ignore[attr-defined]
    if not writer.isOpened():
        raise OSError(f"could not create a video writer for {path} (mp4v codec unavailable or path not writable)")
    n = int(round(duration_s * fps))
    try:
        for i in range(n):
            writer.write(cv2.cvtColor(scene.render(i / fps, i), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return n


def write_benchmark(out: Path, settings: BenchmarkSettings) -> list[EpisodeSpec]:
    """Writes the videos, the ground truth per split and ``episodes.json``; returns the episodes."""
    specs = plan_episodes(settings)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    for spec in specs:
        write_video(out / "videos" / f"{spec.id}.mp4", spec.scene(settings), spec.duration_s, settings.fps)
    for split in SPLITS:
        lines = [line for s in specs if s.split == split for line in s.ground_truth()]
        (out / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    meta = {
        "settings": {**asdict(settings), "size": list(settings.size)},
        "feedback_delay_s": FEEDBACK_DELAY_S,
        "episodes": [{**asdict(s), "video": f"videos/{s.id}.mp4"} for s in specs],
    }
    (out / "episodes.json").write_text(json.dumps(meta, indent=1) + "\n")
    n_faults = sum(len(s.faults) for s in specs)
    logger.info("wrote %d episodes (%d faults) to %s", len(specs), n_faults, out)
    return specs


def load_benchmark(root: str | Path) -> tuple[BenchmarkSettings, list[EpisodeSpec]]:
    """Reads ``episodes.json`` back.

    Raises:
        ValueError: If the file is missing or malformed.
    """
    path = Path(root) / "episodes.json"
    try:
        meta = json.loads(path.read_text())
        raw = dict(meta["settings"])
        settings = BenchmarkSettings(**{**raw, "size": tuple(raw["size"])})
        specs = [
            EpisodeSpec(e["id"], e["split"], e["room"], e["noise_seed"], e["duration_s"],
                        [Fault(**f) for f in e["faults"]])
            for e in meta["episodes"]
        ]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a benchmark written by evaluation.synthetic_benchmark ({exc})") from exc
    return settings, specs


def _size(text: str) -> tuple[int, int]:
    height, sep, width = text.partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH, e.g. 120x160")
    return int(height), int(width)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m evaluation.synthetic_benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=BenchmarkSettings.train, help="training episodes")
    parser.add_argument("--heldout", type=int, default=BenchmarkSettings.heldout, help="held-out episodes")
    parser.add_argument("--duration", type=float, default=BenchmarkSettings.duration_s, help="episode seconds")
    parser.add_argument("--clean-cycles", type=int, default=BenchmarkSettings.clean_cycles,
                        help="8 s cycles per episode without a fault (the others get one each)")
    parser.add_argument("--fps", type=float, default=BenchmarkSettings.fps)
    parser.add_argument("--size", type=_size, default=BenchmarkSettings.size, help="HEIGHTxWIDTH (default 120x160)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    settings = BenchmarkSettings(args.seed, args.train, args.heldout, args.duration, args.fps, args.size,
                                 clean_cycles=args.clean_cycles)
    try:
        settings.check()
    except ValueError as exc:
        print(f"synthetic_benchmark: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        specs = write_benchmark(args.out, settings)
    except OSError as exc:
        print(f"synthetic_benchmark: {exc}", file=sys.stderr)
        return EXIT_WRITER
    for split in SPLITS:
        chosen = [s for s in specs if s.split == split]
        print(f"{split}: {len(chosen)} episodes, {sum(len(s.faults) for s in chosen)} corrections")
    print(f"wrote {args.out} (synthetic scene; ground truth in train.jsonl / heldout.jsonl)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
