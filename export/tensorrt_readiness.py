"""TensorRT readiness without TensorRT: every exported graph against the ONNX parser's documented operator support.

TensorRT cannot be installed in this build environment, so a graph its ONNX parser would reject is found here instead
of on the first real ``trtexec`` / builder run. The table checked against is onnx-tensorrt's operator support matrix
(``docs/operators.md``), transcribed with its source and TensorRT version into
``export/data/tensorrt_onnx_ops_10.1.json``. For every node, also inside ``Scan`` / ``If`` / ``Loop`` bodies:

* the op is in the table and marked supported (custom domains, e.g. the ``mvg_scan`` selective-scan marker, need a
  TensorRT plugin);
* the element type of each checked input is one of the op's listed types (from ONNX shape inference);
* the machine-checkable restrictions hold (``checks`` in the data file): inputs that must be initializers or
  constants (``Slice`` axes, ``Unsqueeze`` axes, ``Reduce*`` axes, ...), attribute values (``TopK`` sorted,
  ``Resize`` modes and no antialias), pooling rank and dilations, single-output ``LayerNormalization``;

and for every graph: the opset is in the parser's range, no tensor is DOUBLE (limited support) and UINT8 appears only
as graph I/O, and the graph is **strongly typed**: ONNX's strict type inference passes (``onnx.checker`` full check),
so every op sees the input types its type constraint demands and every precision change is an explicit ``Cast`` (what
a strongly typed TensorRT network requires; the fp16 export inserts them, ``export/fp16.py``).

Restrictions the table states only in prose (e.g. ``If`` branch ranks) are reported as notes, not checked.

CLI: ``python -m export.tensorrt_readiness engines/tiny`` prints one table row per graph; exit code 0 when every graph
passes, 1 when one does not, 2 for a missing directory or file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

logger = logging.getLogger(__name__)

DATA_FILE = Path(__file__).resolve().parent / "data" / "tensorrt_onnx_ops_10.1.json"
#: ONNX element type -> the table's type name.
TYPE_NAMES = {
    TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
    TensorProto.DOUBLE: "DOUBLE", TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.INT8: "INT8",
    TensorProto.UINT8: "UINT8", TensorProto.BOOL: "BOOL",
}


@dataclass(frozen=True)
class OpTable:
    """The parser's operator table (one TensorRT version).

    Attributes:
        version: TensorRT version the table documents.
        source: Where the table comes from (repository, path, commit).
        opset_range: Inclusive ONNX opset range the parser supports.
        operators: Op type -> ``{"supported", "types", "restrictions"?, "checks"?}``.
    """

    version: str
    source: dict[str, str]
    opset_range: tuple[int, int]
    operators: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path = DATA_FILE) -> OpTable:
        """Reads a table data file.

        Raises:
            ValueError: If the file is not a table.
        """
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        try:
            low, high = data["opset_range"]
            return cls(str(data["tensorrt_version"]), dict(data["source"]), (int(low), int(high)),
                       dict(data["operators"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a TensorRT operator table ({exc})") from exc


@dataclass
class GraphReport:
    """What the check found in one graph.

    Attributes:
        path: The ONNX file.
        ops: Op type -> node count (subgraphs included).
        problems: Every violation, one line each (``node: what``); empty when the graph passes.
        plugins: Custom-domain ops (each needs a TensorRT plugin).
        notes: Restrictions the table states only in prose, for ops this graph uses.
    """

    path: Path
    ops: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """No problem and no plugin needed."""
        return not self.problems and not self.plugins


def _walk(graph: onnx.GraphProto, where: str = "") -> Iterator[tuple[onnx.NodeProto, onnx.GraphProto, str]]:
    """Every node with its graph, depth first into subgraphs (``Scan`` / ``If`` / ``Loop`` bodies)."""
    for node in graph.node:
        yield node, graph, where
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                yield from _walk(sub, f"{where}{node.name or node.op_type}/{attr.name}/")


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named value (inputs, outputs, initializers, inferred intermediates, subgraphs too)."""
    types: dict[str, int] = {}

    def collect(graph: onnx.GraphProto) -> None:
        for v in [*graph.input, *graph.output, *graph.value_info]:
            if v.type.HasField("tensor_type"):
                types[v.name] = v.type.tensor_type.elem_type
        for init in graph.initializer:
            types[init.name] = init.data_type
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        types[node.output[0]] = attr.t.data_type
            for attr in node.attribute:
                for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                    collect(sub)

    collect(model.graph)
    return types


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values known at build time: initializers and ``Constant`` outputs (all graphs)."""
    out: dict[str, np.ndarray] = {}
    for node, graph, _ in _walk(model.graph):
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    for graph in [model.graph] + [g for n, g, _ in _walk(model.graph)]:
        for init in graph.initializer:
            if init.name not in out:
                out[init.name] = numpy_helper.to_array(init) if init.data_location != TensorProto.EXTERNAL else None
    return out


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return None


def _check_node(node: onnx.NodeProto, entry: dict[str, Any], types: dict[str, int],
                constants: dict[str, np.ndarray], label: str) -> list[str]:
    """The table's rules for one node; returns the violations."""
    problems = []
    checks = entry.get("checks", {})
    allowed = set(entry["types"])
    typed = checks.get("typed_inputs")
    for i, name in enumerate(node.input):
        if not name or (typed is not None and i not in typed):
            continue
        elem = types.get(name)
        if elem is None:
            problems.append(f"{label}: input {i} ({name}) has no inferred type")
        elif TYPE_NAMES.get(elem, str(elem)) not in allowed:
            problems.append(f"{label}: input {i} is {TYPE_NAMES.get(elem, elem)}, the parser takes {sorted(allowed)}")
    for i in checks.get("constant_inputs", []):
        if i < len(node.input) and node.input[i] and node.input[i] not in constants:
            problems.append(f"{label}: input {i} ({node.input[i]}) must be an initializer or constant")
    for name, values in checks.get("attribute_values", {}).items():
        value = _attr(node, name)
        if value is not None and value not in values:
            problems.append(f"{label}: attribute {name}={value!r}, the parser takes {values}")
    for name in checks.get("attribute_all_ones", []):
        value = _attr(node, name)
        if value and any(v != 1 for v in value):
            problems.append(f"{label}: attribute {name}={list(value)} must be empty or all ones")
    if "kernel_rank" in checks:
        kernel = _attr(node, "kernel_shape")
        if kernel is not None and len(kernel) not in checks["kernel_rank"]:
            problems.append(f"{label}: {len(kernel)}-D pooling; the parser takes {checks['kernel_rank']}-D")
    if "max_outputs" in checks and sum(1 for o in node.output if o) > checks["max_outputs"]:
        problems.append(f"{label}: {len(node.output)} outputs; the parser supports only the first")
    for name in checks.get("forbidden_attributes", []):
        if _attr(node, name) is not None:
            problems.append(f"{label}: attribute {name} is unsupported")
    for index, limit in checks.get("max_constant_input", {}).items():
        i = int(index)
        if i < len(node.input) and node.input[i]:
            value = constants.get(node.input[i])
            if value is None:
                problems.append(f"{label}: input {i} must be a build-time constant")
            elif int(np.max(value)) > limit:
                problems.append(f"{label}: input {i} = {int(np.max(value))} exceeds {limit}")
    if node.op_type == "Cast":
        to = _attr(node, "to")
        if TYPE_NAMES.get(to) not in allowed:
            problems.append(f"{label}: Cast to {TYPE_NAMES.get(to, to)}, the parser casts to {sorted(allowed)}")
    return problems


