"""ONNX export of every graph (legacy TorchScript exporter, opset 17, external data) and the fp16 variants.

Layout written under an engines directory (``engines/<name>/``)::

    onnx/fp32/<graph>.onnx, <graph>.onnx.data, <graph>.json      (graph, weights, sidecar)
    onnx/fp16/<graph>.onnx, <graph>.onnx.data, <graph>.json

Why the legacy exporter (``dynamo=False``): it handles transformers 5's Qwen2 with a flat-KV wrapper and dynamic
past length (including Past = 0) without patches, exports CLIP and the chunked selective scan, and is what TensorRT's
ONNX parser is most used to (see ``docs/export.md``).
Attention is exported in transformers' "eager" form (explicit MatMul / Softmax) so the fp32 islands are visible
nodes. The selective scan uses the formulation the model was loaded with (``scan_impl``); ``"scan_marker"`` is
exported as marker nodes and rewritten into guarded ONNX ``Scan`` loops by ``export.scan_formulations``.

The decoder's ``lm_head`` product is rewritten after export into ``Gemm(hidden, embed_tokens.weight, transB=1)`` so
the tied table is stored once, in [V, H] row layout, in ``decoder.onnx.data``; the manifest records its offset so the
runtime memory-maps it for embedding lookups instead of keeping a second copy.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from export import graphs
from export.fp16 import Fp16Report, convert_to_fp16
from export.graphs import DECODER, EMBED_TABLE_NAME, GraphIO
from mobile_videogpt.model import MobileVideoGPT

logger = logging.getLogger(__name__)

OPSET = 17
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
SCAN_MARKER_IMPL = "scan_marker"


class ExportError(RuntimeError):
    """A graph could not be exported or failed its post-export checks."""


@dataclass
class ExportedGraph:
    """One written ONNX file.

    Attributes:
        graph: Graph name.
        precision: "fp32" or "fp16".
        onnx_path: The ``.onnx`` file.
        data_path: Its external-data file (None when the graph has no large initializers).
        seconds: Wall time of the export (fp32) or conversion (fp16).
        nodes: Top-level node count.
        io: The graph's I/O table.
        fp16_report: What the fp16 conversion did (fp16 only).
        extra: Graph-specific facts (e.g. the embedding table's location for the decoder).
    """

    graph: str
    precision: str
    onnx_path: Path
    data_path: Path | None
    seconds: float
    nodes: int
    io: GraphIO
    fp16_report: Fp16Report | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes on disk (graph + external data)."""
        return self.onnx_path.stat().st_size + (self.data_path.stat().st_size if self.data_path else 0)

    def as_dict(self, root: Path) -> dict[str, Any]:
        """JSON-friendly form with paths relative to ``root`` (the engines directory)."""
        inputs, outputs = self.io.with_precision(self.precision)
        entry: dict[str, Any] = {
            "file": self.onnx_path.relative_to(root).as_posix(),
            "data_file": self.data_path.relative_to(root).as_posix() if self.data_path else None,
            "bytes": self.nbytes,
            "seconds": round(self.seconds, 2),
            "nodes": self.nodes,
            "opset": OPSET,
            "inputs": [s.as_dict() for s in inputs],
            "outputs": [s.as_dict() for s in outputs],
            "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in self.io.dynamic_axes().items()},
        }
        if self.fp16_report is not None:
            entry["fp16"] = self.fp16_report.as_dict()
        entry.update(self.extra)
        return entry


# ------------------------------------------------------------------------------------------------------ inputs
def example_inputs(name: str, model: MobileVideoGPT, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Tracing inputs of one graph (values are irrelevant; shapes pick the traced path).

    The decoder is traced with Past = 3 > 0 and S = 5 > 1 so the KV concat and the mask over past positions are in
    the graph; Past = 0 and S = 1 then work through the dynamic axes (tested).

    Args:
        name: Graph name.
        model: The reference model.
        seed: Generator seed.

    Returns:
        Positional inputs of the wrapper's ``forward``.
    """
    gen = torch.Generator().manual_seed(seed)
    io = graphs.io_tables(model)[name]
    dims = {"frames": 2, "batch": 1, "sequence": 5, "past_sequence": 3}
    tensors: list[torch.Tensor] = []
    for spec in io.inputs:
        shape = [dims[d] if isinstance(d, str) else d for d in spec.shape]
        if spec.name == "position_ids":
            tensors.append(torch.arange(3, 3 + shape[1]).expand(shape[0], -1).contiguous())
        else:
            tensors.append(torch.randn(*shape, generator=gen))
    return tuple(tensors)


# ------------------------------------------------------------------------------------------------------ helpers
def _remove(path: Path) -> None:
    """Deletes a file if it exists (onnx appends to an existing external-data file)."""
    if path.exists():
        path.unlink()


def save_model(model: onnx.ModelProto, path: Path) -> Path | None:
    """Saves a model with all initializers > 1 KB in one external-data file beside it, and checks it.

    Args:
        model: The model (initializers in memory).
        path: Target ``.onnx`` path.

    Returns:
        The external-data file, or None when nothing was large enough to go there.

    Raises:
        ExportError: If the ONNX checker rejects the saved model.
    """
    data = path.with_name(path.name + ".data")
    _remove(path)
    _remove(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path} fails the ONNX checker: {exc}") from exc
    return data if data.exists() else None


def tie_lm_head(model: onnx.ModelProto, hidden: int, vocab: int) -> None:
    """Rewrites the decoder's ``lm_head`` MatMul into ``Gemm(h, embed_tokens.weight, transB=1)`` in place.

    The exporter folds ``lm_head.weight.T`` into a [H, V] initializer; this stores the [V, H] table instead (the
    tied embedding table, row layout) so one copy serves the logits and the runtime's embedding lookups.

    Args:
        model: The exported fp32 decoder (initializers in memory).
        hidden: H.
        vocab: V.

    Raises:
        ExportError: If the logits are not produced by one MatMul with a [H, V] initializer.
    """
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    node = producers.get("logits")
    while node is not None and node.op_type == "Cast":
        node = producers.get(node.input[0])
    inits = {i.name: i for i in graph.initializer}
    if node is None or node.op_type != "MatMul" or node.input[1] not in inits:
        raise ExportError(
            f"decoder logits are not produced by a MatMul with a weight initializer (found {node and node.op_type})"
        )
    weight = inits[node.input[1]]
    if list(weight.dims) != [hidden, vocab]:
        raise ExportError(f"lm_head weight initializer has shape {list(weight.dims)}, expected [{hidden}, {vocab}]")
    table = np.ascontiguousarray(numpy_helper.to_array(weight).T)  # [V, H]
    graph.initializer.remove(weight)
    graph.initializer.append(numpy_helper.from_array(table, EMBED_TABLE_NAME))
    gemm = helper.make_node(
        "Gemm", [node.input[0], EMBED_TABLE_NAME], list(node.output), name="/lm_head/Gemm", transB=1
    )
    index = list(graph.node).index(node)
    graph.node.remove(node)
    graph.node.insert(index, gemm)


def embedding_table_location(onnx_path: Path) -> dict[str, Any]:
    """Where the decoder's tied embedding table lies in its external-data file.

    Args:
        onnx_path: A decoder ``.onnx`` (fp32 or fp16).

    Returns:
        ``{"file": data file name, "offset", "length", "dtype", "shape": [V, H]}``.

    Raises:
        ExportError: If the table is missing or not stored externally.
    """
    model = onnx.load(str(onnx_path), load_external_data=False)
    for init in model.graph.initializer:
        if init.name == EMBED_TABLE_NAME:
            if init.data_location != TensorProto.EXTERNAL:
                raise ExportError(f"{EMBED_TABLE_NAME} is not stored in external data in {onnx_path}")
            info = {e.key: e.value for e in init.external_data}
            dtype = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16"}[init.data_type]
            return {
                "file": info["location"],
                "offset": int(info.get("offset", 0)),
                "length": int(info["length"]),
                "dtype": dtype,
                "shape": [int(d) for d in init.dims],
            }
    raise ExportError(f"{onnx_path} has no {EMBED_TABLE_NAME} initializer")


def _write_sidecar(result: ExportedGraph, root: Path, source: dict[str, Any]) -> None:
    """Writes ``<graph>.json`` beside the ONNX file (precision, I/O, source checkpoint)."""
    sidecar = {"graph": result.graph, "precision": result.precision, **result.as_dict(root), "source": source}
    result.onnx_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------------ export
def export_fp32(
    name: str, model: MobileVideoGPT, root: Path, source: dict[str, Any] | None = None, scan_impl: str = "chunked"
) -> ExportedGraph:
    """Exports one graph in fp32 and checks it.

    Args:
        name: Graph name (``export.graphs.GRAPH_NAMES``).
        model: The reference model, loaded with the ``scan_impl`` to export and eager attention.
        root: Engines directory; the graph goes to ``root/onnx/fp32/``.
        source: Source-checkpoint facts for the sidecar.
        scan_impl: The scan implementation the model was loaded with (``"scan_marker"`` triggers the Scan rewrite).

    Returns:
        The written graph.

    Raises:
        ExportError: If export or a post-export check fails.
    """
    io = graphs.io_tables(model)[name]
    wrapper = graphs.build_graph(name, model)
    args = example_inputs(name, model)
    out = root / "onnx" / "fp32" / f"{name}.onnx"
    start = time.perf_counter()
    if scan_impl == SCAN_MARKER_IMPL and name == graphs.VIDEO_ENCODER:
        from export.scan_formulations import register_scan_marker_symbolic

        register_scan_marker_symbolic(OPSET)
    with tempfile.TemporaryDirectory(prefix=f"export_{name}_") as tmp:
        tmp_path = Path(tmp) / f"{name}.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            # The legacy exporter warns that it is deprecated and about traced Python values; both are expected.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                args,
                str(tmp_path),
                input_names=io.input_names,
                output_names=io.output_names,
                dynamic_axes=io.dynamic_axes(),
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(tmp_path))  # external data, if torch wrote any, is read from tmp
    if scan_impl == SCAN_MARKER_IMPL and name == graphs.VIDEO_ENCODER:
        from export.scan_formulations import replace_scan_markers

        proto = replace_scan_markers(proto)
    proto.graph.name = name
    extra: dict[str, Any] = {}
    if name == DECODER:
        tie_lm_head(proto, model.config.hidden_size, model.vocab_size)
    _check_io(proto, io, "fp32")
    apply_io_shapes(proto, io)
    data = save_model(proto, out)
    seconds = time.perf_counter() - start
    if name == DECODER:
        extra["embedding_table"] = embedding_table_location(out)
    result = ExportedGraph(name, "fp32", out, data, seconds, len(proto.graph.node), io, extra=extra)
    _write_sidecar(result, root, source or {})
    logger.info("exported %s fp32: %d nodes, %.1f MB, %.1f s", name, result.nodes, result.nbytes / 1e6, seconds)
    return result


def export_fp16(fp32: ExportedGraph, root: Path, source: dict[str, Any] | None = None) -> ExportedGraph:
    """Writes the fp16 variant of an exported fp32 graph (policy in ``export.fp16``).

    Args:
        fp32: The fp32 export.
        root: Engines directory; the graph goes to ``root/onnx/fp16/``.
        source: Source-checkpoint facts for the sidecar.

    Returns:
        The written graph.
    """
    start = time.perf_counter()
    base = fp32.onnx_path.parent
    model = onnx.load(str(fp32.onnx_path), load_external_data=False)
    converted, report = convert_to_fp16(model, fp16_io=fp32.io.fp16_io, base_dir=base)
    onnx.external_data_helper.load_external_data_for_model(converted, str(base))  # remaining fp32 initializers
    _check_io(converted, fp32.io, "fp16")
    out = root / "onnx" / "fp16" / fp32.onnx_path.name
    data = save_model(converted, out)
    seconds = time.perf_counter() - start
    extra: dict[str, Any] = {}
    if fp32.graph == DECODER:
        extra["embedding_table"] = embedding_table_location(out)
    result = ExportedGraph(fp32.graph, "fp16", out, data, seconds, len(converted.graph.node), fp32.io, report, extra)
    _write_sidecar(result, root, source or {})
    logger.info("wrote %s fp16: %.1f MB, %.1f s", fp32.graph, result.nbytes / 1e6, seconds)
    return result


def apply_io_shapes(model: onnx.ModelProto, io: GraphIO) -> None:
    """Writes the I/O table's dimensions (static sizes and symbolic names) onto the graph's inputs and outputs.

    The exporter leaves some static output sizes symbolic (e.g. after a Slice); the table is the contract, so the
    graph states it exactly. Called after :func:`_check_io` has matched names, order, dtypes and ranks.
    """
    for specs, values in ((io.inputs, model.graph.input), (io.outputs, model.graph.output)):
        for spec, value in zip(specs, values):
            shape = value.type.tensor_type.shape
            del shape.dim[:]
            for d in spec.shape:
                dim = shape.dim.add()
                if isinstance(d, str):
                    dim.dim_param = d
                else:
                    dim.dim_value = d


_ONNX_DTYPES = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.INT64: "int64",
    TensorProto.INT32: "int32",
}


def _check_io(model: onnx.ModelProto, io: GraphIO, precision: str) -> None:
    """Checks the graph's I/O names, order, dtypes and ranks against the I/O table.

    Raises:
        ExportError: Naming the first mismatch.
    """
    inputs, outputs = io.with_precision(precision)
    for kind, specs, values in (("input", inputs, model.graph.input), ("output", outputs, model.graph.output)):
        got = [v.name for v in values]
        want = [s.name for s in specs]
        if got != want:
            raise ExportError(f"{io.graph} {precision}: graph {kind}s {got} differ from the I/O table {want}")
        for spec, value in zip(specs, values):
            ttype = value.type.tensor_type
            dtype = _ONNX_DTYPES.get(ttype.elem_type, str(ttype.elem_type))
            if dtype != spec.dtype or len(ttype.shape.dim) != len(spec.shape):
                raise ExportError(
                    f"{io.graph} {precision}: {kind} {spec.name} is {dtype} rank {len(ttype.shape.dim)}, "
                    f"the I/O table says {spec.dtype} {spec.shape}"
                )


def export_all(
    model: MobileVideoGPT,
    root: Path,
    precisions: Sequence[str] = PRECISIONS,
    source: dict[str, Any] | None = None,
    scan_impl: str = "chunked",
    graph_names: Sequence[str] = graphs.GRAPH_NAMES,
) -> dict[str, dict[str, ExportedGraph]]:
    """Exports every graph in fp32 and writes the requested variants.

    Args:
        model: Reference model (eager attention, loaded with ``scan_impl``).
        root: Engines directory.
        precisions: Subset of :data:`PRECISIONS`; fp32 is always exported because fp16 is derived from it, but it is
            only listed in the result when requested.
        source: Source-checkpoint facts for the sidecars.
        scan_impl: Scan implementation the model was loaded with.
        graph_names: Graphs to export.

    Returns:
        precision -> graph name -> export.

    Raises:
        ValueError: For an unknown precision.
    """
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precision(s) {unknown}; choose from {list(PRECISIONS)}")
    results: dict[str, dict[str, ExportedGraph]] = {p: {} for p in precisions}
    for name in graph_names:
        fp32 = export_fp32(name, model, root, source, scan_impl)
        if "fp32" in results:
            results["fp32"][name] = fp32
        if "fp16" in results:
            results["fp16"][name] = export_fp16(fp32, root, source)
    if "fp32" not in results:
        shutil.rmtree(root / "onnx" / "fp32", ignore_errors=False)
    return results
