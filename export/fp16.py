"""fp16 variants of the exported graphs: fp16 matrix products and KV cache, fp32 everywhere else.

Policy (an allow-list, so an op nobody thought about stays fp32):

* **fp16 compute**: every ``MatMul`` / ``Gemm`` / ``Conv`` whose weight operand (input 1) is a constant
  initializer, the bias ``Add`` that directly follows such a product, and the ``Concat`` that produces a
  ``present.*`` KV output. Their weights are stored in fp16 (half the bytes) and they are where the FLOPs and the
  weight traffic are: the Qwen2 projections and MLP, the tied lm_head, CLIP's projections and MLP, the patch
  embeddings, VideoMamba's in/x/dt/out projections and depthwise conv, the ETP MLPs and PEG convs.
* **fp32 islands**: everything else. That includes, by construction, every normalisation (Qwen2 RMSNorm, VideoMamba
  RMSNorm, CLIP LayerNorm), RoPE (cos/sin tables and the rotation), QKᵀ, the scale, the causal mask add, softmax
  and the attention-weighted sum, the residual streams, the activations (SiLU, GELU, quick-GELU), the VideoMamba
  selective scan with softplus(Δ), its decay terms exp(ΔA), the gating and D skip, the ETP adaptive-pool matrix,
  the frame selector's X·Xᵀ softmax and the final logits. (Qwen2 QKᵀ overflows fp16 in un-fused attention,
  LayerNorm after attention overflows in fp16 TensorRT builds, and exp(ΔA) products underflow; see
  ``docs/export.md``.)

Graph I/O stays fp32 except the names a graph's I/O table lists in ``fp16_io`` (the KV cache), so callers feed the
same arrays to both precisions, the KV cache takes half the memory and logits are fp32. Casts are inserted where an
fp16 tensor meets an fp32 consumer and vice versa; ORT and TensorRT fold the casts of constants. The result is
strongly typed: a TensorRT 10.12+/11 strongly typed build runs exactly these precisions.

The converter is linear in the graph size (the onnxruntime ``float16`` converter re-scans every value_info per
blocked node, which takes tens of minutes on the 0.5B VideoMamba graph with most nodes blocked). Nodes with
subgraphs (``Scan``/``If`` of the guarded selective scan) and everything inside them stay fp32.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

FP16_MAX = 65504.0
WEIGHT_PRODUCT_OPS: frozenset[str] = frozenset({"MatMul", "Gemm", "Conv"})
"""Ops that run in fp16 when input 1 (the weight) is a constant initializer."""
TYPE_AGNOSTIC_OPS: frozenset[str] = frozenset({"Cast", "Shape", "Size", "CastLike"})
"""Ops whose float inputs need no cast (they accept any float type)."""
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)


class Fp16ConversionError(RuntimeError):
    """The graph cannot be converted (unknown tensor type, fp16 value captured by a subgraph, bad I/O name)."""


@dataclass
class Fp16Report:
    """What the conversion did (stored in the manifest).

    Attributes:
        fp16_nodes: fp16 compute nodes by op type.
        fp32_nodes: Nodes left in fp32 by op type (the islands; data-movement and shape ops included).
        casts_inserted: Cast nodes added.
        fp16_initializers: Initializers stored in fp16.
        fp16_weight_bytes: Bytes of those initializers after conversion.
        clamped_weights: Weight values outside the fp16 range, clamped to +-65504.
        flushed_weights: Non-zero weight values below the smallest fp16 subnormal, flushed to zero.
        fp16_io: Graph inputs/outputs typed float16.
    """

    fp16_nodes: dict[str, int] = field(default_factory=dict)
    fp32_nodes: dict[str, int] = field(default_factory=dict)
    casts_inserted: int = 0
    fp16_initializers: int = 0
    fp16_weight_bytes: int = 0
    clamped_weights: int = 0
    flushed_weights: int = 0
    fp16_io: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "fp16_nodes": self.fp16_nodes,
            "fp32_nodes": self.fp32_nodes,
            "casts_inserted": self.casts_inserted,
            "fp16_initializers": self.fp16_initializers,
            "fp16_weight_bytes": self.fp16_weight_bytes,
            "clamped_weights": self.clamped_weights,
            "flushed_weights": self.flushed_weights,
            "fp16_io": self.fp16_io,
        }


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The subgraphs held by a node's attributes (If branches, Scan/Loop bodies)."""
    graphs = [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    return graphs + [g for a in node.attribute for g in a.graphs]


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from an enclosing scope (used but neither defined nor a subgraph input)."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for sub in _subgraphs(node):
            used |= _outer_names(sub)
        defined.update(node.output)
    return used - defined


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every top-level tensor (inputs, initializers, node outputs), via ONNX type inference.

    Args:
        model: Model whose initializers may be external (only their metadata is needed).

    Returns:
        Tensor name -> TensorProto element type.
    """
    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=False)
    types: dict[str, int] = {}
    for vi in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def select_fp16_nodes(graph: onnx.GraphProto, fp16_outputs: Iterable[str], types: dict[str, int]) -> set[int]:
    """Indices of the nodes that compute in fp16 under the module's policy.

    Args:
        graph: The top-level graph.
        fp16_outputs: Graph outputs that are fp16 (their producing ``Concat`` runs in fp16).
        types: Tensor element types.

    Returns:
        Node indices.
    """
    init_types = {i.name: i.data_type for i in graph.initializer}
    fp16_out = set(fp16_outputs)
    chosen: set[int] = set()
    product_outputs: set[str] = set()
    for idx, node in enumerate(graph.node):
        if (
            node.op_type in WEIGHT_PRODUCT_OPS
            and len(node.input) > 1
            and init_types.get(node.input[1]) == TensorProto.FLOAT
        ):
            chosen.add(idx)
            product_outputs.add(node.output[0])
        elif node.op_type == "Add" and len(node.input) == 2:
            a, b = node.input
            if (a in product_outputs and init_types.get(b) == TensorProto.FLOAT) or (
                b in product_outputs and init_types.get(a) == TensorProto.FLOAT
            ):
                chosen.add(idx)
        elif (
            node.op_type == "Concat"
            and any(o in fp16_out for o in node.output)
            and all(types.get(i) in FLOAT_TYPES for i in node.input)
        ):
            chosen.add(idx)
    return chosen


def _convert_initializer(init: TensorProto, base_dir: Path | None, report: Fp16Report) -> TensorProto:
    """Returns an fp16 copy of a float32 initializer (external data is read from ``base_dir``)."""
    values = numpy_helper.to_array(init, base_dir=str(base_dir) if base_dir else "")
    finite = np.isfinite(values)
    clamped = int(np.count_nonzero(finite & (np.abs(values) > FP16_MAX)))
    tiny = np.abs(values) < np.finfo(np.float16).smallest_subnormal / 2
    flushed = int(np.count_nonzero(tiny & (values != 0)))
    half = np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)
    report.clamped_weights += clamped
    report.flushed_weights += flushed
    report.fp16_initializers += 1
    report.fp16_weight_bytes += half.nbytes
    return numpy_helper.from_array(half, init.name)


def convert_to_fp16(
    model: onnx.ModelProto, fp16_io: Sequence[str] = (), base_dir: Path | None = None
) -> tuple[onnx.ModelProto, Fp16Report]:
    """Builds the mixed-precision variant of an fp32 graph (see the module docstring for the policy).

    Args:
        model: fp32 model. Initializers may be external (``onnx.load(..., load_external_data=False)``); the ones that
            become fp16 are read from ``base_dir`` and stored inline in the result (save it with external data).
        fp16_io: Graph input/output names to type float16 (the KV cache); every other float I/O stays float32.
        base_dir: Directory of the model's external data files.

    Returns:
        ``(fp16 model, report)``. The input model is not modified.

    Raises:
        Fp16ConversionError: If an ``fp16_io`` name is not a float graph input/output, a float tensor's type cannot
            be inferred, or a subgraph reads a tensor that became fp16.
    """
    src = onnx.ModelProto()
    src.CopyFrom(model)
    graph = src.graph
    types = _elem_types(src)
    io_names = {i.name for i in graph.input} | {o.name for o in graph.output}
    bad = sorted(n for n in fp16_io if n not in io_names or types.get(n) != TensorProto.FLOAT)
    if bad:
        raise Fp16ConversionError(f"fp16_io names {bad} are not float32 graph inputs/outputs of {graph.name!r}")
    fp16_io_set = set(fp16_io)
    graph_outputs = {o.name for o in graph.output}
    fp16_idx = select_fp16_nodes(graph, (n for n in fp16_io_set if n in graph_outputs), types)

    # Consumers of every initializer: convert it only when all consumers compute in fp16.
    init_by_name = {i.name: i for i in graph.initializer}
    consumers: dict[str, set[bool]] = {}
    for idx, node in enumerate(graph.node):
        for name in node.input:
            if name in init_by_name:
                consumers.setdefault(name, set()).add(idx in fp16_idx)
        for sub in _subgraphs(node):
            for name in _outer_names(sub):
                if name in init_by_name:
                    consumers.setdefault(name, set()).add(False)
    report = Fp16Report(fp16_io=sorted(fp16_io_set))
    new_inits: list[TensorProto] = []
    dtype: dict[str, int] = {}  # current element type of every float tensor of the new graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and consumers.get(init.name) == {True}:
            new_inits.append(_convert_initializer(init, base_dir, report))
            dtype[init.name] = TensorProto.FLOAT16
        else:
            new_inits.append(init)
            if init.data_type in FLOAT_TYPES:
                dtype[init.name] = init.data_type
    for inp in graph.input:
        if types.get(inp.name) == TensorProto.FLOAT:
            dtype[inp.name] = TensorProto.FLOAT16 if inp.name in fp16_io_set else TensorProto.FLOAT

    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}

    def cast_to(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            out = f"{name}/cast_{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{name}/Cast_{suffix}"))
            casts[key] = out
            dtype[out] = to
            report.casts_inserted += 1
        return casts[key]

    fp16_counts: Counter[str] = Counter()
    fp32_counts: Counter[str] = Counter()
    for idx, node in enumerate(graph.node):
        want = TensorProto.FLOAT16 if idx in fp16_idx else TensorProto.FLOAT
        (fp16_counts if idx in fp16_idx else fp32_counts)[node.op_type] += 1
        for sub in _subgraphs(node):
            captured = sorted(n for n in _outer_names(sub) if dtype.get(n) == TensorProto.FLOAT16)
            if captured:
                raise Fp16ConversionError(
                    f"node {node.name!r} ({node.op_type}) has a subgraph reading fp16 tensors {captured}"
                )
        if node.op_type not in TYPE_AGNOSTIC_OPS:
            for i, name in enumerate(node.input):
                if name and name in dtype and dtype[name] != want:
                    node.input[i] = cast_to(name, want)
        new_nodes.append(node)
        for out in node.output:
            if not out:
                continue
            out_type = types.get(out)
            if out_type is None and node.op_type not in ("Constant",):
                raise Fp16ConversionError(f"cannot infer the type of {out!r} (output of {node.op_type} {node.name!r})")
            if out_type == TensorProto.FLOAT:
                dtype[out] = want
            elif out_type == TensorProto.FLOAT16:
                dtype[out] = TensorProto.FLOAT16

    # Graph outputs: retype to what the I/O table asks, inserting a final Cast where the producer differs.
    for out in graph.output:
        if types.get(out.name) != TensorProto.FLOAT:
            continue
        target = TensorProto.FLOAT16 if out.name in fp16_io_set else TensorProto.FLOAT
        if dtype.get(out.name, TensorProto.FLOAT) != target:
            inner = f"{out.name}/produced"
            for node in new_nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if i == out.name else i for i in node.input]
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=target, name=f"{out.name}/Cast_out"))
            report.casts_inserted += 1
        out.type.tensor_type.elem_type = target
    for inp in graph.input:
        if inp.name in fp16_io_set:
            inp.type.tensor_type.elem_type = TensorProto.FLOAT16

    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    del graph.value_info[:]  # stale types; re-inferred below
    report.fp16_nodes = dict(sorted(fp16_counts.items()))
    report.fp32_nodes = dict(sorted(fp32_counts.items()))
    logger.info(
        "fp16 variant of %s: %d fp16 nodes, %d fp32 nodes, %d casts, %d fp16 initializers (%.1f MB)",
        graph.name,
        sum(fp16_counts.values()),
        sum(fp32_counts.values()),
        report.casts_inserted,
        report.fp16_initializers,
        report.fp16_weight_bytes / 1e6,
    )
    if report.clamped_weights:
        logger.warning(
            "%d weight values exceed the fp16 range and were clamped to +-%g", report.clamped_weights, FP16_MAX
        )
    return src, report


def node_compute_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type each node computes in (the type of its first float input), for tests and reports.

    Args:
        model: A (converted) model.

    Returns:
        Node name -> element type, for nodes with at least one float input.
    """
    types = _elem_types(model)
    result: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            if types.get(name) in FLOAT_TYPES:
                result[node.name] = types[name]
                break
    return result