def check_model(path: Path, table: OpTable) -> GraphReport:
    """Checks one ONNX file (external weights are not loaded; only the graph is read).

    Args:
        path: The ``.onnx`` file.
        table: The operator table.

    Returns:
        The report.
    """
    report = GraphReport(Path(path))
    model = onnx.load(str(path), load_external_data=False)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    low, high = table.opset_range
    if not low <= opsets.get("ai.onnx", 0) <= high:
        report.problems.append(f"opset {opsets.get('ai.onnx')} outside the parser's {low}..{high}")
    try:  # strongly typed: strict type inference, every op's type constraint satisfied without implicit casts
        onnx.checker.check_model(str(path), full_check=True)  # by path: external weights are checked, not loaded
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        report.problems.append(f"not strongly typed: {str(exc).splitlines()[0]}")
        inferred = model
    types, constants = _value_types(inferred), _constants(inferred)
    io = {v.name for v in [*inferred.graph.input, *inferred.graph.output]}
    for name, elem in types.items():
        kind = TYPE_NAMES.get(elem, str(elem))
        if kind == "DOUBLE":
            report.problems.append(f"{name}: DOUBLE tensor (the parser casts it down to FP32, clamping)")
        elif kind == "UINT8" and name not in io:
            report.problems.append(f"{name}: UINT8 inside the graph (TensorRT takes UINT8 only as network I/O)")
    for node, _, where in _walk(inferred.graph):
        label = f"{where}{node.name or '?'} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            report.plugins.append(f"{node.domain}::{node.op_type}")
            report.ops[f"{node.domain}::{node.op_type}"] += 1
            continue
        report.ops[node.op_type] += 1
        entry = table.operators.get(node.op_type)
        if entry is None or not entry["supported"]:
            report.problems.append(f"{label}: not supported by the TensorRT {table.version} ONNX parser")
            continue
        report.problems += _check_node(node, entry, types, constants, label)
        if "restrictions" in entry and "checks" not in entry:
            report.notes[node.op_type] = entry["restrictions"]
    report.plugins = sorted(set(report.plugins))
    return report


