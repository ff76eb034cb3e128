"""Every exported graph against the TensorRT ONNX parser's documented operator support (no TensorRT needed).

Pins: the tiny engines' graphs (fp32 and fp16) pass the onnx-tensorrt 10.1 table (ops, input types, restrictions,
strongly typed); the selective-scan formulations are classified (guarded Scan: parser-supported ops; marker export:
needs a plugin); and the checker catches each kind of violation it claims to (hand-built graphs), so a pass means
something. Run: ``.venv/bin/pytest tests/export/test_tensorrt_readiness.py -q -s``.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from export.scan_formulations import INPUT_NAMES, build_scan_model, make_scan_inputs, register_scan_marker_symbolic
from export.tensorrt_readiness import DATA_FILE, OpTable, check_engines, check_model, main, markdown
from mobile_videogpt.selective_scan import get_scan_impl


@pytest.fixture(scope="module")
def table() -> OpTable:
    """The transcribed onnx-tensorrt 10.1 operator table."""
    return OpTable.load()


def test_table_records_its_source_and_version(table: OpTable) -> None:
    """The data file names the TensorRT version, the repository, path and commit it was transcribed from."""
    assert table.version == "10.1" and table.opset_range == (9, 20)
    assert table.source["repository"] == "onnx/onnx-tensorrt" and len(table.source["commit"]) == 40
    assert table.operators["MatMul"]["types"] == ["FP32", "FP16", "BF16"]
    assert not table.operators["Unique"]["supported"]


def test_every_exported_tiny_graph_is_tensorrt_ready(exported_tiny: Path, table: OpTable) -> None:
    """All eight graphs of the tiny engines (four per precision) pass: supported ops, listed input types,
    restrictions, opset, strongly typed."""
    reports = check_engines(exported_tiny, table)
    print(markdown(reports, table))
    assert len(reports) == 8
    failed = {str(r.path): r.problems + r.plugins for r in reports if not r.passed}
    assert not failed, failed


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: list[onnx.TensorProto] | None = None, opset: int = 17, domains: tuple[str, ...] = ()
           ) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model


def _check(tmp_path: Path, model: onnx.ModelProto, table: OpTable) -> list[str]:
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    report = check_model(path, table)
    return report.problems + [f"plugin {p}" for p in report.plugins]


def _vi(name: str, elem: int, shape: list[object]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unsupported_op", "Unique): not supported by the TensorRT 10.1 ONNX parser"),
        ("int_matmul", "input 0 is INT32, the parser takes ['BF16', 'FP16', 'FP32']"),
        ("runtime_slice_axes", "input 3 (axes) must be an initializer or constant"),
        ("topk_unsorted", "attribute sorted=0, the parser takes [1]"),
        ("custom_domain", "plugin mvg_scan::SelectiveScan"),
        ("double", "DOUBLE tensor"),
        ("opset", "opset 21 outside the parser's 9..20"),
        ("mixed_types", "not strongly typed"),
    ],
)
def test_checker_catches_each_violation(case: str, expected: str, tmp_path: Path, table: OpTable) -> None:
    """Each rule fails a graph built to break it (the message names the node's problem)."""
    f32, i32, i64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
    x = _vi("x", f32, [4, 4])
    y = _vi("y", f32, None)  # type: ignore[arg-type]
    axes = helper.make_tensor("one", i64, [1], [0])
    models = {
        "unsupported_op": _model([helper.make_node("Unique", ["x"], ["y"], name="u")], [x], [y]),
        "int_matmul": _model([helper.make_node("MatMul", ["a", "a"], ["b"], name="mm")], [_vi("a", i32, [2, 2])],
                             [_vi("b", i32, [2, 2])]),
        "runtime_slice_axes": _model(
            [helper.make_node("Slice", ["x", "one", "one", "axes"], ["y"], name="s")],
            [x, _vi("axes", i64, [1])], [y], [axes]),
        "topk_unsorted": _model(
            [helper.make_node("TopK", ["x", "k"], ["y", "i"], name="t", sorted=0)], [x],
            [y, _vi("i", i64, None)], [helper.make_tensor("k", i64, [1], [2])]),  # type: ignore[arg-type]
        "custom_domain": _model([helper.make_node("SelectiveScan", ["x"], ["y"], name="m", domain="mvg_scan")],
                                [x], [y], domains=("mvg_scan",)),
        "double": _model([helper.make_node("Relu", ["d"], ["e"], name="r")], [_vi("d", TensorProto.DOUBLE, [2])],
                         [_vi("e", TensorProto.DOUBLE, [2])]),
        "opset": _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [x], [y], opset=21),
        "mixed_types": _model([helper.make_node("Add", ["x", "h"], ["y"], name="a")],
                              [x, _vi("h", TensorProto.FLOAT16, [4, 4])], [y]),
    }
    problems = _check(tmp_path, models[case], table)
    print(case, problems)
    assert any(expected in p for p in problems), problems


def test_guarded_scan_formulation_uses_parser_supported_ops(tmp_path: Path, table: OpTable) -> None:
    """The guarded chunk ``Scan`` (standard ops, ``Scan`` + ``If`` bodies checked too) passes the table; the prose
    restriction of ``If`` is reported as a note (TensorRT runs ``Scan`` as an ILoop: slow, see docs/export.md)."""
    path = tmp_path / "guarded.onnx"
    onnx.save(build_scan_model(16, body="guarded"), str(path))
    report = check_model(path, table)
    assert report.passed, report.problems
    assert {"Scan", "If", "CumSum"} <= set(report.ops)
    assert "If" in report.notes


def test_scan_marker_export_needs_a_plugin(tmp_path: Path, table: OpTable) -> None:
    """A model exported with ``scan_impl: scan_marker`` carries ``mvg_scan::SelectiveScan``: the checker reports
    the plugin it needs (the marker is what a fused-scan TensorRT plugin would bind to)."""
    register_scan_marker_symbolic()
    x = make_scan_inputs("normal", length=20, dim=4, n_state=2)

    class Scan(torch.nn.Module):
        def forward(self, *a: torch.Tensor) -> torch.Tensor:
            return get_scan_impl("scan_marker")(*a, delta_softplus=True)

    path = tmp_path / "marker.onnx"
    torch.onnx.export(Scan(), tuple(x[n] for n in INPUT_NAMES), str(path), input_names=list(INPUT_NAMES),
                      opset_version=17, dynamo=False)
    report = check_model(path, table)
    assert report.plugins == ["mvg_scan::SelectiveScan"] and not report.passed


def test_cli_exit_codes(exported_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m export.tensorrt_readiness``: 0 when every graph passes, 2 for a directory without graphs."""
    assert main([str(exported_tiny)]) == 0
    assert "| fp16/decoder.onnx |" in capsys.readouterr().out
    assert main([str(tmp_path)]) == 2
    assert DATA_FILE.is_file()
