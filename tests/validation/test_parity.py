"""``python -m validation.parity`` end to end on the session's tiny engines: it passes, and it gates by exit code.

``pytest tests/validation/test_parity.py -s`` (uses the session export ``exported_tiny``).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from validation.parity import EXIT_FAIL, EXIT_OK, EXIT_USAGE, main

STAGES = {"preprocess", "image_encoder", "frame_selector", "video_encoder", "embed_tokens", "decoder", "stream"}


@pytest.fixture(scope="module")
def tiny_parity(exported_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str]:
    """One parity run on the tiny engines: 3 decoder steps, the default 4-window stream with 4 feedback tokens."""
    out = tmp_path_factory.mktemp("parity")
    code = main(["--engines", str(exported_tiny), "--steps", "3", "--feedback-tokens", "4", "--threads", "1",
                 "--out", str(out)])
    return code, json.loads((out / "parity.json").read_text()), (out / "parity.md").read_text()


def test_parity_passes_on_tiny(tiny_parity: tuple[int, dict, str]) -> None:
    """ORT fp32 and fp16 pass every row (stages, decoder, end-to-end stream); the reports are written."""
    code, report, md = tiny_parity
    print(md)
    assert code == EXIT_OK and report["passed"] and "**PASS**" in md
    ran = {(b["backend"], b["precision"]): b for b in report["backends"] if not b["skipped"]}
    assert set(ran) == {("onnxruntime", "fp32"), ("onnxruntime", "fp16")}
    for backend in ran.values():
        assert {r["stage"] for r in backend["rows"]} == STAGES
        assert all(r["passed"] for r in backend["rows"])
    fp32 = {(r["stage"], r["output"]): r for r in ran[("onnxruntime", "fp32")]["rows"]}
    assert fp32[("decoder", "free_greedy")]["note"] == "identical"
    assert fp32[("decoder", "teacher_forced_probes")]["top1_agreement"] == 1.0
    assert fp32[("stream", "decisions")]["note"] == "identical"
    assert report["prompt"]["passed"] and report["prompt"]["note"] == "identical"
    assert set(ran[("onnxruntime", "fp32")]["decoder"]["action_probs_ref"]) == {"<next>", "<feedback>", "<correct>"}


def test_parity_stream_check_generates_feedback(tiny_parity: tuple[int, dict, str]) -> None:
    """every_n n=3, max_windows 2 over 4 windows: window 2 evicts window 0, re-bases window 1 and asks for feedback,
    on the reference and on each backend, with the same text."""
    _, report, md = tiny_parity
    reference = report["stream_reference"]
    assert [d[1] for d in reference["decisions"]] == ["<next>", "<next>", "<feedback>", "<next>"]
    assert set(reference["feedback_texts"]) == {"2"} and reference["clears"] == {"feedback": 1}
    assert reference["evictions"] == {"max_windows": 1}
    for backend in report["backends"]:
        if backend["skipped"]:
            continue
        assert backend["stream"]["feedback_texts"] == reference["feedback_texts"]
        outputs = {r["output"] for r in backend["rows"] if r["stage"] == "stream"}
        assert {"action_query_logits", "action_logits", "feedback_tokens[w2]"} <= outputs
    assert "## Streaming session (end to end)" in md


def test_tensorrt_is_skipped_with_its_reason(tiny_parity: tuple[int, dict, str]) -> None:
    """Without TensorRT (or CUDA) both precisions are reported as skipped, saying why; they do not fail the run."""
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is importable here; tests/export/test_tensorrt.py covers the TensorRT run")
    _, report, md = tiny_parity
    skipped = [b for b in report["backends"] if b["skipped"]]
    assert {(b["backend"], b["precision"]) for b in skipped} == {("tensorrt", "fp32"), ("tensorrt", "fp16")}
    assert all("TensorRT is not importable" in b["skipped"] for b in skipped)
    assert "tensorrt fp32: skipped: TensorRT is not importable" in md


def _fp32_only_copy(exported_tiny: Path, engines: Path) -> dict:
    """A copy of the engines with only the fp32 graphs (and fp16 entries that point at a broken decoder)."""
    shutil.copytree(exported_tiny / "tokenizer", engines / "tokenizer")
    shutil.copytree(exported_tiny / "onnx" / "fp32", engines / "onnx" / "fp32")
    return json.loads((exported_tiny / "manifest.json").read_text())


def test_parity_fails_for_corrupted_engines(exported_tiny: Path, tmp_path: Path) -> None:
    """Exit 1 when the engines were altered after export: fp32 with every row of the tied embedding table scaled by
    1.01 fails the embedding and decoder gates; an fp16 decoder file overwritten with garbage cannot run."""
    engines = tmp_path / "engines"
    data = _fp32_only_copy(exported_tiny, engines)
    shutil.copytree(exported_tiny / "onnx" / "fp16", engines / "onnx" / "fp16")
    (engines / "onnx" / "fp16" / "decoder.onnx").write_bytes(b"not an onnx graph")
    (engines / "manifest.json").write_text(json.dumps(data))
    table = data["graphs"]["fp32"]["decoder"]["embedding_table"]
    rows = np.memmap(engines / "onnx/fp32" / table["file"], dtype=np.float32, mode="r+", offset=table["offset"],
                     shape=tuple(table["shape"]))
    rows[:] *= 1.01
    rows.flush()
    del rows
    out = tmp_path / "report"
    code = main(["--engines", str(engines), "--steps", "2", "--threads", "1", "--stream-windows", "0",
                 "--out", str(out)])
    report = json.loads((out / "parity.json").read_text())
    print((out / "parity.md").read_text())
    assert code == EXIT_FAIL and not report["passed"]
    by_precision = {b["precision"]: b for b in report["backends"] if b["backend"] == "onnxruntime"}
    failed = {(r["stage"], r["output"]) for r in by_precision["fp32"]["rows"] if not r["passed"]}
    assert ("embed_tokens", "rows") in failed and ("decoder", "system_prefill") in failed
    assert ("image_encoder", "clip_features") not in failed  # the vision graphs were not touched
    fp16 = by_precision["fp16"]
    assert not fp16["passed"] and not fp16["rows"] and fp16["note"].startswith("could not run: decoder[fp16]")


def test_parity_refuses_a_different_checkpoint(
    exported_tiny: Path, tiny_golden_checkpoint: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Comparing engines against a checkpoint they were not exported from is a usage error (exit 2)."""
    model_dir, clip_dir = tiny_golden_checkpoint
    code = main(["--engines", str(exported_tiny), "--model", str(model_dir), "--clip", str(clip_dir)])
    assert code == EXIT_USAGE and "re-export or pass the right --model/--clip" in capsys.readouterr().err


def test_parity_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad arguments and a directory without a manifest exit 2 with the reason."""
    for argv in (["--engines", "x", "--model", "m"], ["--engines", "x", "--steps", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == EXIT_USAGE
    assert main(["--engines", str(tmp_path)]) == EXIT_USAGE
    assert "manifest.json does not exist" in capsys.readouterr().err
