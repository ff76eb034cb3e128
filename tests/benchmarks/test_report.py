"""Rendering reports to Markdown, and the doc's generated blocks matching their stored JSON (no hand-typed figures).

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_report.py``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import REPO
from benchmarks.report import BLOCK, headline, readme_table, render, render_mode, render_summary, update_doc

DOC = REPO / "docs" / "benchmarks.md"
GPU_V1 = REPO / "benchmarks" / "results" / "gpu_h200" / "gpu.json"


def _summary(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A run_all summary built from the smoke runs (the real one takes minutes)."""
    first = next(iter(reports.values()))
    steps = {name: {"status": "ok", "wall_s": 1.0, "command": r["command"]} for name, r in reports.items()}
    steps["components_0.5b"] = {"status": "skipped", "reason": "test"}
    return {
        **{k: first[k] for k in ("schema_version", "date", "git", "machine")},
        "benchmark": "run_all",
        "command": "python -m benchmarks.run_all --out X",
        "preset": "tiny", "backend": "pytorch", "precision": "fp32", "random_weights": True,
        "steps": steps, "reports": reports, "wall_s": 2.0, "budget_s": 900.0,
    }


@pytest.fixture(scope="module")
def summary(components_run: tuple[Path, dict[str, Any]], stream_run: tuple[Path, dict[str, Any]],
            decode_run: tuple[Path, dict[str, Any]], allocations_run: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    """A summary holding every CPU step kind (footprint as a reuse-only skip)."""
    footprint = {**decode_run[1], "benchmark": "footprint", "status": "skipped", "reason": "--reuse-only and no venv"}
    return _summary({"components_tiny": components_run[1], "stream_tiny_onnxruntime": stream_run[1],
                     "decode_tiny": decode_run[1], "allocations_tiny": allocations_run[1], "footprint": footprint})


def test_summary_renders_every_section(summary: dict[str, Any]) -> None:
    """Stages, ratios, streaming, decode, allocations, the footprint's reason and the steps table."""
    text = render_summary(summary)
    for needle in ("**Stages, tiny preset**", "**Side-by-side ratios**", "cached / uncached", "append / re-prefill",
                   "**Streaming, tiny", "**Greedy-generation step vs isolated decode step**",
                   "| tiny pytorch:fp32 |", "**Bytes allocated per decoded token**",
                   "Install footprint not measured: --reuse-only", "### Steps", "components_0.5b (test)"):
        assert needle in text, needle
    assert headline(summary) in text
    assert render(summary) == text


def test_readme_table_names_the_decode_ratio(summary: dict[str, Any]) -> None:
    """The README line carries greedy / isolated per variant."""
    ratio = summary["reports"]["decode_tiny"]["variants"]["pytorch:fp32"]["ratio"]["ratio_p50"]
    assert f"greedy step / isolated decode step: tiny pytorch:fp32 {ratio:.2f}" in readme_table(summary)


def test_unknown_report_kind_is_an_error() -> None:
    """A JSON that is not one of ours is rejected with its kind named."""
    with pytest.raises(ValueError, match="unknown benchmark 'other'"):
        render({"benchmark": "other"})


def test_doc_blocks_name_existing_json() -> None:
    """Every generated block of docs/benchmarks.md points at a stored benchmark JSON."""
    blocks = list(BLOCK.finditer(DOC.read_text()))
    assert blocks, "docs/benchmarks.md has no generated blocks"
    for m in blocks:
        report = json.loads((REPO / m.group("path")).read_text())
        assert report["benchmark"] in ("run_all", "gpu", "components", "stream", "decode", "allocations", "footprint")


def test_doc_numbers_match_their_json() -> None:
    """The tables in docs/benchmarks.md are exactly what benchmarks.report renders from the stored JSON.

    Fails when a figure was edited by hand or the JSON changed without re-rendering; fix with
    ``python -m benchmarks.report --update-doc docs/benchmarks.md``.
    """
    assert update_doc(DOC, check=True)


def test_gpu_report_renders_full_and_readme(gpu_run: tuple[Path, dict[str, Any]]) -> None:
    """A gpu.json of this layout renders as the full tables and as the compact README table."""
    _, report = gpu_run
    assert render(report).startswith("### GPU (tiny, cpu")
    readme = render_mode(report, "readme")
    assert readme.startswith("| stage p50 ms | pytorch:fp32 |")
    assert "StreamSession" in readme and "greedy step" in readme


def test_stored_schema_1_gpu_report_is_labelled_as_such() -> None:
    """The stored H200 report predates the lean runtime; its rendering says it measured a model-side loop."""
    report = json.loads(GPU_V1.read_text())
    assert report["schema_version"] == 1
    for mode in ("full", "readme"):
        assert "not the runtime's `StreamSession`" in render_mode(report, mode)


def test_block_modes_other_than_full_need_a_summary(gpu_run: tuple[Path, dict[str, Any]]) -> None:
    """``headline`` is defined for run_all summaries only; the error names the report kind."""
    with pytest.raises(ValueError, match="needs a run_all summary, got a gpu report"):
        render_mode(gpu_run[1], "headline")


def test_readme_numbers_match_their_json() -> None:
    """The README's benchmark tables are exactly what benchmarks.report renders from the stored JSON.

    Fix with ``python -m benchmarks.report --update-doc README.md``.
    """
    assert update_doc(REPO / "README.md", check=True)
