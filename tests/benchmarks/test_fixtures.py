"""Variant specs, the synthetic scene's windows and the ratio pairs of the stage table.

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_fixtures.py``
"""

from __future__ import annotations

import pytest

from benchmarks.fixtures import Variant, bench_config, parse_variant, parse_variants, scene_frames
from benchmarks.stages import ratio_pairs, stage_ratios


def test_variant_specs_parse_with_an_optional_device() -> None:
    """``backend:precision`` is on the CPU; a third field names the device (``cuda:1`` included)."""
    assert parse_variant("onnxruntime:fp32") == Variant("onnxruntime", "fp32", "cpu")
    assert parse_variant("pytorch:fp16:cuda").name == "pytorch:fp16:cuda"
    assert parse_variant("pytorch:fp16:cuda:1") == Variant("pytorch", "fp16", "cuda:1")
    assert [v.name for v in parse_variants("pytorch:fp32, onnxruntime:fp16")] == ["pytorch:fp32", "onnxruntime:fp16"]


@pytest.mark.parametrize("spec", ["onnxruntime", "torch:fp32", "pytorch:bf16", "pytorch:fp32:cpu:extra"])
def test_bad_variant_specs_name_the_allowed_values(spec: str) -> None:
    """The error repeats the spec and lists the backends and precisions."""
    with pytest.raises(ValueError, match=rf"variant '{spec}': expected backend:precision\[:device\] with backend in "
                                         r"pytorch\|onnxruntime\|tensorrt"):
        parse_variant(spec)


def test_scene_frames_follow_the_session_windowing() -> None:
    """Window 1 starts one stride (1.5 s) in; 16 frames sampled inside it, indexed by stream frame number."""
    config = bench_config()
    window, frames = scene_frames(config, 1)
    assert (window.index, window.t_start, window.t_end) == (1, 1.5, 3.5)
    assert len(frames) == 16
    assert all(window.t_start <= f.timestamp <= window.t_end for f in frames)
    assert frames[0].index == round(frames[0].timestamp * 30)


def test_ratio_pairs_compare_backends_and_precisions_on_one_device() -> None:
    """Each exported backend with PyTorch at its precision and device; each fp16 with its fp32; no cross-device pair."""
    names = ["pytorch:fp32", "onnxruntime:fp32", "onnxruntime:fp16", "pytorch:fp16:cuda", "pytorch:fp32:cuda",
             "tensorrt:fp16:cuda"]
    assert set(ratio_pairs(names)) == {
        ("onnxruntime:fp32", "pytorch:fp32"),
        ("onnxruntime:fp16", "onnxruntime:fp32"),
        ("pytorch:fp16:cuda", "pytorch:fp32:cuda"),
        ("tensorrt:fp16:cuda", "pytorch:fp16:cuda"),
    }


def test_stage_ratios_use_the_same_rounds() -> None:
    """Ratios are per-round from the interleaved samples."""
    wall = {"image_encoder": {"pytorch:fp32": [10.0, 20.0], "onnxruntime:fp32": [5.0, 10.0],
                              "onnxruntime:fp16": [5.0, 20.0]}}
    ratios = stage_ratios(wall, list(wall["image_encoder"]))
    assert set(ratios) == {"onnxruntime:fp32 / pytorch:fp32", "onnxruntime:fp16 / onnxruntime:fp32"}
    assert ratios["onnxruntime:fp32 / pytorch:fp32"]["image_encoder"]["ratio_p50"] == 0.5
    assert ratios["onnxruntime:fp16 / onnxruntime:fp32"]["image_encoder"]["ratio_p50"] == 1.5
