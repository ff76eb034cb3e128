"""Rendering reports to Markdown, and the doc's generated blocks matching their stored JSON (no hand-typed figures).

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_report.py``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import REPO
from benchmarks.report import BLOCK, headline, render, render_mode, render_summary, update_doc

DOC = REPO / "docs" / "benchmarks.md"


def _summary(components: dict[str, Any], stream: dict[str, Any]) -> dict[str, Any]:
    """A run_all summary built from the smoke runs (the real one takes minutes)."""
    return {
        **{k: components[k] for k in ("schema_version", "date", "git", "machine")},
        "benchmark": "run_all",
        "command": "python -m benchmarks.run_all --out X",
        "preset": "tiny", "backend": "pytorch", "precision": "fp32", "random_weights": True,
        "steps": {"components_tiny": {"status": "ok", "wall_s": 1.0, "command": components["command"]},
                  "stream_tiny_onnxruntime": {"status": "ok", "wall_s": 1.0, "command": stream["command"]},
                  "components_0.5b": {"status": "skipped", "reason": "test"}},
        "reports": {"components_tiny": components, "stream_tiny_onnxruntime": stream},
        "wall_s": 2.0, "budget_s": 900.0,
    }


def test_summary_renders_every_section(components_run: tuple[Path, dict[str, Any]],
                                       stream_run: tuple[Path, dict[str, Any]]) -> None:
    """Stages, ratios, streaming and the steps table, and the skipped step named with its reason."""
    summary = _summary(components_run[1], stream_run[1])
    text = render_summary(summary)
    for needle in ("**Stages, tiny preset**", "**Side-by-side ratios**", "cached / uncached", "append / re-prefill",
                   "**Streaming, tiny", "### Steps", "components_0.5b (test)"):
        assert needle in text, needle
    assert headline(summary) in text
    assert render(summary) == text


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
        assert report["benchmark"] in ("run_all", "gpu", "components", "stream")


def test_doc_numbers_match_their_json() -> None:
    """The tables in docs/benchmarks.md are exactly what benchmarks.report renders from the stored JSON.

    Fails when a figure was edited by hand or the JSON changed without re-rendering; fix with
    ``python -m benchmarks.report --update-doc docs/benchmarks.md``.
    """
    assert update_doc(DOC, check=True)


def test_gpu_report_renders_full_and_readme(gpu_run: tuple[Path, dict[str, Any]]) -> None:
    """A gpu.json renders as the full tables and as the compact README table."""
    _, report = gpu_run
    assert render(report).startswith("### GPU stages (tiny, cpu")
    readme = render_mode(report, "readme")
    assert readme.startswith("| stage p50 ms | fp32 |") and "tokens/s" in readme and "windows/s" in readme


def test_block_modes_other_than_full_need_a_summary(gpu_run: tuple[Path, dict[str, Any]]) -> None:
    """``headline`` is defined for run_all summaries only; the error names the report kind."""
    with pytest.raises(ValueError, match="needs a run_all summary, got a gpu report"):
        render_mode(gpu_run[1], "headline")


def test_readme_numbers_match_their_json() -> None:
    """The README's benchmark tables are exactly what benchmarks.report renders from the stored JSON.

    Fix with ``python -m benchmarks.report --update-doc README.md``.
    """
    assert update_doc(REPO / "README.md", check=True)
