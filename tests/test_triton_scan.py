"""The Triton selective scan (``scan_impl: triton``) against ``selective_scan_ref``, on the CPU and the GPU.

Without CUDA the kernels run in Triton's interpreter on CPU tensors: ``TRITON_INTERPRET=1`` is set below, before any
test builds them (only these tests call the kernels; the switch is Triton's own and is read when the kernel module is
first imported). Where CUDA exists the same tests run the compiled kernels on the GPU, and the GPU-only tests (full
VideoMamba sizes, the golden tokens end to end) run too; here they skip with the reason. The interpreter costs about
2 ms per time step and channel block, so the CPU sizes are small. The compile test builds the kernels for sm_90
(H100/H200) with Triton's bundled ptxas, so a kernel that would not compile fails here, not on the GPU machine.

Run: ``.venv/bin/pytest tests/test_triton_scan.py -q`` (about 15 s on the 2-core VM).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from export.scan_formulations import make_scan_inputs, selective_scan_float64  # noqa: E402
from mobile_videogpt.config import VideoMambaConfig  # noqa: E402
from mobile_videogpt.selective_scan import get_scan_impl, selective_scan_ref  # noqa: E402

kernels = pytest.importorskip("mobile_videogpt.kernels.selective_scan", reason="triton is not installed")

DEVICE = "cuda" if HAS_CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (the compiled Triton kernels)")
# fp32 with another summation order (chunk carries): a few ulp of max|y|.
ATOL, RTOL = 2e-5, 1e-5


def _inputs(batch: int, dim: int, length: int, n_state: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Generic inputs (the model's value ranges: softplus step sizes, negative A), on the test device."""
    gen = torch.Generator().manual_seed(seed)
    x = {
        "u": torch.randn(batch, dim, length, generator=gen),
        "delta": 0.5 * torch.randn(batch, dim, length, generator=gen),
        "A": -torch.rand(dim, n_state, generator=gen) * 4.0,
        "B": torch.randn(batch, n_state, length, generator=gen),
        "C": torch.randn(batch, n_state, length, generator=gen),
        "D": torch.randn(dim, generator=gen),
        "z": torch.randn(batch, dim, length, generator=gen),
        "delta_bias": torch.randn(dim, generator=gen) * 0.1,
    }
    return {k: v.to(DEVICE) for k, v in x.items()}


def _report(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    err = (got.double() - want.double()).abs()
    print(f"{name}: max abs err {err.max().item():.3e} (max |ref| {want.abs().max().item():.3g})")


def test_all_options_with_last_state_match_ref() -> None:
    """D, z, delta_bias, softplus and the last state, with two batch items, a partial channel block (12 channels in
    blocks of 8) and a partial last chunk (L=70 in chunks of 16): the masks and the chunk carries."""
    x = _inputs(2, 12, 70, 16)
    got, got_state = kernels.selective_scan_triton(**x, delta_softplus=True, return_last_state=True,
                                                   chunk_size=16, block_d=8)
    want, want_state = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    _report("all options", got, want)
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(got_state, want_state, atol=ATOL, rtol=RTOL)


def test_no_optional_inputs_match_ref() -> None:
    """Without D, z, delta_bias and softplus (positive raw step sizes): the constexpr-off paths."""
    x = _inputs(1, 8, 40, 4)
    delta = x["delta"].abs()
    got = kernels.selective_scan_triton(x["u"], delta, x["A"], x["B"], x["C"], chunk_size=16, block_d=8)
    want = selective_scan_ref(x["u"], delta, x["A"], x["B"], x["C"])
    _report("no options", got, want)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", ["normal", "stress"])
def test_probe_inputs_stay_finite_and_exact(kind: str) -> None:
    """The probe's recipe; ``stress`` has delta up to ~8 and |delta*A| up to ~140 in one step, where an unguarded
    log-space chunk overflows. Only per-step decays <= 1 are formed, so the output is finite and within fp32 error of
    the float64 loop."""
    x = {k: v.to(DEVICE) for k, v in make_scan_inputs(kind, length=96, dim=16, seed=3).items()}
    got = kernels.selective_scan_triton(**x, delta_softplus=True, chunk_size=32, block_d=16)
    want = selective_scan_float64(**{k: v.cpu() for k, v in x.items()}, delta_softplus=True)
    _report(kind, got.cpu(), want)
    assert torch.isfinite(got).all()
    scale = float(want.abs().max())
    assert float((got.cpu().double() - want).abs().max()) <= 2e-6 * max(scale, 1.0)


def test_long_sequence_with_many_chunks_matches_ref() -> None:
    """A long sequence carried over many chunks: 600 tokens in 38 chunks of 16 on the CPU (the interpreter), the real
    1569 tokens and 1152 channels on the GPU."""
    dim, length = (1152, 1569) if HAS_CUDA else (4, 600)
    x = _inputs(1, dim, length, 16, seed=1)
    got = kernels.selective_scan_triton(**x, delta_softplus=True, chunk_size=16 if not HAS_CUDA else 64,
                                        block_d=4 if not HAS_CUDA else 32)
    want = selective_scan_ref(**x, delta_softplus=True)
    _report(f"long L={length}", got, want)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_fp16_inputs_give_fp16_output_from_fp32_state() -> None:
    """fp16 inputs (the fp16 model's activations): computed in fp32 inside, returned in fp16, equal to the reference
    on the same fp16 inputs within fp16 output rounding."""
    x = {k: (v.half() if k not in ("A",) else v) for k, v in _inputs(1, 8, 48, 16, seed=2).items()}
    got = kernels.selective_scan_triton(**x, delta_softplus=True, chunk_size=16, block_d=8)
    want = selective_scan_ref(**x, delta_softplus=True)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), want.float(), atol=2e-3, rtol=2e-3)


