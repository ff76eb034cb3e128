"""Selective scan (Mamba S6 recurrence): the reference function.

Dimensions:
    Bt: batch, D: channels (d_inner), N: state size (d_state), L: sequence length.

The recurrence, per channel d and state n::

    delta = softplus(delta + delta_bias)                      (if delta_softplus)
    s_t   = exp(delta_t,d * A_d,n) * s_{t-1} + delta_t,d * B_t,n * u_t,d
    y_t,d = sum_n s_t,n * C_t,n + D_d * u_t,d
    y     = y * silu(z)                                       (if z is given)

This is the same math as ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref`` (a sequential loop over L in
fp32), which the golden vectors were produced with. It is the yardstick for every faster or export-friendly
formulation (see ``export/``), which must keep this signature and be tested against it.

Below the reference: ``selective_scan_chunked`` (fast, overflow-safe, traceable to standard ONNX ops), the
``scan_marker`` op for exports that rewrite each scan into an ONNX ``Scan`` loop, ``selective_scan_triton`` (the fused
GPU kernel of ``mobile_videogpt.kernels.selective_scan``, imported on first use), and the registry ``SCAN_IMPLS`` /
``get_scan_impl`` that the model's ``scan_impl`` config string selects from. See ``docs/selective_scan.md``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _prepare_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, ...]:
    """Casts the scan inputs to fp32 and applies the step-size bias and softplus (shared by every formulation).

    Returns:
        ``(u, delta, A, B, C)`` in fp32, ``delta`` after bias and softplus.
    """
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    return u.float(), delta, A.float(), B.float(), C.float()


def selective_scan_ref(
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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Runs the selective scan sequentially over L in fp32.

    Args:
        u: Input, [Bt, D, L].
        delta: Raw step sizes, [Bt, D, L].
        A: State matrix (negative), [D, N], fp32.
        B: Input-dependent input projection, [Bt, N, L].
        C: Input-dependent output projection, [Bt, N, L].
        D: Skip weights, [D], or None.
        z: Gate, [Bt, D, L], or None.
        delta_bias: Added to ``delta`` before the softplus, [D], or None.
        delta_softplus: Whether to apply softplus to ``delta``.
        return_last_state: Also return the final state [Bt, D, N].

    Returns:
        y: [Bt, D, L] in the dtype of ``u``; with ``return_last_state`` also the last state [Bt, D, N] (fp32).
    """
    dtype_in = u.dtype
    u, delta, A, B, C = _prepare_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    state = u.new_zeros((batch, dim, A.shape[1]))  # [Bt, D, N]
    # Precompute the per-step decay and input terms, exactly as the reference does.
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # [Bt, D, L, N]
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)  # [Bt, D, L, N]
    ys = []
    for t in range(length):
        state = delta_a[:, :, t] * state + delta_b_u[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))
    y = torch.stack(ys, dim=2)  # [Bt, D, L]
    out = y if D is None else y + u * D.float()[..., None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, state) if return_last_state else out


# ---------------------------------------------------------------------------------------------------------------------
# Fast, export-friendly formulation.
# ---------------------------------------------------------------------------------------------------------------------

DEFAULT_CHUNK_SIZE = 32


def _to_token_major(x: torch.Tensor, n_chunks: int, chunk: int) -> torch.Tensor:
    """[Bt, X, K*c] -> [Bt, K, c, X] (one plain 2-D transpose per batch item, then a free reshape)."""
    batch, width, _ = x.shape
    return x.transpose(1, 2).reshape(batch, n_chunks, chunk, width)


