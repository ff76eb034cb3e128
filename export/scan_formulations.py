"""ONNX formulations of the selective scan (one direction of one VideoMamba layer) and their inputs.

Three ways to get the scan into standard ONNX (opset 17) are built here, all with the same I/O table
(:data:`INPUT_NAMES` -> ``y``, with ``delta_softplus=True`` as VideoMamba calls it):

* **traced**: :func:`export_traced_scan` traces a PyTorch implementation from
  ``mobile_videogpt.selective_scan.SCAN_IMPLS`` (normally ``"chunked"``) with ``torch.onnx.export(dynamo=False)``.
  This is what a whole-model export gets when it traces the model with ``scan_impl="chunked"``.
* **chunk Scan**: :func:`build_scan_model` / :func:`append_chunk_scan` assemble an ONNX ``Scan`` over chunks of c
  tokens with ``onnx.helper``. Body ``"guarded"`` (formulation 4c in ``docs/selective_scan.md``): per chunk an ``If``
  runs the factorised form
  h_t = E_t * (exp(A R) h_in + cumsum_s(b_s / E_s)), E_t = exp(A (T_t - R)), T = cumsum(delta), R = T at the chunk
  midpoint, when max |A (T - R)| <= ``threshold`` (so no exp can overflow fp32), and a Hillis-Steele in-chunk scan
  (products of decays only) otherwise. Body ``"sequential"`` unrolls the c steps instead (no If, no guard needed).
* **marker -> Scan**: a traced graph cannot contain Scan/If. A model traced with ``scan_impl="scan_marker"`` holds one
  ``mvg_scan::SelectiveScan`` node per scan (:func:`register_scan_marker_symbolic`), and
  :func:`replace_scan_markers` rewrites each into the chunk Scan, so the final file has standard ops only.

Also here: the probe's input recipe (:func:`make_scan_inputs`), a float64 sequential loop
(:func:`selective_scan_float64`) that measures exactness, and graph statistics. The runner is
``benchmarks/scan_formulations.py``; results and the choice are in ``docs/selective_scan.md``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from mobile_videogpt.selective_scan import DEFAULT_CHUNK_SIZE, get_scan_impl

logger = logging.getLogger(__name__)

OPSET = 17
INPUT_NAMES: tuple[str, ...] = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
OUTPUT_NAME = "y"
SCAN_BODIES = ("guarded", "sequential")
# exp(60) = 1.1e26: leaves 12 orders of magnitude below the fp32 limit (3.4e38) for |b| and the cumsum.
DEFAULT_GUARD_THRESHOLD = 60.0

InputKind = Literal["normal", "stress"]


# ---------------------------------------------------------------------------------------------------------------------
# Inputs and the float64 yardstick
# ---------------------------------------------------------------------------------------------------------------------


def make_scan_inputs(
    kind: InputKind = "normal",
    length: int = 1569,
    dim: int = 1152,
    n_state: int = 16,
    batch: int = 1,
    seed: int = 0,
    stress_noise: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Builds seeded, realistic scan inputs (the probe's recipe), fp32.

    ``normal``: u = SiLU(randn), raw delta = 0.5 randn with the Mamba dt init (delta_bias = softplus^-1 of dt, dt
    log-uniform in [1e-3, 1e-1]), so softplus(delta + delta_bias) has median 0.01 and max about 0.56 at full size.
    A = -exp(log(1..N) + 0.1 randn), B, C, z ~ randn, D = 1 + 0.01 randn. ``stress``: raw delta =
    ``stress_noise`` randn + 2. With the default 2, at full size delta has median 0.07 and max about 8.3, and
    |delta*A| reaches about 156 in one step, which overflows an unguarded factorised scan (``stress_noise=1``: max
    delta 3.8, max |delta*A| 70).

    Args:
        kind: ``"normal"`` or ``"stress"``.
        length: L.
        dim: D (d_inner).
        n_state: N (d_state).
        batch: Bt.
        seed: Generator seed.
        stress_noise: Scale of the raw-delta noise for ``stress``.

    Returns:
        Tensors keyed by :data:`INPUT_NAMES`: u, delta, z [Bt, D, L]; A [D, N]; B, C [Bt, N, L]; D, delta_bias [D].

    Raises:
        ValueError: If ``kind`` is unknown.
    """
    if kind not in ("normal", "stress"):
        raise ValueError(f"kind must be 'normal' or 'stress', got {kind!r}")
    gen = torch.Generator().manual_seed(seed)
    u = F.silu(torch.randn(batch, dim, length, generator=gen))
    noise = torch.randn(batch, dim, length, generator=gen)
    delta = 0.5 * noise if kind == "normal" else stress_noise * noise + 2.0
    dt = torch.exp(torch.rand(dim, generator=gen) * (math.log(1e-1) - math.log(1e-3)) + math.log(1e-3))  # [D]
    delta_bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus, as in Mamba's dt_proj init
    log_a = torch.log(torch.arange(1, n_state + 1, dtype=torch.float32)).expand(dim, n_state)
    A = -torch.exp(log_a + 0.1 * torch.randn(dim, n_state, generator=gen))  # [D, N]
    B = torch.randn(batch, n_state, length, generator=gen)
    C = torch.randn(batch, n_state, length, generator=gen)
    z = torch.randn(batch, dim, length, generator=gen)
    D = 1.0 + 0.01 * torch.randn(dim, generator=gen)
    return {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}