def test_model_layout_strided_inputs_match_ref() -> None:
    """The strides the mixer passes (u a slice of the conv output, delta and z channel-contiguous transposes, B and C
    transposed views of x_proj's output) give the same result as contiguous inputs."""
    x = _inputs(1, 8, 30, 4)
    u = torch.cat([x["u"], torch.zeros_like(x["u"][..., :3])], dim=-1)[..., :30]  # conv output cut to L
    delta = x["delta"].transpose(1, 2).contiguous().transpose(1, 2)
    z = x["z"].transpose(1, 2).contiguous().transpose(1, 2)
    b = x["B"].transpose(1, 2).contiguous().transpose(1, 2)
    c = x["C"].transpose(1, 2).contiguous().transpose(1, 2)
    got = kernels.selective_scan_triton(u, delta, x["A"], b, c, x["D"], z, x["delta_bias"], True,
                                        chunk_size=8, block_d=8)
    want = selective_scan_ref(**x, delta_softplus=True)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_bidirectional_mixer_matches_ref() -> None:
    """The bimamba v2 mixer as VideoMamba calls it: forward scan, then the reversed sequence with the ``*_b`` weights,
    flipped back and summed, through the registry name ``triton``."""
    from mobile_videogpt.videomamba import BiMambaMixer

    torch.manual_seed(0)
    mixer = BiMambaMixer(VideoMambaConfig(embed_dim=8, d_state=16, scan_impl="ref")).to(DEVICE)
    with torch.no_grad():
        for p in mixer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    hidden = torch.randn(1, 40, 8, device=DEVICE)
    with torch.no_grad():
        want = mixer(hidden)
        mixer._scan = get_scan_impl("triton")
        got = mixer(hidden)
    _report("mixer", got, want)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_golden_layer0_scan_inputs_match_ref(golden: Path) -> None:
    """The golden checkpoint's layer-0 scans on the golden frames (both directions, the inputs recorded from the
    reference run), cut to 48 channels and the first 160 tokens on the CPU (the whole scans on the GPU)."""
    from mobile_videogpt.checkpoint import load_model

    model = load_model(golden / "checkpoint", golden / "clip", scan_impl="ref").to(DEVICE)
    expected = np.load(golden / "expected.npz")
    picks = expected["selected_frames"]
    video = torch.from_numpy(expected["video_pixels"])[[c * 8 + int(j) for c in range(2) for j in picks[c]]]
    mixer = model.lm.model.vision_tower.vision_encoder.layers[0].mixer
    recorded: list[dict[str, torch.Tensor]] = []

    class _Stop(Exception):
        pass

    def record(*args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        names = ("u", "delta", "A", "B", "C", "D")
        recorded.append({**dict(zip(names, args)), "z": kwargs["z"], "delta_bias": kwargs["delta_bias"]})
        if len(recorded) == 2:
            raise _Stop
        return selective_scan_ref(*args, **kwargs)  # type: ignore[arg-type]

    mixer._scan = record
    with torch.no_grad(), pytest.raises(_Stop):
        model.encode_video(video.to(DEVICE))
    channels, tokens = (slice(None), slice(None)) if HAS_CUDA else (slice(0, 48), slice(0, 160))
    for direction, x in zip(("forward", "backward"), recorded):
        cut = {k: (v[channels] if v.dim() <= 2 else v[:, channels, tokens] if k not in ("B", "C")
                   else v[:, :, tokens]) for k, v in x.items()}
        got = kernels.selective_scan_triton(**cut, delta_softplus=True, block_d=64 if not HAS_CUDA else 32)
        want = selective_scan_ref(**cut, delta_softplus=True)
        _report(f"golden layer 0 {direction}", got, want)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


@needs_cuda
def test_golden_videomamba_tokens_with_triton_scan(golden: Path) -> None:
    """GPU: the golden VideoMamba tokens (all scans of the 2-layer encoder) with ``scan_impl: triton`` within the
    golden README's fp32 threshold (1e-4)."""
    from mobile_videogpt.checkpoint import load_model

    model = load_model(golden / "checkpoint", golden / "clip", scan_impl="triton").to("cuda")
    expected = np.load(golden / "expected.npz")
    picks = expected["selected_frames"]
    video = torch.from_numpy(expected["video_pixels"])[[c * 8 + int(j) for c in range(2) for j in picks[c]]]
    torch.backends.cudnn.allow_tf32 = False  # the golden vectors are plain fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    tokens = model.encode_video(video.cuda()).cpu()
    err = (tokens - torch.from_numpy(expected["videomamba_tokens"])).abs().max().item()
    print(f"golden videomamba_tokens, triton scan on CUDA: max abs err {err:.3e}")
    assert err <= 1e-4


def test_cpu_tensors_without_the_interpreter_are_refused(tmp_path: Path) -> None:
    """The compiled kernels run on CUDA only: CPU tensors without ``TRITON_INTERPRET`` get an error naming the way
    out, not a crash inside Triton (a fresh process: the switch is read when the kernels are built)."""
    code = (
        "import torch\n"
        "from mobile_videogpt.kernels.selective_scan import selective_scan_triton\n"
        "x = torch.zeros(1, 4, 8)\n"
        "try:\n"
        "    selective_scan_triton(x, x, -torch.ones(4, 2), torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout
    assert "scan_impl 'triton' runs on CUDA tensors, got cpu tensors" in out
    assert "TRITON_INTERPRET=1" in out


def test_bad_block_size_is_refused() -> None:
    """``block_d`` must be a power of two (``tl.arange``); the error names both tuning arguments."""
    x = _inputs(1, 4, 8, 2)
    with pytest.raises(ValueError, match="block_d 12 a power of 2"):
        kernels.selective_scan_triton(**x, block_d=12)


COMPILE_SM90 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mobile_videogpt.kernels import selective_scan as k

common = {"BLOCK_D": k.DEFAULT_BLOCK_D, "BLOCK_N": 16}
scan = {**common, "CHUNK": k.DEFAULT_CHUNK_SIZE, "HAS_BIAS": True, "SOFTPLUS": True}
fp16 = {n: "*fp16" for n in ("u_ptr", "dt_ptr", "b_ptr", "c_ptr", "z_ptr", "out_ptr")}
cases = [(k._chunk_state, {}, scan), (k._chunk_state, fp16, scan),
         (k._state_passing, {}, {**common, "WRITE_LAST": True}),
         (k._chunk_scan, {}, {**scan, "HAS_D": True, "HAS_Z": True}),
         (k._chunk_scan, fp16, {**scan, "HAS_D": True, "HAS_Z": True})]
for kernel, pointer, constexprs in cases:
    signature = {n: "constexpr" if n in constexprs else pointer.get(n, "*fp32") if n.endswith("_ptr") else "i32"
                 for n in kernel.arg_names}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": 2})
    assert compiled.asm["cubin"] and ".target sm_90" in compiled.asm["ptx"], kernel.fn.__name__
    print("compiled", kernel.fn.__name__, sorted(set(pointer.values())) or ["*fp32"])
"""


def test_kernels_compile_for_sm90() -> None:
    """Each kernel, in the specialisations the fp32 and the fp16 model use, compiles to a cubin for sm_90
    (H100/H200) with Triton's bundled ptxas, without a GPU (a fresh process without the interpreter switch: under it
    Triton's own library functions are interpreted, not compiled)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # Triton 3.9 warns when it is unset; 1 keeps its current default
    out = subprocess.run([sys.executable, "-c", COMPILE_SM90], env=env, capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("compiled ") == 5, out.stdout
