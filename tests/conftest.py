"""Shared fixtures: the golden directory and synthetic tiny checkpoints (written once per session, offline)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN_ENV = "MVGPT_GOLDEN_DIR"

torch.set_num_threads(2)
# Without CUDA the Triton scan tests run Triton's interpreter. Triton reads the switch when it is imported, and the
# model code imports it (through transformers), so it is set here, before any test module is collected.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def golden_dir() -> Path:
    """The golden conformance directory (``$MVGPT_GOLDEN_DIR`` or ``../shared/golden/mvgpt_tiny_a``)."""
    return Path(os.environ.get(GOLDEN_ENV, REPO.parent / "shared" / "golden" / "mvgpt_tiny_a"))


@pytest.fixture(scope="session")
def golden() -> Path:
    """Golden directory; skips with the reason when absent, but fails under CI (CI=true) where it must exist."""
    path = golden_dir()
    if not (path / "expected.npz").is_file():
        message = f"golden conformance vectors not found at {path} (set {GOLDEN_ENV})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; under CI the golden directory is required")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic ``tiny`` checkpoint (real Qwen2.5 tokenizer, tiny towers, random weights)."""
    from mobile_videogpt.synthetic import write_synthetic_checkpoint

    return write_synthetic_checkpoint("tiny", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_golden_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic ``tiny-golden`` checkpoint (the golden geometry, raw-id prompts)."""
    from mobile_videogpt.synthetic import write_synthetic_checkpoint

    return write_synthetic_checkpoint("tiny-golden", tmp_path_factory.mktemp("tiny_golden"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: tuple[Path, Path]):  # noqa: ANN201 - returns MobileVideoGPT
    """The tiny model loaded strictly (fp32, CPU)."""
    from mobile_videogpt.checkpoint import load_model

    return load_model(*tiny_checkpoint)


@pytest.fixture(scope="session")
def one_thread() -> Iterator[None]:
    """One torch thread for the session's export work (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def exported_tiny(
    tiny_checkpoint: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, one_thread: None
) -> Path:
    """``python -m export --model tiny --clip tiny --name tiny`` into a temporary directory; returns engines/tiny.

    One export of the tiny checkpoint (fp32 + fp16 graphs, ~10 s on 2 cores) serves the whole session (``tests/export``
    and ``tests/validation``). Tracing runs with one torch thread: on a shared 2-core machine two are several times
    slower.
    """
    from export.__main__ import main

    model_dir, clip_dir = tiny_checkpoint
    out = tmp_path_factory.mktemp("engines")
    code = main(
        ["--model", str(model_dir), "--clip", str(clip_dir), "--out", str(out), "--name", "tiny", "--threads", "1"]
    )
    assert code == 0, "python -m export failed on the tiny checkpoint"
    return out / "tiny"


@pytest.fixture(scope="session")
def test_videos(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - returns benchmarks.media.VideoSet
    """Tiny BT.709/BT.601/full-range, VFR, rotated, truncated, corrupt, empty and junk clips (ffmpeg, ~2 s).

    Skips with the reason where the ffmpeg command-line tool is missing (``make setup`` installs it via apt-get).
    """
    from benchmarks.media import ffmpeg_missing_reason, make_test_videos

    reason = ffmpeg_missing_reason()
    if reason:
        pytest.skip(reason)
    return make_test_videos(tmp_path_factory.mktemp("videos"))