def selective_scan_chunked(
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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Runs the selective scan as c vectorised steps over all L/c chunks at once (two-level scan), in fp32.

    Same signature, math and output as :func:`selective_scan_ref`; it differs only in the order of operations:

    1. L is padded to K*c with identity steps (delta = 0: decay 1, input 0) and split into K chunks of c tokens.
    2. Pass 1 runs the recurrence over the c in-chunk positions for all K chunks at once from a zero state, which gives
       every chunk's local end state.
    3. The K chunk summaries (decay prod_t exp(delta_t*A) = exp(A*sum_t delta_t), local end state) are combined by a
       Hillis-Steele prefix scan (log2 K levels) into each chunk's true start state.
    4. Pass 2 reruns the in-chunk recurrence from those start states and contracts each step with C.

    Only the per-step decays exp(delta*A) (as in the reference) and their products are ever formed; no exp of a
    positive log-decay difference is taken, so it cannot overflow on inputs where the reference does not
    (e.g. delta up to 8 with |delta*A| up to 140 in one step). Sums are fp32 like the reference; the order differs, so
    results agree to fp32 rounding, not bit for bit. Each step works on [Bt, K, 1, D, N] at once; the per-step decays
    and inputs are kept, like the reference's [Bt, D, L, N] tensors (2 x 116 MB at L=1569, D=1152, N=16).

    The Python loops run over the chunk length c (not over L) and over log2(L/c) scan levels, and are unrolled when
    traced: ``torch.onnx.export(dynamo=False)`` gives a few hundred standard ops (Mul, Add, MatMul, Exp, Split,
    Slice, Concat, ...; 531 at c=32, L=1569) and no control flow. The traced graph is specialised to the traced
    L (the tracer warns about this).

    Args:
        u: Input, [Bt, D, L].
        delta: Raw step sizes, [Bt, D, L].
        A: State matrix (negative), [D, N].
        B: Input-dependent input projection, [Bt, N, L].
        C: Input-dependent output projection, [Bt, N, L].
        D: Skip weights, [D], or None.
        z: Gate, [Bt, D, L], or None.
        delta_bias: Added to ``delta`` before the softplus, [D], or None.
        delta_softplus: Whether to apply softplus to ``delta``.
        return_last_state: Also return the final state [Bt, D, N].
        chunk_size: In-chunk steps c (clipped to L). Larger c means fewer, larger ops in the chunk loop but more
            unrolled steps; 16-64 is sensible for L ~ 1.5k.

    Returns:
        y: [Bt, D, L] in the dtype of ``u``; with ``return_last_state`` also the last state [Bt, D, N] (fp32).

    Raises:
        ValueError: If ``chunk_size`` < 1.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype_in = u.dtype
    u, delta, A, B, C = _prepare_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    chunk = min(chunk_size, length)
    n_chunks = (length + chunk - 1) // chunk  # ceil; not -(-L // c): traced floordiv truncates negatives
    pad = n_chunks * chunk - length

    delta_u = delta * u  # [Bt, D, L]
    delta_p, B_p, C_p = delta, B, C
    if pad:
        # Padding after the softplus: delta = 0 makes each padded step the identity (decay 1, input 0).
        # torch.cat with zeros rather than F.pad: the legacy ONNX exporter lowers F.pad into a long dynamic-pads chain.
        zeros_d = delta.new_zeros(batch, dim, pad)
        zeros_n = B.new_zeros(batch, B.shape[1], pad)
        delta_p = torch.cat([delta, zeros_d], dim=2)
        delta_u = torch.cat([delta_u, zeros_d], dim=2)
        B_p = torch.cat([B, zeros_n], dim=2)
        C_p = torch.cat([C, zeros_n], dim=2)

    # Token-major [Bt, K, c, X]: one in-chunk step is then a slice of whole D- (or N-) rows. The steps keep their
    # singleton c axis (split, not unbind), so the traced graph needs no Squeeze per step.
    dt = _to_token_major(delta_p, n_chunks, chunk)  # [Bt, K, c, D]
    dt_steps = dt.unsqueeze(-1).split(1, dim=2)  # c x [Bt, K, 1, D, 1]
    dtu_steps = _to_token_major(delta_u, n_chunks, chunk).unsqueeze(-1).split(1, dim=2)  # c x [Bt, K, 1, D, 1]
    b_steps = _to_token_major(B_p, n_chunks, chunk).unsqueeze(-2).split(1, dim=2)  # c x [Bt, K, 1, 1, N]
    c_steps = _to_token_major(C_p, n_chunks, chunk).unsqueeze(-1).split(1, dim=2)  # c x [Bt, K, 1, N, 1]

    # Per-step decay exp(delta*A) and input delta*u x B, each [Bt, K, 1, D, N] (the reference's delta_a, delta_b_u).
    # The outer product is a MatMul with inner size 1: ONNX Runtime runs it faster than the broadcast Mul.
    decays = [torch.exp(d * A) for d in dt_steps]
    inps = [torch.matmul(x, b) for x, b in zip(dtu_steps, b_steps)]

    # Pass 1: local end state of every chunk, from a zero start.
    local_end = inps[0]
    for j in range(1, chunk):
        local_end = decays[j] * local_end + inps[j]  # [Bt, K, 1, D, N]

    # Chunk summaries (a_k, b_k), combined by an inclusive Hillis-Steele scan over K with
    # (a1, b1) o (a2, b2) = (a1*a2, a2*b1 + b2).
    scan_a = torch.exp(dt.sum(2, keepdim=True).unsqueeze(-1) * A)  # [Bt, K, 1, D, N], product of the chunk's decays
    scan_b = local_end
    shift = 1
    while shift < n_chunks:
        # Chunks k >= shift combine with chunk k - shift; the first `shift` chunks are already complete.
        prev_b = scan_b[:, : n_chunks - shift]
        new_b = scan_b[:, shift:] + scan_a[:, shift:] * prev_b
        if 2 * shift < n_chunks:  # the decays are not needed after the last level
            new_a = scan_a[:, shift:] * scan_a[:, : n_chunks - shift]
            scan_a = torch.cat([scan_a[:, :shift], new_a], dim=1)
        scan_b = torch.cat([scan_b[:, :shift], new_b], dim=1)  # [Bt, K, 1, D, N]
        shift *= 2
    # Exclusive shift: chunk k starts from the true end state of chunk k-1 (zero for the first chunk).
    state = torch.cat([torch.zeros_like(scan_b[:, :1]), scan_b[:, : n_chunks - 1]], dim=1)  # [Bt, K, 1, D, N]
    last_state = scan_b[:, n_chunks - 1, 0]  # [Bt, D, N]; padded steps are identities

    # Pass 2: rerun the chunks from their true start states and read out y_t = C_t . h_t.
    ys = []
    for j in range(chunk):
        state = decays[j] * state + inps[j]  # [Bt, K, 1, D, N]
        ys.append(torch.matmul(state, c_steps[j]))  # [Bt, K, 1, D, 1]
    y = torch.cat(ys, dim=2).reshape(batch, n_chunks * chunk, dim)  # [Bt, K*c, D]
    y = y.transpose(1, 2)[:, :, :length]  # [Bt, D, L]

    out = y if D is None else y + u * D.float()[..., None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, last_state) if return_last_state else out


# Marker op for the ONNX export: traced as one ``mvg_scan::SelectiveScan`` node (symbolic registered by
# ``export.scan_formulations.register_scan_marker_symbolic``), which ``export.scan_formulations.replace_scan_markers``
# then rewrites into a standard-op guarded chunk ``Scan``. In eager mode it computes ``selective_scan_chunked``.
SCAN_MARKER_OP = "mvg_scan::selective_scan"


@torch.library.custom_op(SCAN_MARKER_OP, mutates_args=())
def _scan_marker_op(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor,
    delta_bias: torch.Tensor,
) -> torch.Tensor:
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)


