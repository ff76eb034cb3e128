"""Fused selective scan in Triton: ``scan_impl: triton`` (the same signature and math as ``selective_scan_ref``).

Dimensions: Bt batch, D channels (d_inner), N state size (d_state), L sequence length, K = ceil(L / c) chunks of c
tokens, Db channels per program.

The eager reference runs one tiny kernel per time step and direction (thousands of launches per VideoMamba forward);
this is three launches per scan, each reading u, delta, B, C (and z) once, with the state in fp32 registers:

1. ``_chunk_state``, one program per (batch, channel block, chunk): the recurrence over the chunk's c steps from a
   zero state gives the chunk's local end state ``[Db, N]``; the chunk's step sizes are summed (``sum_t delta_t``,
   so the chunk's decay is ``exp(A * sum_t delta_t)``, the product of its per-step decays).
2. ``_state_passing``, one program per (batch, channel block): walks the K chunk summaries in order,
   ``h_k = exp(A * sum delta) * h_{k-1} + end_k``, and overwrites each local end state with the chunk's true start
   state (and writes the last state when asked for).
3. ``_chunk_scan``, one program per (batch, channel block, chunk): reruns the chunk from its start state and writes
   ``y_t = (C_t . h_t + D u_t) * silu(z_t)`` in the dtype of ``u``.

This is the two-level order of ``selective_scan_chunked`` (fp32 sums, results equal to fp32 rounding, not bit for
bit); only per-step decays exp(delta * A) <= 1 and their products are formed, so inputs on which the reference is
finite (delta up to ~8, |delta * A| up to ~140 in one step) stay finite. Work is ~2x the reference's elementwise work
(the chunk is run twice) but with ``Bt * D/Db * K`` programs in parallel instead of L dependent steps.

Deviation from the reference, declared: the output is returned as a ``[Bt, D, L]`` view of a ``[Bt, L, D]`` buffer
(stores across channels are coalesced, and the mixer's ``out_proj`` reads ``[Bt, L, D]`` next), not as a contiguous
``[Bt, D, L]`` tensor; shape, dtype and values follow the reference.

Runs on CUDA tensors. Under ``TRITON_INTERPRET=1`` (Triton's interpreter; ``triton.jit`` reads the switch when this
module is imported, which happens on the first call of ``scan_impl: triton``) it runs on CPU tensors too: that is how
the CPU tests hold it against the reference (about 2 ms per time step and channel block, so only at small sizes).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from mobile_videogpt.selective_scan import interpreter_enabled

DEFAULT_CHUNK_SIZE = 64
"""Tokens per chunk c (K = 25 chunks at L = 1569)."""
DEFAULT_BLOCK_D = 32
"""Channels per program Db (a power of two; 36 channel blocks at D = 1152)."""


#: Whether the kernels below were built for Triton's interpreter (``triton.jit`` reads the switch when it decorates).
BUILT_FOR_INTERPRETER = interpreter_enabled()


@triton.jit
def _chunk_state(u_ptr, dt_ptr, a_ptr, b_ptr, bias_ptr, states_ptr, dsum_ptr,
                 dim, n_state, length, n_dblocks, n_chunks,
                 su_b, su_d, su_l, sd_b, sd_d, sd_l, sa_d, sa_n, sb_b, sb_n, sb_l,
                 CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                 HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Local end state [Db, N] and step-size sum [Db] of chunk ``program_id(1)`` from a zero state."""
    pid, k = tl.program_id(0), tl.program_id(1)
    b = pid // n_dblocks
    offs_d = (pid % n_dblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < dim, offs_n < n_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    a = tl.load(a_ptr + offs_d[:, None] * sa_d + offs_n[None, :] * sa_n, mask=mask_dn, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d & HAS_BIAS, other=0.0).to(tl.float32)
    t0 = k * CHUNK
    u_ptrs = u_ptr + b * su_b + offs_d * su_d + t0 * su_l
    dt_ptrs = dt_ptr + b * sd_b + offs_d * sd_d + t0 * sd_l
    b_ptrs = b_ptr + b * sb_b + offs_n * sb_n + t0 * sb_l
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dsum = tl.zeros([BLOCK_D], dtype=tl.float32)
    for _ in range(t0, tl.minimum(t0 + CHUNK, length)):
        u_t = tl.load(u_ptrs, mask=mask_d, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptrs, mask=mask_d, other=0.0).to(tl.float32) + bias
        if SOFTPLUS:
            # torch's softplus (threshold 20); log1p(e) = log(1+e) * e / ((1+e) - 1) stays accurate for e << 1.
            e = tl.exp(tl.minimum(dt, 20.0))
            one_e = e + 1.0
            dt = tl.where(dt > 20.0, dt, tl.where(one_e == 1.0, e, tl.log(one_e) * (e / (one_e - 1.0))))
        b_t = tl.load(b_ptrs, mask=mask_n, other=0.0).to(tl.float32)
        h = tl.exp(dt[:, None] * a) * h + (dt * u_t)[:, None] * b_t[None, :]
        dsum += dt
        u_ptrs += su_l
        dt_ptrs += sd_l
        b_ptrs += sb_l
    row = (b * n_chunks + k) * dim + offs_d  # states [Bt, K, D, N], dsum [Bt, K, D], contiguous fp32
    tl.store(states_ptr + row[:, None] * n_state + offs_n[None, :], h, mask=mask_dn)
    tl.store(dsum_ptr + row, dsum, mask=mask_d)


@triton.jit
def _state_passing(a_ptr, states_ptr, dsum_ptr, last_ptr, dim, n_state, n_dblocks, n_chunks, sa_d, sa_n,
                   BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, WRITE_LAST: tl.constexpr):
    """Walks the chunk summaries in order; each local end state is overwritten by the chunk's true start state."""
    pid = tl.program_id(0)
    b = pid // n_dblocks
    offs_d = (pid % n_dblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < dim, offs_n < n_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    a = tl.load(a_ptr + offs_d[:, None] * sa_d + offs_n[None, :] * sa_n, mask=mask_dn, other=0.0).to(tl.float32)
    state_ptrs = states_ptr + (b * n_chunks * dim + offs_d)[:, None] * n_state + offs_n[None, :]
    dsum_ptrs = dsum_ptr + b * n_chunks * dim + offs_d
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for _ in range(0, n_chunks):
        end_k = tl.load(state_ptrs, mask=mask_dn, other=0.0)
        dsum = tl.load(dsum_ptrs, mask=mask_d, other=0.0)
        tl.store(state_ptrs, h, mask=mask_dn)
        h = tl.exp(dsum[:, None] * a) * h + end_k  # the chunk's decay: the product of its per-step decays
        state_ptrs += dim * n_state
        dsum_ptrs += dim
    if WRITE_LAST:
        tl.store(last_ptr + (b * dim + offs_d)[:, None] * n_state + offs_n[None, :], h, mask=mask_dn)


@triton.jit
def _chunk_scan(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, dskip_ptr, z_ptr, bias_ptr, states_ptr, out_ptr,
                dim, n_state, length, n_dblocks, n_chunks,
                su_b, su_d, su_l, sd_b, sd_d, sd_l, sa_d, sa_n, sb_b, sb_n, sb_l, sc_b, sc_n, sc_l,
                sz_b, sz_d, sz_l, so_b, so_d, so_l,
                CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr):
    """Reruns chunk ``program_id(1)`` from its start state and writes ``(C.h + D u) * silu(z)``."""
    pid, k = tl.program_id(0), tl.program_id(1)
    b = pid // n_dblocks
    offs_d = (pid % n_dblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < dim, offs_n < n_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    a = tl.load(a_ptr + offs_d[:, None] * sa_d + offs_n[None, :] * sa_n, mask=mask_dn, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d & HAS_BIAS, other=0.0).to(tl.float32)
    dskip = tl.load(dskip_ptr + offs_d, mask=mask_d & HAS_D, other=0.0).to(tl.float32)
    row = (b * n_chunks + k) * dim + offs_d
    h = tl.load(states_ptr + row[:, None] * n_state + offs_n[None, :], mask=mask_dn, other=0.0)
    t0 = k * CHUNK
    u_ptrs = u_ptr + b * su_b + offs_d * su_d + t0 * su_l
    dt_ptrs = dt_ptr + b * sd_b + offs_d * sd_d + t0 * sd_l
    z_ptrs = z_ptr + b * sz_b + offs_d * sz_d + t0 * sz_l
    o_ptrs = out_ptr + b * so_b + offs_d * so_d + t0 * so_l
    b_ptrs = b_ptr + b * sb_b + offs_n * sb_n + t0 * sb_l
    c_ptrs = c_ptr + b * sc_b + offs_n * sc_n + t0 * sc_l
    for _ in range(t0, tl.minimum(t0 + CHUNK, length)):
        u_t = tl.load(u_ptrs, mask=mask_d, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptrs, mask=mask_d, other=0.0).to(tl.float32) + bias
        if SOFTPLUS:  # as in _chunk_state
            e = tl.exp(tl.minimum(dt, 20.0))
            one_e = e + 1.0
            dt = tl.where(dt > 20.0, dt, tl.where(one_e == 1.0, e, tl.log(one_e) * (e / (one_e - 1.0))))
        b_t = tl.load(b_ptrs, mask=mask_n, other=0.0).to(tl.float32)
        c_t = tl.load(c_ptrs, mask=mask_n, other=0.0).to(tl.float32)
        h = tl.exp(dt[:, None] * a) * h + (dt * u_t)[:, None] * b_t[None, :]
        y = tl.sum(h * c_t[None, :], axis=1) + dskip * u_t
        if HAS_Z:
            z_t = tl.load(z_ptrs, mask=mask_d, other=0.0).to(tl.float32)
            y = y * (z_t * tl.sigmoid(z_t))
        tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=mask_d)
        u_ptrs += su_l
        dt_ptrs += sd_l
        z_ptrs += sz_l
        o_ptrs += so_l
        b_ptrs += sb_l
        c_ptrs += sc_l


def _check(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape:
        raise ValueError(f"selective_scan_triton: {name} has shape {tuple(tensor.shape)}, expected {shape}")


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    block_d: int = DEFAULT_BLOCK_D,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Runs the selective scan as three fused Triton kernels (see the module docstring).

    Args:
        u: Input, [Bt, D, L] (any strides).
        delta: Raw step sizes, [Bt, D, L].
        A: State matrix (negative), [D, N].
        B: Input-dependent input projection, [Bt, N, L].
        C: Input-dependent output projection, [Bt, N, L].
        D: Skip weights, [D], or None.
        z: Gate, [Bt, D, L], or None.
        delta_bias: Added to ``delta`` before the softplus, [D], or None.
        delta_softplus: Whether to apply softplus to ``delta``.
        return_last_state: Also return the final state [Bt, D, N] (fp32).
        chunk_size: Tokens per chunk c.
        block_d: Channels per program (a power of two).

    Returns:
        y: [Bt, D, L] in the dtype of ``u``; with ``return_last_state`` also the last state [Bt, D, N] (fp32).

    Raises:
        ValueError: For mismatched shapes, a bad ``chunk_size``/``block_d``, or tensors on different devices.
        RuntimeError: For CPU tensors without Triton's interpreter (the compiled kernels run on CUDA only).
    """
    if chunk_size < 1 or block_d < 1 or block_d & (block_d - 1):
        raise ValueError(
            f"selective_scan_triton: chunk_size {chunk_size} must be >= 1 and block_d {block_d} a power of 2"
        )
    batch, dim, length = u.shape
    n_state = A.shape[1]
    _check("delta", delta, (batch, dim, length))
    _check("A", A, (dim, n_state))
    _check("B", B, (batch, n_state, length))
    _check("C", C, (batch, n_state, length))
    for name, tensor, shape in (("D", D, (dim,)), ("z", z, (batch, dim, length)), ("delta_bias", delta_bias, (dim,))):
        if tensor is not None:
            _check(name, tensor, shape)
    given = [t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]
    if len({t.device for t in given}) != 1:
        raise ValueError(f"selective_scan_triton: inputs on several devices {sorted({str(t.device) for t in given})}")
    interpret = interpreter_enabled()
    if interpret != BUILT_FOR_INTERPRETER:
        raise RuntimeError(
            f"TRITON_INTERPRET is {'on' if interpret else 'off'} now but was "
            f"{'on' if BUILT_FOR_INTERPRETER else 'off'} "
            "when the Triton scan kernels were built: set it before the first use in the process"
        )
    if u.device.type != "cuda" and not interpret:
        raise RuntimeError(
            f"scan_impl 'triton' runs on CUDA tensors, got {u.device.type} tensors; on a CPU use scan_impl 'chunked' "
            "(or TRITON_INTERPRET=1 to run Triton's interpreter, as the tests do)"
        )
    n_chunks = triton.cdiv(length, chunk_size)
    n_dblocks = triton.cdiv(dim, block_d)
    block_n = triton.next_power_of_2(n_state)
    f32 = dict(device=u.device, dtype=torch.float32)
    states = torch.empty(batch, n_chunks, dim, n_state, **f32)
    dsum = torch.empty(batch, n_chunks, dim, **f32)
    last = torch.empty(batch, dim, n_state, **f32) if return_last_state else states
    out = torch.empty(batch, length, dim, device=u.device, dtype=u.dtype).transpose(1, 2)  # [Bt, D, L] view
    dummy = u  # pointer for the absent optional inputs (never read: their constexpr flag is off)
    flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus))
    strides = (*u.stride(), *delta.stride(), *A.stride())
    with torch.cuda.device(u.device) if u.device.type == "cuda" else contextlib.nullcontext():
        _chunk_state[(batch * n_dblocks, n_chunks)](
            u, delta, A, B, dummy if delta_bias is None else delta_bias, states, dsum,
            dim, n_state, length, n_dblocks, n_chunks, *strides, *B.stride(),
            CHUNK=chunk_size, BLOCK_D=block_d, BLOCK_N=block_n, **flags, num_warps=2,
        )
        _state_passing[(batch * n_dblocks,)](
            A, states, dsum, last, dim, n_state, n_dblocks, n_chunks, *A.stride(),
            BLOCK_D=block_d, BLOCK_N=block_n, WRITE_LAST=return_last_state, num_warps=2,
        )
        _chunk_scan[(batch * n_dblocks, n_chunks)](
            u, delta, A, B, C, dummy if D is None else D, dummy if z is None else z,
            dummy if delta_bias is None else delta_bias, states, out,
            dim, n_state, length, n_dblocks, n_chunks, *strides, *B.stride(), *C.stride(),
            *(z.stride() if z is not None else u.stride()), *out.stride(),
            CHUNK=chunk_size, BLOCK_D=block_d, BLOCK_N=block_n, **flags, HAS_D=D is not None, HAS_Z=z is not None,
            num_warps=2,
        )
    return (out, last) if return_last_state else out

