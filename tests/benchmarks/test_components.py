"""``benchmarks.components`` smoke run on the tiny preset: the JSON schema, ordered percentiles, the cache and append
ratios' geometry, the curves, the Markdown and plot files. Nothing here asserts a duration.

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_components.py``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.benchmarks.helpers import assert_header, assert_percentiles_ordered


def test_components_report_schema(components_run: tuple[Path, dict[str, Any]]) -> None:
    """Header, one summary per measured stage and variant, the projector timings of the reference."""
    _, report = components_run
    assert_header(report, "components")
    assert report["variants"] == ["pytorch:fp32"]
    assert list(report["stages"]) == ["preprocess", "image_encoder", "frame_selection", "video_encoder", "decode_step"]
    assert set(report["stages"]["image_encoder"]) == {"pytorch:fp32"}
    assert report["stages"]["image_encoder"]["pytorch:fp32"]["n"] == 2
    assert set(report["engine_stages"]["decode_step"]) == {"pytorch:fp32"}  # the backend's own decoder time
    assert set(report["projectors_reference"]) >= {"image_etp (16 frames)", "video_etp"}
    assert report["peak_rss_mb"] > 0
    assert assert_percentiles_ordered(report) > 10


def test_components_prompt_comes_from_the_tokenizer(components_run: tuple[Path, dict[str, Any]]) -> None:
    """Token counts are the streaming prompt's (tokenized, not typed): 2402 visual rows plus the window's text."""
    _, report = components_run
    tokens = report["tokens"]
    assert tokens["visual_rows_per_window"] == 2402
    assert tokens["window"] > tokens["visual_rows_per_window"]
    assert tokens["system"] > 10


def test_components_cache_ratio_counts_the_overlap(components_run: tuple[Path, dict[str, Any]]) -> None:
    """With 0.5 s overlap, consecutive windows share 4 of 16 frames: the cached path encodes 12, the uncached 16."""
    _, report = components_run
    cache = report["ratios"]["cache"]
    assert cache["frames_encoded_per_window"] == {"cached": 12.0, "uncached": 16.0}
    assert cache["ratio"]["n"] == cache["cached"]["n"] == cache["uncached"]["n"]
    assert cache["ratio"]["ratio_p10"] <= cache["ratio"]["ratio_p50"] <= cache["ratio"]["ratio_p90"]


def test_components_append_vs_reprefill_geometry(components_run: tuple[Path, dict[str, Any]]) -> None:
    """Re-prefill covers the context plus the appended window, append only the window (with its closing ids)."""
    _, report = components_run
    (a,) = report["ratios"]["append_vs_reprefill"]
    assert a["reprefill_tokens"] == a["context_tokens"] + a["appended_tokens"]
    assert a["context_tokens"] == report["tokens"]["system"] + report["tokens"]["window"]
    assert a["appended_tokens"] >= report["tokens"]["window"]


def test_components_curves_follow_the_requested_points(components_run: tuple[Path, dict[str, Any]]) -> None:
    """Append/decode-step points at each context length (KV grows with it), image encoder at each batch size."""
    _, report = components_run
    curves = report["curves"]["pytorch:fp32"]
    assert [p["context_tokens"] for p in curves["append_vs_context"]] == [70, 300]
    assert all(p["appended_tokens"] == 64 for p in curves["append_vs_context"])
    kv = [p["kv_bytes"] for p in curves["decode_step_vs_context"]]
    assert kv[0] < kv[1]
    assert [p["batch"] for p in curves["image_encoder_vs_batch"]] == [1, 2]


def test_components_writes_markdown_and_plots(components_run: tuple[Path, dict[str, Any]]) -> None:
    """The table and both PNGs exist next to the JSON."""
    out, _ = components_run
    assert "| stage |" in (out / "components.md").read_text()
    for name in ("components_stages.png", "components_scaling.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