def check_engines(engines_dir: Path, table: OpTable | None = None) -> list[GraphReport]:
    """Checks every ONNX graph under ``engines_dir/onnx/`` (both precisions).

    Raises:
        FileNotFoundError: If the directory holds no ONNX graph.
    """
    table = table or OpTable.load()
    paths = sorted(Path(engines_dir).glob("onnx/*/*.onnx"))
    if not paths:
        raise FileNotFoundError(f"{engines_dir}: no onnx/<precision>/*.onnx graphs (export first: python -m export)")
    return [check_model(p, table) for p in paths]


def markdown(reports: list[GraphReport], table: OpTable) -> str:
    """One row per graph: ops, nodes, result and the first problems."""
    lines = [f"TensorRT {table.version} ONNX parser table ({table.source['repository']} {table.source['path']} at "
             f"{table.source['commit'][:7]})", "",
             "| graph | op types | nodes | result |", "|---|---|---|---|"]
    for r in reports:
        result = "pass" if r.passed else "; ".join((r.problems + [f"needs plugin {p}" for p in r.plugins])[:3])
        lines.append(f"| {r.path.parent.name}/{r.path.name} | {len(r.ops)} | {sum(r.ops.values())} | {result} |")
    notes = {op: text for r in reports for op, text in r.notes.items()}
    if notes:
        lines += ["", "Unchecked restrictions (prose only in the table) of ops these graphs use:"]
        lines += [f"- {op}: {text}" for op, text in sorted(notes.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 all pass, 1 a graph fails, 2 nothing to check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="engines directories or .onnx files")
    parser.add_argument("--table", type=Path, default=DATA_FILE, help="operator table data file")
    args = parser.parse_args(argv)
    table = OpTable.load(args.table)
    reports = []
    try:
        for path in args.paths:
            reports += [check_model(path, table)] if path.suffix == ".onnx" else check_engines(path, table)
    except (FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(reports, table))
    for r in reports:
        for line in r.problems:
            print(f"{r.path}: {line}")
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
