"""Fast selective-scan formulations against the reference ``selective_scan_ref`` (PyTorch) and in ONNX Runtime.

Pins: the chunked form's padding/chunk-carry logic (any L, any chunk size), overflow-safety on the probe's stress
inputs (delta up to ~8, |delta*A| up to ~140 in one step), the guarded ONNX Scan's two branches, and that both ONNX
formulations use standard ops only. Run: ``.venv/bin/pytest tests/test_selective_scan.py -q`` (a few seconds).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.scan_formulations import (
    INPUT_NAMES,
    build_scan_model,
    export_traced_scan,
    make_scan_inputs,
    op_types,
    register_scan_marker_symbolic,
    replace_scan_markers,
    selective_scan_float64,
)
from mobile_videogpt.selective_scan import (
    SCAN_IMPLS,
    get_scan_impl,
    selective_scan_chunked,
    selective_scan_marker,
    selective_scan_ref,
    selective_scan_triton,
)

# fp32 with a different summation order: a few ulp of max|y| (~10 here).
ATOL = 2e-5
RTOL = 1e-5
SMALL = {"length": 100, "dim": 8, "n_state": 4}


def _random_inputs(batch: int, dim: int, length: int, n_state: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Generic inputs, including negative raw delta (no softplus) and unit-scale A."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(batch, dim, length, generator=gen),
        "delta": 0.5 * torch.rand(batch, dim, length, generator=gen),
        "A": -torch.rand(dim, n_state, generator=gen) * 2.0,
        "B": torch.randn(batch, n_state, length, generator=gen),
        "C": torch.randn(batch, n_state, length, generator=gen),
        "D": torch.randn(dim, generator=gen),
        "z": torch.randn(batch, dim, length, generator=gen),
        "delta_bias": torch.randn(dim, generator=gen) * 0.1,
    }


def _report(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    err = (got.double() - want.double()).abs()
    print(f"{name}: max abs err {err.max().item():.3e}, mean {err.mean().item():.3e}")


def _ort_run(model: onnx.ModelProto | str, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    source = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return sess.run(None, {k: inputs[k].numpy() for k in INPUT_NAMES})[0]


def test_registry_names_and_lookup() -> None:
    """The config string selects the implementation; both are registered under their documented names."""
    assert set(SCAN_IMPLS) == {"ref", "chunked", "scan_marker", "triton"}
    assert get_scan_impl("ref") is selective_scan_ref
    assert get_scan_impl("chunked") is selective_scan_chunked
    assert get_scan_impl("scan_marker") is selective_scan_marker
    assert get_scan_impl("triton") is selective_scan_triton


def test_unknown_impl_lists_valid_names() -> None:
    valid = r"\['chunked', 'ref', 'scan_marker', 'triton'\]"
    with pytest.raises(ValueError, match=rf"unknown scan_impl 'cuda'; valid names: {valid}"):
        get_scan_impl("cuda")


def test_triton_impl_without_triton_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Choosing ``triton`` where the package is missing is an error naming it, never a silent switch to another
    implementation (the name selects; whether an import succeeds never does)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    with pytest.raises(ValueError, match=r"scan_impl 'triton' needs the triton package.*pip install triton"):
        get_scan_impl("triton")
    assert get_scan_impl("chunked") is selective_scan_chunked  # the others do not need it


def test_chunked_rejects_bad_chunk_size() -> None:
    x = _random_inputs(1, 2, 5, 2)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        selective_scan_chunked(x["u"], x["delta"], x["A"], x["B"], x["C"], chunk_size=0)


@pytest.mark.parametrize(
    ("use_d", "use_z", "use_bias", "softplus"), list(itertools.product([False, True], repeat=4))
)
def test_chunked_matches_ref_all_flags(use_d: bool, use_z: bool, use_bias: bool, softplus: bool) -> None:
    """Every optional input/flag combination, with the last state; L=37 is not a multiple of c=8 (padding path)."""
    x = _random_inputs(2, 6, 37, 4)
    kwargs = {
        "D": x["D"] if use_d else None,
        "z": x["z"] if use_z else None,
        "delta_bias": x["delta_bias"] if use_bias else None,
        "delta_softplus": softplus,
        "return_last_state": True,
    }
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    y_ref, s_ref = selective_scan_ref(*args, **kwargs)
    y, s = selective_scan_chunked(*args, **kwargs, chunk_size=8)
    _report("chunked", y, y_ref)
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("chunk_size", [1, 2, 7, 16, 25, 64])
def test_chunked_any_chunk_size(chunk_size: int) -> None:
    """c=1 (no in-chunk steps), c dividing L, c not dividing L, c > L (one chunk, no carry scan)."""
    x = _random_inputs(1, 5, 50, 3, seed=1)
    y_ref, s_ref = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    y, s = selective_scan_chunked(**x, delta_softplus=True, return_last_state=True, chunk_size=chunk_size)
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", ["normal", "stress"])
def test_chunked_probe_inputs_finite_and_exact(kind: str) -> None:
    """The probe's recipe; stress overflows an unguarded factorised scan, the chunked form must stay finite."""
    x = make_scan_inputs(kind, **SMALL)
    y64 = selective_scan_float64(**x, delta_softplus=True)
    y = selective_scan_chunked(**x, delta_softplus=True, chunk_size=16)
    y_ref = selective_scan_ref(**x, delta_softplus=True)
    _report(f"chunked {kind} vs fp64", y, y64)
    _report(f"ref {kind} vs fp64", y_ref, y64)
    assert torch.isfinite(y).all()
    scale = y64.abs().max().item()
    assert (y.double() - y64).abs().max().item() <= 1e-6 * scale + 1e-6
    torch.testing.assert_close(y, y_ref, atol=ATOL * scale, rtol=RTOL)


