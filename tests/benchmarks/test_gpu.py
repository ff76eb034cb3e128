"""``benchmarks.gpu`` in its CPU smoke mode: every section comes from the runtime (stages, session, decode), none from
a loop of its own.

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_gpu.py``
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gpu
from tests.benchmarks.helpers import assert_header, assert_percentiles_ordered


def test_gpu_smoke_report_schema(gpu_run: tuple[Path, dict[str, Any]]) -> None:
    """Every section present with the runtime's shapes; Markdown written."""
    out, report = gpu_run
    assert_header(report, "gpu")
    assert report["device"] == "cpu" and report["variants"] == ["pytorch:fp32"]
    stages = {"image_encoder", "video_encoder", "decoder_prefill", "decoder_append", "decode_step"}
    assert stages <= set(report["stages"])
    curves = report["curves"]["pytorch:fp32"]
    assert [p["tokens"] for p in curves["prefill_vs_length"]] == [64, 256]
    assert len(curves["append_vs_context"]) == 2
    decode = report["decode"]["variants"]["pytorch:fp32"]
    assert decode["greedy_step"]["n"] == decode["new_tokens"] - 1
    run = report["stream"]["pytorch:fp32"]["runs"]["unpaced"]
    assert run["windows"]["processed"] == 1 and run["engine_summary"]["device"] == "cpu"
    assert run["feedback"]["count"] == 1  # every_n = 1 in the smoke mode
    assert report["tensorrt"]["status"].startswith("not requested")
    assert assert_percentiles_ordered(report) > 10
    assert "### GPU (tiny, cpu" in (out / "gpu.md").read_text()


def test_gpu_module_makes_no_model_call_of_its_own() -> None:
    """The lean-runtime issue's acceptance criterion: ``benchmarks/gpu.py`` has no streaming loop of its own. It calls
    no backend stage and no session step itself; the shared benchmark modules do, through the runtime."""
    source = inspect.getsource(gpu)
    for call in (".decode(", ".step(", ".encode_images(", ".encode_video(", ".select_frames(", ".extend(",
                 "forward_cached(", "decode_step("):
        assert call not in source, call


def test_checkpoint_without_vocabulary_gets_the_carried_tokenizer(
    tmp_path: Path, tiny_checkpoint: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a machine without dashscope (the GPU image) the checkpoint is written without a tokenizer and the carried
    tokenizer files are copied in, so the session can tokenize its prompt; without them the error says what to pass."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "dashscope" else real_find_spec(name, *a))
    with pytest.raises(FileNotFoundError, match="pass --tokenizer-dir"):
        gpu.checkpoint_with_tokenizer("tiny", tmp_path / "ck", None)
    model_dir, _ = gpu.checkpoint_with_tokenizer("tiny", tmp_path / "ck", tiny_checkpoint[0])
    assert (model_dir / "tokenizer.json").read_bytes() == (tiny_checkpoint[0] / "tokenizer.json").read_bytes()
    assert (model_dir / "generation_config.json").is_file()


def test_fast_path_ladder_skips_cuda_rungs_off_cuda() -> None:
    """Off CUDA the Triton and CUDA-graph rungs are skipped with the reason and later rungs do not carry their
    setting; on CUDA every rung runs and the last has every fast-path setting."""
    from benchmarks.gpu_fastpath import ladder_options

    cpu = {name: (options, reason) for name, options, reason in ladder_options("cpu")}
    assert cpu["+triton"][1] == "scan_impl needs CUDA" and cpu["+cuda_graphs"][1] == "cuda_graphs needs CUDA"
    assert cpu["fast"] == ({"preprocess": "device", "attention": "sdpa_causal"}, "")
    cuda = ladder_options("cuda")
    assert not any(reason for _, _, reason in cuda)
    assert cuda[-1][1] == {"scan_impl": "triton", "preprocess": "device", "cuda_graphs": True,
                           "attention": "sdpa_causal"}


def test_fast_path_goals_report_met_or_gap() -> None:
    """Each goal is judged from the session run: the window p95 and TTFT against their ceilings, tokens/s and the
    stage cosine against their floors, with the gap when missed."""
    from benchmarks.gpu_fastpath import goal_rows, goals_markdown

    run = {"stages": {"total": {"p95_ms": 60.0}},
           "feedback": {"ttft": {"p50_ms": 40.0}, "tokens_per_s": {"p50": 300.0}}}
    numerics = {"min_cosine": {"image_tokens": 0.9995, "logits": 0.9999}, "action_top1_identical": True}
    goals = goal_rows({"runs": {"unpaced": run}}, numerics)
    assert goals["window_p95_ms"]["met"] is False and goals["window_p95_ms"]["gap"] == 10.0
    assert goals["window_p95_ms"]["stretch_met"] is False
    assert goals["ttft_p50_ms"]["met"] is True
    assert goals["tokens_per_s_p50"]["met"] is False and goals["tokens_per_s_p50"]["gap"] == 200.0
    assert goals["min_stage_cosine"]["met"] is True and goals["action_top1_identical"]["met"] is True
    assert "not met (gap 10)" in goals_markdown(goals)
