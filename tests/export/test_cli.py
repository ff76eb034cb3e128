"""``python -m export`` refuses bad checkpoints clearly (the parity CLI's tests are in ``tests/validation``).

``pytest tests/export/test_cli.py -s``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from export.__main__ import main as export_main

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