def test_chunked_keeps_input_dtype_and_fp32_state() -> None:
    """Low-precision inputs: compute in fp32, y cast back to the input dtype, state stays fp32 (as the reference)."""
    low = ("u", "delta", "z", "B", "C")
    x = {k: v.to(torch.bfloat16) if k in low else v for k, v in _random_inputs(1, 4, 20, 2).items()}
    y, s = selective_scan_chunked(**x, delta_softplus=True, return_last_state=True, chunk_size=8)
    y_ref, s_ref = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", ["normal", "stress"])
def test_traced_chunked_onnx_matches_ref(kind: str, tmp_path: Path) -> None:
    """torch.onnx.export(dynamo=False, opset 17) of the chunked form runs in ORT with standard ops only."""
    x = make_scan_inputs(kind, **SMALL)
    path = tmp_path / "scan.onnx"
    export_traced_scan(path, x, "chunked", chunk_size=16)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert all(d.domain in ("", "ai.onnx") for d in model.opset_import), model.opset_import
    assert not {"Loop", "Scan", "If"} & op_types(model.graph)
    y = _ort_run(str(path), x)
    y_ref = selective_scan_ref(**x, delta_softplus=True).numpy()
    print(f"traced {kind}: max abs err {np.abs(y - y_ref).max():.3e}")
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, y_ref, atol=ATOL * np.abs(y_ref).max(), rtol=RTOL)


@pytest.mark.parametrize(("kind", "chunk_size"), [("normal", 16), ("stress", 16), ("stress", 32)])
def test_guarded_scan_onnx_matches_ref(kind: str, chunk_size: int) -> None:
    """The guarded ONNX Scan; on stress inputs the If must route overflowing chunks to the robust branch."""
    x = make_scan_inputs(kind, **SMALL)
    model = build_scan_model(chunk_size)
    assert op_types(model.graph) >= {"Scan", "If"}
    y = _ort_run(model, x)
    y_ref = selective_scan_ref(**x, delta_softplus=True).numpy()
    print(f"guarded scan {kind} c={chunk_size}: max abs err {np.abs(y - y_ref).max():.3e}")
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, y_ref, atol=ATOL * np.abs(y_ref).max(), rtol=RTOL)


@pytest.mark.parametrize(("kind", "chunk_size"), [("normal", 16), ("stress", 16), ("stress", 8)])
def test_sequential_scan_onnx_matches_ref(kind: str, chunk_size: int) -> None:
    """The Scan with an unrolled in-chunk body: no If, only per-step decays, so it needs no guard."""
    x = make_scan_inputs(kind, **SMALL)
    model = build_scan_model(chunk_size, body="sequential")
    assert "If" not in op_types(model.graph)
    y = _ort_run(model, x)
    y_ref = selective_scan_ref(**x, delta_softplus=True).numpy()
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, y_ref, atol=ATOL * np.abs(y_ref).max(), rtol=RTOL)


