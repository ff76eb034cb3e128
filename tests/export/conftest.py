"""Fixtures of the export tests: the session's tiny export (``exported_tiny``, in ``tests/conftest.py``, shared with
``tests/validation``), one strictly loaded reference with the action-token rows (the sequential selective scan, the
golden yardstick) and the ONNX Runtime backends on the exported graphs.
"""

from __future__ import annotations

from pathlib import Path

import pytest


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
    """Both preprocessing branches of the parity harness's 16 frames of the synthetic squat scene."""
    from validation.reference import reference_frames

    return ref_model.preprocess(reference_frames())