def selective_scan_float64(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """The reference recurrence as a sequential loop in float64 (the exactness yardstick).

    Args:
        u, delta, A, B, C, D, z, delta_bias, delta_softplus: As ``selective_scan_ref``.

    Returns:
        y: [Bt, D, L], float64.
    """
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    state = u.new_zeros((u.shape[0], u.shape[1], A.shape[1]))  # [Bt, D, N]
    ys = []
    for t in range(u.shape[2]):
        dt = delta[:, :, t, None]  # [Bt, D, 1]
        state = torch.exp(dt * A) * state + dt * u[:, :, t, None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))
    y = torch.stack(ys, dim=2)  # [Bt, D, L]
    if D is not None:
        y = y + u * D.double()[..., None]
    if z is not None:
        y = y * F.silu(z.double())
    return y


# ---------------------------------------------------------------------------------------------------------------------
# Traced formulation
# ---------------------------------------------------------------------------------------------------------------------


class ScanExportWrapper(torch.nn.Module):
    """Thin export wrapper: one selective scan with VideoMamba's flags (D, z, delta_bias, softplus).

    Args:
        impl: Name in ``SCAN_IMPLS``.
        chunk_size: Passed to implementations that take it (``"chunked"``).
    """

    def __init__(self, impl: str = "chunked", chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__()
        self.impl_name = impl
        self.chunk_size = chunk_size
        self.impl = get_scan_impl(impl)

    def forward(
        self,
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor,
        z: torch.Tensor,
        delta_bias: torch.Tensor,
    ) -> torch.Tensor:
        """Returns y [Bt, D, L] (shapes as ``selective_scan_ref``)."""
        kwargs = {"chunk_size": self.chunk_size} if self.impl_name == "chunked" else {}
        return self.impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True, **kwargs)


