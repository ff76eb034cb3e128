"""The CPU-runnable pieces of ``python -m validation.gpu_numerics``: its exit code without CUDA and the fp16 policy
emulation on the tiny model.

``pytest tests/validation/test_gpu_numerics.py -s``. The GPU run itself is a prepared script (docs/export.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from validation.compare import compare, render_table
from validation.gpu_numerics import EXIT_NO_CUDA, Fp16WeightProducts, main
from validation.reference import reference_frames
from validation.tolerances import tolerance_for


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: the no-GPU exit cannot happen here")
def test_no_cuda_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a CUDA device the script exits EXIT_NO_CUDA (2) and records why, before loading anything."""
    assert main(["--out", str(tmp_path)]) == EXIT_NO_CUDA
    result = json.loads((tmp_path / "gpu_numerics.json").read_text())
    assert result["error"] == "no CUDA device visible to torch" and "machine" in result
    assert "no CUDA device" in capsys.readouterr().err


def test_fp16_policy_rounds_weight_products_only() -> None:
    """Products with a Parameter get fp16 operands and an fp16-rounded fp32 result; others are left alone."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(4, 64)
    with Fp16WeightProducts():
        y = linear(x)
        plain = F.linear(x, linear.weight.detach().clone())  # a tensor, not a Parameter: untouched
    expected = F.linear(x.half(), linear.weight.half(), linear.bias.half()).float()
    assert y.dtype == torch.float32 and torch.equal(y, expected)
    assert torch.equal(plain, F.linear(x, linear.weight.detach()))


def test_fp16_policy_on_the_tiny_image_stages(tiny_model) -> None:  # noqa: ANN001
    """The image encoder and image ETP under the emulated fp16 policy differ from fp32 (the emulation is active) but
    stay within the fp16 gates."""
    _, context = tiny_model.preprocess(reference_frames()[:4])
    ref = tiny_model.encode_images(context)
    ref_tokens = tiny_model.project_images(ref)
    with Fp16WeightProducts():
        out = tiny_model.encode_images(context)
        out_tokens = tiny_model.project_images(ref)
    gate = tolerance_for("fp16").vision
    rows = [
        compare("image_encoder", "clip_features", ref.numpy(), out.numpy(), gate, subject="fp16_policy"),
        compare("image_encoder", "image_tokens", ref_tokens.numpy(), out_tokens.numpy(), gate, subject="fp16_policy"),
    ]
    print(render_table(rows))
    assert all(r.passed for r in rows)
    assert all(r.max_abs_err > 1e-5 for r in rows)  # fp16 rounding happened (fp32 reruns differ by < 1e-6)
