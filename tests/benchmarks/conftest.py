"""Fixtures of the benchmark smoke tests: each benchmark is run once per session on the tiny preset, sizes minimal.

The runs are smoke runs (one repeat, no warm-up where the CLI allows it): they check that every code path works and
that the reports are well formed, never how fast anything is (no timed assertions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tiny_checkpoint: tuple[Path, Path]) -> Path:
    """The folder holding the session's synthetic tiny ``model/`` and ``clip/``."""
    return tiny_checkpoint[0].parent


@pytest.fixture(scope="session")
def components_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``benchmarks.components`` on the PyTorch tiny model: a few stages, every ratio that needs one backend, curves."""
    from benchmarks import components

    out = tmp_path_factory.mktemp("components")
    rc = components.main([
        "--preset", "tiny", "--variants", "pytorch:fp32", "--stages", "preprocess,image_encoder,frame_selection,decode_step",
        "--ratios", "cache,append", "--repeats", "2", "--warmup", "0", "--batch-sizes", "1,2", "--contexts", "70,300",
        "--append-tokens", "64", "--cache-windows", "2", "--checkpoint-dir", str(tiny_checkpoint_dir), "--out", str(out),
    ])
    assert rc == 0
    return out, json.loads((out / "components.json").read_text())


@pytest.fixture(scope="session")
def stream_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``benchmarks.stream`` on the PyTorch tiny model: 3.6 s of synthetic stream (2 windows), unpaced and paced."""
    from benchmarks import stream

    out = tmp_path_factory.mktemp("stream")
    rc = stream.main([
        "--preset", "tiny", "--backend", "pytorch", "--source", "synthetic", "--duration", "3.6", "--every-n", "1",
        "--max-new-tokens", "2", "--warmup-windows", "0", "--checkpoint-dir", str(tiny_checkpoint_dir),
        "--out", str(out),
    ])
    assert rc == 0
    return out, json.loads((out / "stream.json").read_text())


@pytest.fixture(scope="session")
def gpu_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``benchmarks.gpu`` in its CPU smoke mode on the tiny preset."""
    from benchmarks import gpu

    out = tmp_path_factory.mktemp("gpu")
    rc = gpu.main(["--device", "cpu", "--preset", "tiny", "--quick", "--checkpoint-dir", str(tiny_checkpoint_dir),
                   "--out", str(out)])
    assert rc == 0
    return out, json.loads((out / "gpu.json").read_text())