def export_traced_scan(
    path: str | Path,
    inputs: dict[str, torch.Tensor],
    impl: str = "chunked",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Traces one scan with ``torch.onnx.export(dynamo=False, opset 17)`` and writes it to ``path``.

    The graph is specialised to the shapes of ``inputs`` (the chunk loop is unrolled for that L).

    Args:
        path: Output ``.onnx`` file.
        inputs: Example tensors keyed by :data:`INPUT_NAMES`.
        impl: Name in ``SCAN_IMPLS``.
        chunk_size: Chunk length c for ``"chunked"``.

    Returns:
        Export wall time in seconds.
    """
    wrapper = ScanExportWrapper(impl, chunk_size).eval()
    args = tuple(inputs[name] for name in INPUT_NAMES)
    start = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=False,
        )
    elapsed = time.perf_counter() - start
    logger.info("exported traced %s (c=%d) to %s in %.2f s", impl, chunk_size, path, elapsed)
    return elapsed


# ---------------------------------------------------------------------------------------------------------------------
# Chunk-Scan formulation (onnx.helper)
# ---------------------------------------------------------------------------------------------------------------------


class _Emitter:
    """Appends uniquely named nodes to a node list; constants become ``Constant`` nodes (valid inside subgraphs)."""

    def __init__(self, prefix: str, nodes: list[onnx.NodeProto] | None = None) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = [] if nodes is None else nodes
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, hint: str = "", **attrs: object) -> list[str]:
        """Adds one node and returns its output names."""
        name = self._name(hint or op_type)
        outputs = [f"{name}:{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, **attrs))
        return outputs

    def op1(self, op_type: str, *inputs: str, hint: str = "", **attrs: object) -> str:
        """Adds a single-output node and returns the output name."""
        return self.op(op_type, inputs, hint=hint, **attrs)[0]

    def const(self, value: np.ndarray | float | int | Sequence[int], hint: str = "const") -> str:
        """Adds a Constant (int lists -> int64, floats -> float32)."""
        if isinstance(value, float):
            arr = np.array(value, dtype=np.float32)
        elif isinstance(value, int):
            arr = np.array(value, dtype=np.int64)
        elif isinstance(value, np.ndarray):
            arr = value
        else:
            arr = np.array(value, dtype=np.int64)
        name = self._name(hint)
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(arr, name)))
        return name


def _value_info(name: str, rank: int | None = None) -> onnx.ValueInfoProto:
    shape = None if rank is None else [None] * rank
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _factorised_branch(prefix: str, T: str, R: str, A: str, b: str, h_in: str) -> onnx.GraphProto:
    """Then-branch: h_t = E_t * (exp(A R) h_in + cumsum_s(b_s / E_s)), E = exp(A (T - R)), all [c, Bt, D, N]."""
    em = _Emitter(prefix)
    ones_n = em.op1("Shape", A, hint="shape_A")
    ones_n = em.op1("Slice", ones_n, em.const([1]), em.const([2]), hint="N")
    ones_1n = em.op1("ConstantOfShape", em.op1("Concat", em.const([1]), ones_n, axis=0), value=helper.make_tensor(
        "one", TensorProto.FLOAT, [1], [1.0]), hint="ones_1N")  # [1, N]
    # (T - R) x 1 as a MatMul (inner size 1): ORT runs it faster than the broadcast Mul [c,Bt,D,1] x [D,N].
    rel = em.op1("MatMul", em.op1("Sub", T, R, hint="T_minus_R"), ones_1n, hint="rel_outer")  # [c, Bt, D, N]
    decay = em.op1("Exp", em.op1("Mul", rel, A, hint="S_rel"), hint="E")  # [c, Bt, D, N]
    cum = em.op1("CumSum", em.op1("Div", b, decay, hint="b_over_E"), em.const(0), hint="cumsum")
    carry = em.op1("Mul", em.op1("Exp", em.op1("Mul", R, A), hint="exp_AR"), h_in, hint="carry")  # [Bt, D, N]
    h_all = em.op1("Mul", decay, em.op1("Add", cum, carry), hint="h_all")
    return helper.make_graph(em.nodes, f"{prefix}", [], [_value_info(h_all, 4)])


def _hillis_steele_branch(prefix: str, chunk: int, dt: str, A: str, b: str, h_in: str) -> onnx.GraphProto:
    """Else-branch: inclusive Hillis-Steele scan of (a, b) over the c steps, then h_t = b_t + a_t h_in."""
    em = _Emitter(prefix)
    a = em.op1("Exp", em.op1("Mul", dt, A, hint="dA"), hint="a")  # [c, Bt, D, N], each <= 1 for delta >= 0
    shift = 1
    while shift < chunk:
        pads = em.const([shift, 0, 0, 0, 0, 0, 0, 0], hint=f"pads{shift}")
        head_b = em.op1("Slice", b, em.const([0]), em.const([chunk - shift]), em.const([0]), hint=f"head_b{shift}")
        head_a = em.op1("Slice", a, em.const([0]), em.const([chunk - shift]), em.const([0]), hint=f"head_a{shift}")
        prev_b = em.op1("Pad", head_b, pads, em.const(0.0), hint=f"prev_b{shift}")  # identity element b=0
        prev_a = em.op1("Pad", head_a, pads, em.const(1.0), hint=f"prev_a{shift}")  # identity element a=1
        b = em.op1("Add", b, em.op1("Mul", a, prev_b), hint=f"b{shift}")
        a = em.op1("Mul", a, prev_a, hint=f"a{shift}")
        shift *= 2
    h_all = em.op1("Add", b, em.op1("Mul", a, h_in), hint="h_all")
    return helper.make_graph(em.nodes, f"{prefix}", [], [_value_info(h_all, 4)])


def _sequential_steps(em: _Emitter, chunk: int, dt: str, A: str, b: str, h_in: str) -> str:
    """Unrolled recurrence over the c steps of one chunk, on [1, Bt, D, N] slices; returns h_all [c, Bt, D, N]."""
    a = em.op1("Exp", em.op1("Mul", dt, A, hint="dA"), hint="a")  # [c, Bt, D, N]
    a_steps = em.op("Split", [a], n_out=chunk, hint="a_steps", axis=0)  # c x [1, Bt, D, N]
    b_steps = em.op("Split", [b], n_out=chunk, hint="b_steps", axis=0)
    state = h_in  # [Bt, D, N], broadcasts against [1, Bt, D, N]
    states = []
    for j in range(chunk):
        state = em.op1("Add", em.op1("Mul", a_steps[j], state, hint=f"decay{j}"), b_steps[j], hint=f"h{j}")
        states.append(state)
    return em.op1("Concat", *states, axis=0, hint="h_all")


def _scan_body(
    prefix: str, chunk: int, A: str, A_absmax: str, threshold: float, body: str = "guarded"
) -> onnx.GraphProto:
    """Scan body for one chunk: state [Bt, D, N]; scanned dt, dtu [c, Bt, D, 1], B [c, Bt, 1, N], C [c, Bt, N, 1]."""
    em = _Emitter(prefix)
    h_in, dt, dtu, B, C = (f"{prefix}/in_{n}" for n in ("h", "dt", "dtu", "B", "C"))
    if body == "sequential":
        h_all = _sequential_steps(em, chunk, dt, A, em.op1("MatMul", dtu, B, hint="b"), h_in)
        y = em.op1("MatMul", h_all, C, hint="y")  # [c, Bt, D, 1]
        h_out = em.op1("Gather", h_all, em.const(chunk - 1), axis=0, hint="h_out")  # [Bt, D, N]
        return helper.make_graph(
            em.nodes,
            prefix,
            [_value_info(h_in, 3), _value_info(dt, 4), _value_info(dtu, 4), _value_info(B, 4), _value_info(C, 4)],
            [_value_info(h_out, 3), _value_info(y, 4)],
        )
    T = em.op1("CumSum", dt, em.const(0), hint="T")  # [c, Bt, D, 1]
    R = em.op1("Gather", T, em.const(chunk // 2 - 1 if chunk > 1 else 0), axis=0, hint="R")  # [Bt, D, 1]
    # Guard: the largest |A (T_s - R)| and |A R| in the chunk must stay <= threshold for exp and 1/exp to be finite.
    span = em.op1("ReduceMax", em.op1("Abs", em.op1("Sub", T, R)), axes=[0], keepdims=0, hint="span")  # [Bt, D, 1]
    span = em.op1("Max", span, em.op1("Abs", R), hint="span_R")
    worst = em.op1("ReduceMax", em.op1("Mul", span, A_absmax), keepdims=0, hint="worst")  # scalar
    use_fast = em.op1("LessOrEqual", worst, em.const(float(threshold), hint="threshold"), hint="use_fast")
    # b_t = delta_t u_t x B_t as a MatMul with inner size 1.
    b = em.op1("MatMul", dtu, B, hint="b")  # [c, Bt, D, N]
    then_g = _factorised_branch(f"{prefix}/fast", T, R, A, b, h_in)
    else_g = _hillis_steele_branch(f"{prefix}/robust", chunk, dt, A, b, h_in)
    h_all = em.op1("If", use_fast, then_branch=then_g, else_branch=else_g, hint="guard")  # [c, Bt, D, N]
    y = em.op1("MatMul", h_all, C, hint="y")  # [c, Bt, D, 1]
    h_out = em.op1("Gather", h_all, em.const(chunk - 1), axis=0, hint="h_out")  # [Bt, D, N]
    return helper.make_graph(
        em.nodes,
        prefix,
        [_value_info(h_in, 3), _value_info(dt, 4), _value_info(dtu, 4), _value_info(B, 4), _value_info(C, 4)],
        [_value_info(h_out, 3), _value_info(y, 4)],
    )


def append_chunk_scan(
    nodes: list[onnx.NodeProto],
    names: dict[str, str],
    output: str,
    chunk_size: int = 16,
    threshold: float = DEFAULT_GUARD_THRESHOLD,
    prefix: str = "scan",
    body: str = "guarded",
) -> None:
    """Appends a chunk-``Scan`` selective scan (softplus on) to ``nodes``; shapes are read at run time.

    Args:
        nodes: Node list of the graph to extend (topologically: the inputs must be defined before).
        names: Tensor names for each of :data:`INPUT_NAMES` (u, delta, z [Bt, D, L]; A [D, N]; B, C [Bt, N, L];
            D, delta_bias [D]), fp32.
        output: Name given to y [Bt, D, L].
        chunk_size: Tokens per Scan step c; for ``"guarded"`` 16 or 32 (with c=64 the guard fails on ordinary data).
        threshold: ``"guarded"`` only: largest |log-decay| in a chunk for which the factorised branch runs.
        prefix: Unique node-name prefix (one per scan in a graph).
        body: ``"guarded"``: If(factorised, Hillis-Steele) per chunk; ``"sequential"``: the c steps unrolled
            (per-step decays only, so overflow-free without a guard).

    Raises:
        ValueError: If ``chunk_size`` < 2, ``body`` is unknown or a name is missing.
    """
    if chunk_size < 2:
        raise ValueError(f"chunk_size must be >= 2, got {chunk_size}")
    if body not in SCAN_BODIES:
        raise ValueError(f"body must be one of {list(SCAN_BODIES)}, got {body!r}")
    missing = [n for n in INPUT_NAMES if n not in names]
    if missing:
        raise ValueError(f"missing input names {missing}; need all of {list(INPUT_NAMES)}")
    em = _Emitter(prefix, nodes)
    u, delta, A, B, C = (names[n] for n in ("u", "delta", "A", "B", "C"))
    c = chunk_size
    bias = em.op1("Unsqueeze", names["delta_bias"], em.const([-1]), hint="bias")  # [D, 1]
    dt = em.op1("Softplus", em.op1("Add", delta, bias), hint="delta")  # [Bt, D, L]
    dtu = em.op1("Mul", dt, u, hint="dtu")
    # Pad L up to K*c with zeros: delta = 0 gives identity steps (decay 1, input 0).
    shape_u = em.op1("Shape", u, hint="shape_u")
    length = em.op1("Slice", shape_u, em.const([2]), em.const([3]), hint="L")  # [1]
    c_t = em.const([c], hint="c")
    pad_len = em.op1("Mod", em.op1("Sub", c_t, em.op1("Mod", length, c_t)), c_t, hint="pad_len")
    pads = em.op1("Concat", em.const([0, 0, 0, 0, 0]), pad_len, axis=0, hint="pads")  # [6]

    def chunk_major(x: str, unsqueeze_axis: int, hint: str) -> str:
        x = em.op1("Pad", x, pads, hint=f"{hint}_pad")  # [Bt, X, K*c]
        x = em.op1("Reshape", x, em.const([0, 0, -1, c]), hint=f"{hint}_chunks")  # [Bt, X, K, c]
        x = em.op1("Transpose", x, perm=[2, 3, 0, 1], hint=f"{hint}_kc")  # [K, c, Bt, X]
        return em.op1("Unsqueeze", x, em.const([unsqueeze_axis]), hint=hint)

    dt_s = chunk_major(dt, 4, "dt_s")  # [K, c, Bt, D, 1]
    dtu_s = chunk_major(dtu, 4, "dtu_s")  # [K, c, Bt, D, 1]
    B_s = chunk_major(B, 3, "B_s")  # [K, c, Bt, 1, N]
    C_s = chunk_major(C, 4, "C_s")  # [K, c, Bt, N, 1]
    A_absmax = em.op1("ReduceMax", em.op1("Abs", A), axes=[1], keepdims=1, hint="A_absmax")  # [D, 1]
    shape_a = em.op1("Shape", A, hint="shape_A")
    state_shape = em.op1(
        "Concat",
        em.op1("Slice", shape_u, em.const([0]), em.const([2])),
        em.op1("Slice", shape_a, em.const([1]), em.const([2])),
        axis=0,
        hint="state_shape",
    )
    h0 = em.op1("ConstantOfShape", state_shape, value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    body_graph = _scan_body(f"{prefix}/body", c, A, A_absmax, threshold, body)
    _, y_s = em.op("Scan", [h0, dt_s, dtu_s, B_s, C_s], n_out=2, hint="scan", body=body_graph, num_scan_inputs=4)
    y = em.op1("Squeeze", y_s, em.const([4]), hint="y_s")  # [K, c, Bt, D]
    y = em.op1("Transpose", y, perm=[2, 3, 0, 1], hint="y_t")  # [Bt, D, K, c]
    y = em.op1("Reshape", y, em.const([0, 0, -1]), hint="y_flat")  # [Bt, D, K*c]
    y = em.op1("Slice", y, em.const([0]), length, em.const([2]), hint="y_crop")  # [Bt, D, L]
    y = em.op1("Add", y, em.op1("Mul", u, em.op1("Unsqueeze", names["D"], em.const([-1]))), hint="y_skip")
    z = names["z"]
    gate = em.op1("Mul", z, em.op1("Sigmoid", z), hint="silu_z")
    nodes.append(helper.make_node("Mul", [y, gate], [output], name=f"{prefix}/y_gated"))


def build_scan_model(
    chunk_size: int = 16, threshold: float = DEFAULT_GUARD_THRESHOLD, n_state: int | None = None, body: str = "guarded"
) -> onnx.ModelProto:
    """Builds a standalone model: the inputs :data:`INPUT_NAMES` -> ``y`` via :func:`append_chunk_scan`.

    Batch, D, L (and N unless given) are symbolic, so one model serves every shape.

    Args:
        chunk_size: Tokens per Scan step c.
        threshold: Guard threshold (see :func:`append_chunk_scan`).
        n_state: N for the declared input shapes, or None for symbolic.
        body: Scan body, one of :data:`SCAN_BODIES` (see :func:`append_chunk_scan`).

    Returns:
        A checked opset-17 model with standard ops only.
    """
    nodes: list[onnx.NodeProto] = []
    append_chunk_scan(nodes, {n: n for n in INPUT_NAMES}, OUTPUT_NAME, chunk_size, threshold, body=body)
    n_dim: int | str = "N" if n_state is None else n_state
    shapes = {
        "u": ["Bt", "D", "L"], "delta": ["Bt", "D", "L"], "z": ["Bt", "D", "L"], "A": ["D", n_dim],
        "B": ["Bt", n_dim, "L"], "C": ["Bt", n_dim, "L"], "D": ["D"], "delta_bias": ["D"],
    }  # fmt: skip
    graph = helper.make_graph(
        nodes,
        f"selective_scan_{body}_c{chunk_size}",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in INPUT_NAMES],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["Bt", "D", "L"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="scan_formulations")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------------------------------------------------------------
# Graph statistics
# ---------------------------------------------------------------------------------------------------------------------


def count_nodes(graph: onnx.GraphProto) -> tuple[int, int]:
    """Returns (top-level nodes, nodes including all subgraphs) of ``graph``."""
    total = 0
    for node in graph.node:
        total += 1
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            total += sum(count_nodes(g)[1] for g in subgraphs)
    return len(graph.node), total


def op_types(graph: onnx.GraphProto) -> set[str]:
    """Returns every op type used in ``graph`` and its subgraphs (all in the default domain if standard)."""
    found: set[str] = set()
    for node in graph.node:
        found.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}")
        for attr in node.attribute:
            for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                found |= op_types(g)
    return found



# ---------------------------------------------------------------------------------------------------------------------
# Marker rewrite: traced model with scan_impl="scan_marker" -> chunk Scan per marker
# ---------------------------------------------------------------------------------------------------------------------

MARKER_DOMAIN = "mvg_scan"
MARKER_OP_TYPE = "SelectiveScan"
_MARKER_INPUTS = len(INPUT_NAMES)


def _scan_marker_symbolic(g: object, *args: object) -> object:
    """Legacy-exporter symbolic: the marker op becomes one ``mvg_scan::SelectiveScan`` node with y's type."""
    return g.op(f"{MARKER_DOMAIN}::{MARKER_OP_TYPE}", *args).setType(args[0].type())  # type: ignore[attr-defined]


def register_scan_marker_symbolic(opset: int = OPSET) -> None:
    """Lets ``torch.onnx.export(dynamo=False)`` emit ``scan_impl="scan_marker"`` scans as marker nodes.

    Call once before exporting a model that uses the ``"scan_marker"`` implementation; then run
    :func:`replace_scan_markers` on the result. Idempotent.
    """
    from mobile_videogpt.selective_scan import SCAN_MARKER_OP

    torch.onnx.register_custom_op_symbolic(SCAN_MARKER_OP, _scan_marker_symbolic, opset)


def _holds_marker(node: onnx.NodeProto) -> bool:
    """Whether a subgraph of ``node`` (If/Loop/Scan body) contains a marker."""
    subgraphs = [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    subgraphs += [g for a in node.attribute for g in a.graphs]
    return any(f"{MARKER_DOMAIN}::{MARKER_OP_TYPE}" in op_types(g) for g in subgraphs)


def replace_scan_markers(
    model: onnx.ModelProto, chunk_size: int = 16, threshold: float = DEFAULT_GUARD_THRESHOLD, body: str = "guarded"
) -> onnx.ModelProto:
    """Rewrites every ``mvg_scan::SelectiveScan`` marker node into a chunk ``Scan`` (standard ops only).

    Each marker's 8 inputs are wired as :data:`INPUT_NAMES` and its output name is kept, so the rest of the graph is
    untouched; the subgraph nodes are spliced in at the marker's position (topological order holds) under a unique
    name prefix. The marker domain is dropped from the opset imports and the result is checked.

    Args:
        model: A model exported with :func:`register_scan_marker_symbolic` in effect.
        chunk_size: Tokens per Scan step (16 or 32).
        threshold: Guard threshold of :func:`append_chunk_scan`.
        body: Scan body, one of :data:`SCAN_BODIES`.

    Returns:
        A new model (the input is not modified).

    Raises:
        ValueError: If the model has no marker, a marker has the wrong arity, or a marker sits inside a subgraph.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    n_markers = 0
    for node in out.graph.node:
        if node.domain != MARKER_DOMAIN:
            if _holds_marker(node):
                raise ValueError(f"node {node.name!r} holds a scan marker inside a subgraph; not supported")
            nodes.append(node)
            continue
        if node.op_type != MARKER_OP_TYPE or len(node.input) != _MARKER_INPUTS or len(node.output) != 1:
            raise ValueError(
                f"marker node {node.name!r} ({node.domain}::{node.op_type}) must have {_MARKER_INPUTS} inputs "
                f"{list(INPUT_NAMES)} and 1 output, got {len(node.input)} and {len(node.output)}"
            )
        prefix = f"{node.name or 'scan'}/{body}_scan_{n_markers}"
        append_chunk_scan(
            nodes, dict(zip(INPUT_NAMES, node.input)), node.output[0], chunk_size, threshold, prefix=prefix, body=body
        )
        n_markers += 1
    if n_markers == 0:
        raise ValueError(f"no {MARKER_DOMAIN}::{MARKER_OP_TYPE} marker found; was the model exported with "
                         "scan_impl='scan_marker' and register_scan_marker_symbolic()?")  # fmt: skip
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    kept = [imp for imp in out.opset_import if imp.domain != MARKER_DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    onnx.checker.check_model(out)
    logger.info("replaced %d scan marker(s) by %s Scan (c=%d)", n_markers, body, chunk_size)
    return out