def test_scan_model_rejects_unknown_body() -> None:
    with pytest.raises(ValueError, match=r"body must be one of \['guarded', 'sequential'\], got 'loop'"):
        build_scan_model(16, body="loop")


@pytest.mark.parametrize("threshold", [-1.0, 1e30])
def test_guarded_scan_each_branch_alone(threshold: float) -> None:
    """threshold=-1 forces the Hillis-Steele branch everywhere, 1e30 the factorised one; both must be exact."""
    x = make_scan_inputs("normal", **SMALL)
    y = _ort_run(build_scan_model(16, threshold=threshold), x)
    y_ref = selective_scan_ref(**x, delta_softplus=True).numpy()
    np.testing.assert_allclose(y, y_ref, atol=ATOL * np.abs(y_ref).max(), rtol=RTOL)


def test_unguarded_factorised_overflows_on_stress() -> None:
    """Why the guard exists: the factorised branch alone (c=64: half-span 32 steps) overflows on stress inputs."""
    x = make_scan_inputs("stress", **SMALL)
    y = _ort_run(build_scan_model(64, threshold=1e30), x)
    assert not np.isfinite(y).all()


def test_guarded_scan_is_shape_generic() -> None:
    """One built model serves other batch sizes and lengths (L=37: padding; L=5: a single partial chunk)."""
    model = build_scan_model(16)
    for batch, length in [(2, 37), (1, 5)]:
        x = _random_inputs(batch, 3, length, 2, seed=2)
        y = _ort_run(model, x)
        y_ref = selective_scan_ref(**x, delta_softplus=True).numpy()
        np.testing.assert_allclose(y, y_ref, atol=ATOL, rtol=RTOL)


def test_marker_eager_matches_ref_and_rejects_other_calls() -> None:
    """The marker op computes the chunked scan in eager mode and refuses calls the ONNX rewrite would get wrong."""
    x = make_scan_inputs("normal", **SMALL)
    y = selective_scan_marker(**x, delta_softplus=True)
    torch.testing.assert_close(y, selective_scan_ref(**x, delta_softplus=True), atol=ATOL * 10, rtol=RTOL)
    with pytest.raises(ValueError, match="unsupported: z=None, delta_softplus=False"):
        selective_scan_marker(**{**x, "z": None})


class _TwoScans(torch.nn.Module):
    """Both directions, as a bidirectional Mamba layer calls them: forward scan plus flipped scan."""

    def forward(self, u, delta, A, B, C, D, z, delta_bias):  # noqa: ANN001, ANN201, N803 - mirrors the scan's names
        scan = get_scan_impl("scan_marker")
        fwd = scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)
        flip = [t.flip(-1) for t in (u, delta, B, C, z)]
        bwd = scan(flip[0], flip[1], A, flip[2], flip[3], D, flip[4], delta_bias, delta_softplus=True)
        return fwd + bwd.flip(-1)


@pytest.mark.parametrize("body", ["guarded", "sequential"])
def test_marker_export_rewrites_to_standard_scan(body: str, tmp_path: Path) -> None:
    """Trace with scan_impl='scan_marker', rewrite each marker into a guarded Scan: standard ops, same result."""
    x = make_scan_inputs("stress", **SMALL)
    register_scan_marker_symbolic()
    path = tmp_path / "two_scans.onnx"
    args = tuple(x[n] for n in INPUT_NAMES)
    torch.onnx.export(_TwoScans(), args, str(path), input_names=list(INPUT_NAMES), opset_version=17, dynamo=False)
    exported = onnx.load(str(path))
    assert sum(n.op_type == "SelectiveScan" for n in exported.graph.node) == 2
    model = replace_scan_markers(exported, chunk_size=16, body=body)
    assert [imp.domain for imp in model.opset_import] == [""]
    assert all("::" not in t for t in op_types(model.graph))
    assert sum(n.op_type == "Scan" for n in model.graph.node) == 2
    y = _ort_run(model, x)
    with torch.no_grad():
        y_ref = _TwoScans()(*args).numpy()  # eager marker == chunked, checked against the reference above
    np.testing.assert_allclose(y, y_ref, atol=ATOL * np.abs(y_ref).max(), rtol=RTOL)


def test_replace_without_marker_raises() -> None:
    with pytest.raises(ValueError, match="no mvg_scan::SelectiveScan marker found"):
        replace_scan_markers(build_scan_model(16))
