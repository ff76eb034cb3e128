"""The two CLIs: ``python -m export`` refuses bad checkpoints clearly; ``python -m export.parity`` gates by exit code.

``pytest tests/export/test_cli.py -s``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from export.__main__ import main as export_main
from export.parity import main as parity_main

BACKWARD_A = "model.vision_tower.vision_encoder.layers.1.mixer.A_b_log"


def _broken_checkpoint(tiny_checkpoint: tuple[Path, Path], tmp_path: Path, change: str) -> tuple[Path, Path]:
    """A copy of the tiny checkpoint with one layout fault."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_checkpoint[0], model_dir)
    tensors = load_file(str(model_dir / "model.safetensors"))
    if change == "missing_backward_weight":
        del tensors[BACKWARD_A]  # what a peer's export silently dropped
    elif change == "wrong_shape":
        tensors[BACKWARD_A] = np.zeros((1152, 8), dtype=np.float16)
    elif change == "unexpected_key":
        tensors["model.extra.weight"] = np.zeros(3, dtype=np.float16)
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    return model_dir, tiny_checkpoint[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing_backward_weight", f"missing tensor(s) ['{BACKWARD_A}']"),
        ("wrong_shape", f"{BACKWARD_A}: checkpoint (1152, 8) vs model (1152, 16)"),
        ("unexpected_key", "unexpected tensor(s) ['model.extra.weight']"),
    ],
)
def test_export_refuses_bad_checkpoint_layouts(
    tiny_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, message: str
) -> None:
    """A wrong layout exits 2 with the strict loader's message naming the key; nothing is exported."""
    model_dir, clip_dir = _broken_checkpoint(tiny_checkpoint, tmp_path, change)
    code = export_main(["--model", str(model_dir), "--clip", str(clip_dir), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    print(err)
    assert code == 2 and message in err
    assert not (tmp_path / "out" / "model" / "manifest.json").exists()


def test_export_refuses_checkpoint_without_tokenizer(
    tiny_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The engines must carry the tokenizer; a checkpoint without tokenizer.json is refused before exporting."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_checkpoint[0], model_dir)
    (model_dir / "tokenizer.json").unlink()
    code = export_main(["--model", str(model_dir), "--clip", str(tiny_checkpoint[1]), "--out", str(tmp_path / "out")])
    assert code == 2 and "has no tokenizer.json" in capsys.readouterr().err


def test_export_argument_errors() -> None:
    """--model without --clip, and an unknown precision, are usage errors (exit 2)."""
    for argv in (["--model", "x"], ["--precision", "fp8"], ["--preset", "tiny", "--model", "a", "--clip", "b"]):
        with pytest.raises(SystemExit) as exc:
            export_main(argv)
        assert exc.value.code == 2


def test_parity_passes_on_tiny(exported_tiny: Path, tmp_path: Path) -> None:
    """ORT fp32 and fp16 pass every gate; TensorRT is reported as skipped with its reason; reports are written."""
    code = parity_main(["--engines", str(exported_tiny), "--steps", "4", "--threads", "1", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "parity.json").read_text())
    print((tmp_path / "parity.md").read_text())
    assert code == 0 and report["passed"]
    ran = {(b["backend"], b["precision"]): b for b in report["backends"] if not b["skipped"]}
    assert set(ran) == {("onnxruntime", "fp32"), ("onnxruntime", "fp16")}
    fp32 = ran[("onnxruntime", "fp32")]
    assert fp32["decoder"]["greedy_identical"] and fp32["decoder"]["top1_agreement"] == 1.0
    assert {s["stage"] for s in fp32["stages"]} == {"image_encoder", "frame_selector", "video_encoder", "embed_tokens"}
    assert set(fp32["decoder"]["action_probs_ref"]) == {"<next>", "<feedback>", "<correct>"}
    skipped = [b for b in report["backends"] if b["skipped"]]
    assert all(b["backend"] == "tensorrt" and b["skipped"] for b in skipped)


def test_parity_fails_for_a_corrupted_engine(exported_tiny: Path, tmp_path: Path) -> None:
    """A decoder whose embedding table was altered after export fails the fp32 gates: exit code 1."""
    engines = tmp_path / "engines"
    shutil.copytree(exported_tiny / "tokenizer", engines / "tokenizer")
    shutil.copytree(exported_tiny / "onnx" / "fp32", engines / "onnx" / "fp32")
    data = json.loads((exported_tiny / "manifest.json").read_text())
    data["precisions"], data["graphs"] = ["fp32"], {"fp32": data["graphs"]["fp32"]}
    (engines / "manifest.json").write_text(json.dumps(data))
    table = data["graphs"]["fp32"]["decoder"]["embedding_table"]
    rows = np.memmap(
        engines / "onnx/fp32" / table["file"],
        dtype=np.float32,
        mode="r+",
        offset=table["offset"],
        shape=tuple(table["shape"]),
    )
    rows[:] *= 1.01  # a 1 % change of every row of the tied table
    rows.flush()
    del rows
    code = parity_main(["--engines", str(engines), "--steps", "2", "--threads", "1", "--out", str(tmp_path / "report")])
    report = json.loads((tmp_path / "report" / "parity.json").read_text())
    assert code == 1 and not report["passed"]
    failed = [s["stage"] for b in report["backends"] if not b["skipped"] for s in b["stages"] if not s["passed"]]
    assert "embed_tokens" in failed


def test_parity_refuses_a_different_checkpoint(
    exported_tiny: Path, tiny_golden_checkpoint: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Comparing engines against a checkpoint they were not exported from is a usage error (exit 2)."""
    model_dir, clip_dir = tiny_golden_checkpoint
    code = parity_main(["--engines", str(exported_tiny), "--model", str(model_dir), "--clip", str(clip_dir)])
    assert code == 2 and "re-export or pass the right --model/--clip" in capsys.readouterr().err
