"""Smoke runs of the benchmarks on the tiny preset: the JSON schema, ordered percentiles, counts that add up, and
the Markdown and plot files. Nothing here asserts a duration (the machine is shared and noisy).

Run: ``.venv/bin/python -m pytest -q tests/benchmarks`` (about a minute on 2 cores; the components, stream and gpu
runs happen once per session in ``conftest.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.components import stage_ratios
from benchmarks.stream import complete_windows
from tests.benchmarks.helpers import assert_header, assert_percentiles_ordered


def test_components_report_schema(components_run: tuple[Path, dict[str, Any]]) -> None:
    """Header, one summary per measured stage and variant, the projector timings of the reference."""
    out, report = components_run
    assert_header(report, "components")
    assert report["variants"] == ["pytorch:fp32"]
    assert list(report["stages"]) == ["preprocess", "image_encoder", "frame_selection", "decode_step"]
    assert set(report["stages"]["image_encoder"]) == {"pytorch:fp32"}
    assert report["stages"]["image_encoder"]["pytorch:fp32"]["n"] == 2
    assert set(report["projectors_reference"]) >= {"image_etp (16 frames)", "video_etp"}
    assert report["peak_rss_mb"] > 0
    assert assert_percentiles_ordered(report) > 10


def test_components_cache_ratio_counts_the_overlap(components_run: tuple[Path, dict[str, Any]]) -> None:
    """With 0.5 s overlap, consecutive windows share 4 of 16 frames: the cached path encodes 12, the uncached 16."""
    _, report = components_run
    cache = report["ratios"]["cache"]
    assert cache["frames_encoded_per_window"] == {"cached": 12.0, "uncached": 16.0}
    assert cache["ratio"]["n"] == cache["cached"]["n"] == cache["uncached"]["n"]
    assert cache["ratio"]["ratio_p10"] <= cache["ratio"]["ratio_p50"] <= cache["ratio"]["ratio_p90"]


def test_components_append_vs_reprefill_geometry(components_run: tuple[Path, dict[str, Any]]) -> None:
    """Re-prefill covers the context plus the appended window, append only the window."""
    _, report = components_run
    (a,) = report["ratios"]["append_vs_reprefill"]
    assert a["reprefill_tokens"] == a["context_tokens"] + a["appended_tokens"]
    assert a["appended_tokens"] == report["tokens"]["window"]
    assert report["tokens"]["visual_rows_per_window"] == 2402


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


def test_stage_ratios_pair_backends_and_precisions() -> None:
    """Each exported backend is compared with pytorch:fp32, each fp16 with its own fp32, from the same rounds."""
    wall = {"image_encoder": {"pytorch:fp32": [10.0, 20.0], "onnxruntime:fp32": [5.0, 10.0],
                              "onnxruntime:fp16": [5.0, 20.0]}}
    ratios = stage_ratios(wall, list(wall["image_encoder"]))
    assert set(ratios) == {"onnxruntime:fp32 / pytorch:fp32", "onnxruntime:fp16 / onnxruntime:fp32"}
    assert ratios["onnxruntime:fp32 / pytorch:fp32"]["image_encoder"]["ratio_p50"] == 0.5
    assert ratios["onnxruntime:fp16 / onnxruntime:fp32"]["image_encoder"]["ratio_p50"] == 1.5


def test_stream_report_schema(stream_run: tuple[Path, dict[str, Any]]) -> None:
    """Both runs, every pipeline stage summarised, feedback forced by every_n, KV and RSS recorded."""
    out, report = stream_run
    assert_header(report, "stream")
    assert set(report["runs"]) == {"unpaced", "paced"}
    for mode, run in report["runs"].items():
        assert {"frame_decode", "preprocess", "image_encoder", "frame_selection", "video_encoder", "decoder_append",
                "action_decision", "total"} <= set(run["stages"]), mode
        assert run["feedback"]["count"] >= 1 and run["feedback"]["ttft"]["n"] == run["feedback"]["count"], mode
        assert run["kv_bytes"]["max"] > 0 and run["peak_rss_mb"] > 0, mode
        assert run["real_time_factor"] > 0 and run["sustained_input_fps"] > 0, mode
    assert assert_percentiles_ordered(report) > 10


def test_stream_window_counts_add_up(stream_run: tuple[Path, dict[str, Any]]) -> None:
    """processed + skipped == windows complete in the stream; the unpaced run skips none."""
    _, report = stream_run
    for mode, run in report["runs"].items():
        w = run["windows"]
        assert w["processed"] + w["skipped"] == w["complete"], (mode, w)
        assert sum(w["skipped_by_reason"].values()) == w["skipped"], mode
        assert w["complete"] == 2, mode  # 3.6 s of stream: windows at [0, 2] and [1.5, 3.5]
        assert len(run["kv_bytes"]["per_window"]) == w["processed"], mode
    assert report["runs"]["unpaced"]["windows"]["skipped"] == 0


def test_stream_writes_markdown_and_plot(stream_run: tuple[Path, dict[str, Any]]) -> None:
    """The table and the stacked latency bar exist."""
    out, _ = stream_run
    assert "| run |" in (out / "stream.md").read_text()
    assert (out / "stream_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_complete_windows_rule() -> None:
    """2 s windows every 1.5 s: none before 2 s, one at 2 s, two at 3.5 s, twelve in 18.5 s."""
    assert complete_windows(1.99, 2.0, 1.5) == 0
    assert complete_windows(2.0, 2.0, 1.5) == 1
    assert complete_windows(3.5, 2.0, 1.5) == 2
    assert complete_windows(18.5, 2.0, 1.5) == 12


def test_gpu_smoke_report_schema(gpu_run: tuple[Path, dict[str, Any]]) -> None:
    """The GPU script's CPU smoke mode: every section present, counts consistent, Markdown written."""
    out, report = gpu_run
    assert_header(report, "gpu")
    assert report["device"] == "cpu" and report["precision"] == "fp32"
    assert {"image_encoder", "video_encoder", "decoder_prefill", "decoder_append", "decode_step"} <= set(report["stages"])
    assert report["decode"]["step"]["n"] == report["decode"]["tokens"]
    stream = report["stream"]
    assert len(stream["frames_encoded_per_window"]) == stream["windows"] == stream["window"]["n"]
    assert stream["frames_encoded_per_window"][0] == 16  # no warm-up window in smoke mode: nothing cached yet
    assert [p["windows_in_context"] for p in report["curves"]["append_vs_context"]] == [0, 1]
    assert report["tensorrt"]["status"].startswith("not requested")
    assert assert_percentiles_ordered(report) > 10
    assert "### GPU stages" in (out / "gpu.md").read_text()
