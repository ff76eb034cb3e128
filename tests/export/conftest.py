"""Fixtures of the export tests: the tiny synthetic model exported once per session (``python -m export``).

The whole ``tests/export`` suite shares one export of the tiny checkpoint (fp32 + fp16 graphs, ~10 s on 2 cores) and
one strictly loaded reference with the action-token rows (the sequential selective scan, the golden yardstick).
Tracing and the reference run with one torch thread: on a shared 2-core machine two threads are several times slower.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


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
    """``python -m export --model tiny --clip tiny --name tiny`` into a temporary directory; returns engines/tiny."""
    from export.__main__ import main

    model_dir, clip_dir = tiny_checkpoint
    out = tmp_path_factory.mktemp("engines")
    code = main(
        ["--model", str(model_dir), "--clip", str(clip_dir), "--out", str(out), "--name", "tiny", "--threads", "1"]
    )
    assert code == 0, "python -m export failed on the tiny checkpoint"
    return out / "tiny"


@pytest.fixture(scope="session")
def ref_model(tiny_checkpoint: tuple[Path, Path], one_thread: None):  # noqa: ANN201 - MobileVideoGPT
    """The tiny reference with the action-token rows (as exported), fp32, sequential scan."""
    from mobile_videogpt.checkpoint import load_model

    return load_model(*tiny_checkpoint, extend_vocab=True, scan_impl="ref")


@pytest.fixture(scope="session")
def ort_fp32(exported_tiny: Path):  # noqa: ANN201 - OnnxRuntimeBackend
    """The fp32 graphs behind the onnxruntime backend."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(exported_tiny, precision="fp32", intra_op_threads=1)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def ort_fp16(exported_tiny: Path):  # noqa: ANN201 - OnnxRuntimeBackend
    """The fp16 graphs behind the onnxruntime backend (CPU provider)."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(exported_tiny, precision="fp16", intra_op_threads=1)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def clip_inputs(ref_model):  # noqa: ANN001, ANN201 - (video_pixels, context_pixels) tensors
    """Both preprocessing branches of the parity harness's 16 synthetic frames."""
    from export.parity import synthetic_frames

    return ref_model.preprocess(synthetic_frames())