@_scan_marker_op.register_fake
def _scan_marker_fake(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor,
    delta_bias: torch.Tensor,
) -> torch.Tensor:
    return torch.empty_like(u)


def selective_scan_marker(
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
) -> torch.Tensor:
    """The scan as one opaque op, for an ONNX export whose scans are rewritten into ONNX ``Scan`` loops.

    Eager result equals :func:`selective_scan_chunked`. Supports only the call VideoMamba makes: D, z and delta_bias
    given, ``delta_softplus=True``, no last state. Args and shapes as :func:`selective_scan_ref`.

    Returns:
        y: [Bt, D, L] in the dtype of ``u``.

    Raises:
        ValueError: If the call needs an option the marker does not carry.
    """
    unsupported = [
        name
        for name, bad in (
            ("D=None", D is None),
            ("z=None", z is None),
            ("delta_bias=None", delta_bias is None),
            ("delta_softplus=False", not delta_softplus),
            ("return_last_state=True", return_last_state),
        )
        if bad
    ]
    if unsupported:
        raise ValueError(
            f"scan_impl 'scan_marker' supports only VideoMamba's call; unsupported: {', '.join(unsupported)}"
        )
    return _scan_marker_op(u, delta, A, B, C, D, z, delta_bias)


def interpreter_enabled() -> bool:
    """Whether Triton's interpreter is switched on (``TRITON_INTERPRET=1``, Triton's own switch; read without
    importing Triton, so checking it never builds the kernels in the wrong mode)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The fused Triton kernel (``mobile_videogpt.kernels.selective_scan``, three launches per scan, fp32 state).

    Same signature, math and output as :func:`selective_scan_ref`; CUDA tensors (CPU tensors only under Triton's
    interpreter, ``TRITON_INTERPRET=1``, for tests). The kernel module, and Triton with it, is imported on the first
    call; :func:`get_scan_impl` has already checked that Triton is installed.

    Returns:
        y: [Bt, D, L] in the dtype of ``u``; with ``return_last_state`` also the last state [Bt, D, N] (fp32).
    """
    from mobile_videogpt.kernels.selective_scan import selective_scan_triton as kernel

    return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


SCAN_IMPLS: dict[str, Callable[..., torch.Tensor | tuple[torch.Tensor, torch.Tensor]]] = {
    "ref": selective_scan_ref,
    "chunked": selective_scan_chunked,
    "scan_marker": selective_scan_marker,
    "triton": selective_scan_triton,
}
#: The package each implementation needs beyond torch (checked when the name is chosen, never used to pick one).
SCAN_REQUIREMENTS = {"triton": "triton"}


def get_scan_impl(name: str) -> Callable[..., torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """Returns the selective-scan implementation registered under ``name``.

    Args:
        name: A key of :data:`SCAN_IMPLS`.

    Returns:
        A function with the signature of :func:`selective_scan_ref`.

    Raises:
        ValueError: If ``name`` is not registered (the message lists the valid names), or the package it needs is not
            installed (the message names it).
    """
    try:
        impl = SCAN_IMPLS[name]
    except KeyError:
        raise ValueError(f"unknown scan_impl {name!r}; valid names: {sorted(SCAN_IMPLS)}") from None
    package = SCAN_REQUIREMENTS.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ValueError(
            f"scan_impl {name!r} needs the {package} package, which is not installed: pip install {package} "
            "(or pip install '.[gpu]')"
        )
    return impl
