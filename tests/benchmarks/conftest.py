"""Fixtures of the benchmark smoke tests: each benchmark is run once per session on the tiny preset, sizes minimal.

The runs are smoke runs (one repeat, no warm-up where the CLI allows it) on the PyTorch backend (no export needed):
they check that every code path works and that the reports are well formed, never how fast anything is (no timed
assertions).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tiny_checkpoint: tuple[Path, Path]) -> Path:
    """The folder holding the session's synthetic tiny ``model/`` and ``clip/``."""
    return tiny_checkpoint[0].parent


def _run(main: Callable[[list[str]], int], args: list[str], out: Path, name: str) -> tuple[Path, dict[str, Any]]:
    assert main([*args, "--out", str(out)]) == 0
    return out, json.loads((out / name).read_text())


@pytest.fixture(scope="session")
def components_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``benchmarks.components`` on the PyTorch tiny model: a few stages, every ratio that needs one backend, curves."""
    from benchmarks import components

    return _run(components.main, [
        "--preset", "tiny", "--variants", "pytorch:fp32",
        "--stages", "preprocess,image_encoder,frame_selection,video_encoder,decode_step",
        "--ratios", "cache,append", "--repeats", "2", "--warmup", "0", "--batch-sizes", "1,2", "--contexts", "70,300",
        "--append-tokens", "64", "--cache-windows", "2", "--checkpoint-dir", str(tiny_checkpoint_dir),
    ], tmp_path_factory.mktemp("components"), "components.json")


@pytest.fixture(scope="session")
def stream_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``benchmarks.stream`` on the PyTorch tiny model: 3.5 s of synthetic stream (2 windows), unpaced and paced."""
    from benchmarks import stream

    return _run(stream.main, [
        "--preset", "tiny", "--backend", "pytorch", "--source", "synthetic", "--duration", "3.5", "--every-n", "1",
        "--max-new-tokens", "2", "--warmup-windows", "0", "--checkpoint-dir", str(tiny_checkpoint_dir),
    ], tmp_path_factory.mktemp("stream"), "stream.json")


@pytest.fixture(scope="session")
def decode_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``benchmarks.decode`` on the PyTorch tiny model: two rounds, three generated tokens each."""
    from benchmarks import decode

    return _run(decode.main, [
        "--preset", "tiny", "--variants", "pytorch:fp32", "--rounds", "2", "--warmup-rounds", "0", "--new-tokens", "3",
        "--isolated-calls", "2", "--checkpoint-dir", str(tiny_checkpoint_dir),
    ], tmp_path_factory.mktemp("decode"), "decode.json")


@pytest.fixture(scope="session")
def allocations_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``benchmarks.allocations`` on the PyTorch tiny model (the code is backend-generic): two context lengths."""
    from benchmarks import allocations

    return _run(allocations.main, [
        "--preset", "tiny", "--variants", "pytorch:fp32", "--windows", "0,1", "--steps", "3", "--warmup", "1",
        "--checkpoint-dir", str(tiny_checkpoint_dir),
    ], tmp_path_factory.mktemp("allocations"), "allocations.json")


@pytest.fixture(scope="session")
def gpu_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``benchmarks.gpu`` in its CPU smoke mode on the tiny preset."""
    from benchmarks import gpu

    return _run(gpu.main, ["--device", "cpu", "--preset", "tiny", "--quick", "--no-fast-path",
                           "--checkpoint-dir", str(tiny_checkpoint_dir)], tmp_path_factory.mktemp("gpu"), "gpu.json")
