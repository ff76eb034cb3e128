"""TensorRT: profiles (pure Python, always run), the backend's clear refusal without TensorRT, and real builds.

``pytest tests/export/test_tensorrt.py -rs``. The build/run tests need ``tensorrt`` and a CUDA device; elsewhere they
skip with the reason (printed with ``-rs``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from export.graphs import DECODER, IMAGE_ENCODER, VIDEO_ENCODER, io_tables
from export.tensorrt_builder import BuildSettings, TensorRTUnavailable, graph_profiles, import_tensorrt, profile_shapes
from runtime.backends.base import BackendError


def _tensorrt_reason() -> str | None:
    """Why TensorRT tests cannot run here, or None."""
    import torch

    try:
        import_tensorrt()
    except TensorRTUnavailable as exc:
        return str(exc)
    return None if torch.cuda.is_available() else "no CUDA device"


def test_decoder_profiles_cover_prefill_append_and_decode(ref_model) -> None:  # noqa: ANN001
    """Profile 0 spans Past = 0 prefill and long appends; profile 1 is S = 1 over Past >= 1."""
    settings = BuildSettings(max_context=8192, max_sequence=4096)
    inputs, _ = io_tables(ref_model)[DECODER].with_precision("fp16")
    prefill, decode = (profile_shapes(inputs, dims) for dims in graph_profiles(DECODER, settings))
    assert prefill["inputs_embeds"] == ((1, 1, 128), (1, 2432, 128), (1, 4096, 128))
    assert prefill["past_key_values.0.key"] == ((1, 2, 0, 32), (1, 2, 2432, 32), (1, 2, 8191, 32))
    assert decode["inputs_embeds"] == ((1, 1, 128), (1, 1, 128), (1, 1, 128))
    assert decode["past_key_values.1.value"][0] == (1, 2, 1, 32) and decode["position_ids"][2] == (1, 1)
    assert set(prefill) == set(decode) == {s.name for s in inputs}
    image = profile_shapes(io_tables(ref_model)[IMAGE_ENCODER].inputs, graph_profiles(IMAGE_ENCODER, settings)[0])
    assert image["pixel_values"] == ((1, 3, 224, 224), (16, 3, 224, 224), (32, 3, 224, 224))
    assert graph_profiles(VIDEO_ENCODER, settings) == []


def test_profile_errors_name_the_dimension(ref_model) -> None:  # noqa: ANN001
    """A profile missing a symbolic dimension, or inconsistent limits, fail with the name."""
    inputs = io_tables(ref_model)[DECODER].inputs
    with pytest.raises(ValueError, match="past_sequence"):
        profile_shapes(inputs, {"batch": (1, 1, 1), "sequence": (1, 1, 1)})
    with pytest.raises(ValueError, match="max_sequence"):
        BuildSettings(max_sequence=20000, max_context=12288)


def test_tensorrt_backend_refuses_clearly_without_tensorrt(exported_tiny: Path) -> None:
    """Without TensorRT (or CUDA) the backend raises BackendError saying what is missing."""
    reason = _tensorrt_reason()
    if reason is None:
        pytest.skip("TensorRT and CUDA are available here; the refusal path cannot be exercised")
    from runtime.backends.tensorrt_backend import TensorRTBackend

    with pytest.raises(BackendError, match="TensorRT is not importable|no CUDA device"):
        TensorRTBackend(exported_tiny)


def test_tensorrt_engines_build_and_pass_parity(tiny_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """``python -m export --tensorrt`` builds strongly typed engines and parity passes for TensorRT (CUDA machines)."""
    reason = _tensorrt_reason()
    if reason is not None:
        print(f"SKIP TensorRT build test: {reason}")
        pytest.skip(f"TensorRT build test: {reason}")
    import json

    from export.__main__ import main as export_main
    from validation.parity import main as parity_main

    model_dir, clip_dir = tiny_checkpoint
    code = export_main(
        [
            "--model",
            str(model_dir),
            "--clip",
            str(clip_dir),
            "--out",
            str(tmp_path),
            "--name",
            "trt",
            "--tensorrt",
            "--max-context",
            "4096",
            "--max-sequence",
            "2560",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    manifest = json.loads((tmp_path / "trt" / "manifest.json").read_text())
    assert (
        set(manifest["tensorrt"]) == {"fp32", "fp16"} and len(manifest["tensorrt"]["fp16"]["decoder"]["profiles"]) == 2
    )
    code = parity_main(["--engines", str(tmp_path / "trt"), "--steps", "4", "--out", str(tmp_path / "parity")])
    report = json.loads((tmp_path / "parity" / "parity.json").read_text())
    ran = {(b["backend"], b["precision"]) for b in report["backends"] if not b["skipped"]}
    assert {("tensorrt", "fp16"), ("tensorrt", "fp32")} <= ran
    assert code == 0, (tmp_path / "parity" / "parity.md").read_text()
