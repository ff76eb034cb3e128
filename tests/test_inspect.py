"""``python -m mobile_videogpt.inspect``: a readable report of what checkpoint directories hold, and the verdict.

``pytest tests/test_inspect.py -s`` prints one report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mobile_videogpt import inspect as inspect_cli
from mobile_videogpt.synthetic import write_synthetic_checkpoint
from mobile_videogpt.synthetic_layouts import LayoutOptions


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The layouts a user downloads: a BF16 model in 3 shards with Qwen-Instruct's generation config, and the full
    CLIPModel as pytorch_model.bin, both in an HF cache (random weights)."""
    options = LayoutOptions(dtype="BF16", shards=3, generation_config="qwen-instruct", clip_layout="clipmodel",
                            clip_format="bin", hf_cache=True)
    return write_synthetic_checkpoint("tiny", tmp_path_factory.mktemp("published"), with_tokenizer=False, layout=options)


def test_report_of_a_loadable_pair(published: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 0, and the report names the layout, dtypes, components, generation config, unused CLIP tensors, the
    vision-tower check and the random-weights marker."""
    code = inspect_cli.main([str(published[0]), str(published[1])])
    out = capsys.readouterr().out
    print(out)
    assert code == 0
    for line in (
        "layout           safetensors (sharded): 3 file(s)",
        "stored dtypes    BF16 x 82",
        "decoder (2 layers)",
        "VideoMamba (2 layers)",
        "(no lm_head.weight: tied to embed_tokens",
        "vocab_size 151666 (embedding rows 151666)",
        "export appends {'<next>': 151666, '<feedback>': 151667, '<correct>': 151668}",
        "generation_config.json: eos [151645, 151643], repetition_penalty 1.1, max_new_tokens unset",
        "sampling/beam fields ignored by greedy decoding: do_sample=true, temperature=0.7, top_k=20, top_p=0.8",
        "image_mm_vision_tower 'openai/clip-vit-base-patch16': a ViT-B/16 CLIP at 224 px: compatible",
        "layout           pytorch_model.bin: 1 file(s)",
        "config           full CLIPModel (text + vision): image 224, patch 16, width 768",
        "intentionally unused (25 tensors): text_model.* (20 tensors)",
        "RANDOM WEIGHTS",
    ):
        assert line in out, line
    assert out.count("verdict          LOADABLE") == 2


def test_unloadable_directory_gives_the_reasons_and_exit_2(
    tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unexpected tensor and an int32 tensor: exit 2, each reason named under NOT LOADABLE."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f in tiny_golden_checkpoint[0].iterdir():
        (model_dir / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(model_dir / "model.safetensors"))
    tensors["model.layers.0.extra"] = np.zeros(2, np.float16)
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.int32)
    save_file(tensors, str(model_dir / "model.safetensors"))
    code = inspect_cli.main([str(model_dir), str(tiny_golden_checkpoint[1])])
    out = capsys.readouterr().out
    assert code == 2
    assert "NOT LOADABLE:" in out
    assert "unexpected tensor(s) ['model.layers.0.extra']" in out
    assert "1 tensor(s) stored as I32 where floats (F32/F16/BF16) are expected: ['model.norm.weight']" in out


def test_synthetic_output_folder_is_split_and_a_missing_path_is_reported(
    tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder with model/ and clip/ reports both; a path that does not exist is NOT LOADABLE, naming it."""
    assert inspect_cli.main([str(tiny_golden_checkpoint[0].parent)]) == 0
    out = capsys.readouterr().out
    assert "Mobile-VideoGPT model directory:" in out and "CLIP directory:" in out
    assert inspect_cli.main([str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'} does not exist" in capsys.readouterr().out


def test_invalid_generation_config_makes_the_model_not_loadable(
    tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A repetition_penalty of 0 in generation_config.json is a reason, naming the file and field."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f in tiny_golden_checkpoint[0].iterdir():
        (model_dir / f.name).write_bytes(f.read_bytes())
    (model_dir / "generation_config.json").write_text(json.dumps({"repetition_penalty": 0}))
    assert inspect_cli.main([str(model_dir)]) == 2
    assert "generation_config.json: repetition_penalty = 0: must be a finite number > 0" in capsys.readouterr().out
