"""Checkpoint directories as published: full-CLIPModel CLIP (safetensors and .bin), sharded BF16 model with a
generation config, Hugging Face cache paths, and the ``image_mm_vision_tower`` check. Loading stays strict.

``pytest tests/test_checkpoint_layouts.py``. Every layout is written by ``mobile_videogpt.synthetic`` (random weights).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mobile_videogpt.checkpoint import CheckpointError, load_model
from mobile_videogpt.checkpoint_files import resolve_checkpoint_dir
from mobile_videogpt.config import ModelConfigError
from mobile_videogpt.synthetic import write_synthetic_checkpoint
from mobile_videogpt.synthetic_layouts import LayoutOptions


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The default layout of the tiny-golden preset (vision-only CLIP, F16): the yardstick."""
    return write_synthetic_checkpoint("tiny-golden", tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def plain_model(plain: tuple[Path, Path]):  # noqa: ANN201 - MobileVideoGPT
    """The yardstick loaded."""
    return load_model(*plain)


def _write(tmp_path: Path, preset: str = "tiny-golden", **options: object) -> tuple[Path, Path]:
    return write_synthetic_checkpoint(preset, tmp_path, with_tokenizer=False, layout=LayoutOptions(**options))


def _unused_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "intentionally unused" in r.getMessage()]


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_openai_clipmodel_layout_loads_the_same_vision_tower(
    fmt: str, plain: tuple[Path, Path], plain_model, tmp_path: Path, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    """A full CLIPModel directory (text tower, projections, logit_scale, position_ids; model.safetensors or
    pytorch_model.bin) loads the vision weights of the vision-only layout, and one log line names what is unused."""
    _, clip_dir = _write(tmp_path, clip_layout="clipmodel", clip_format=fmt)
    assert (clip_dir / ("pytorch_model.bin" if fmt == "bin" else "model.safetensors")).is_file()
    assert json.loads((clip_dir / "config.json").read_text())["architectures"] == ["CLIPModel"]
    with caplog.at_level(logging.INFO, logger="mobile_videogpt.checkpoint"):
        model = load_model(plain[0], clip_dir)
    for (key, ours), theirs in zip(model.clip.state_dict().items(), plain_model.clip.state_dict().values()):
        assert torch.equal(ours, theirs), key
    lines = _unused_lines(caplog)
    assert len(lines) == 1, lines
    for name in ("text_model.* (20 tensors)", "logit_scale", "text_projection.weight", "visual_projection.weight",
                 "vision_model.embeddings.position_ids", "text_model.embeddings.position_ids"):
        assert name in lines[0]


def test_unknown_tensor_in_a_clipmodel_directory_still_fails_by_name(plain: tuple[Path, Path], tmp_path: Path) -> None:
    """Only the listed text-tower tensors are set aside: anything else unexpected fails the load, named."""
    _, clip_dir = _write(tmp_path, clip_layout="clipmodel")
    tensors = load_file(str(clip_dir / "model.safetensors"))
    tensors["vision_model.adapter.weight"] = torch.zeros(4)
    save_file(tensors, str(clip_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['vision_model\.adapter\.weight'\]"):
        load_model(plain[0], clip_dir)


def test_text_tower_tensors_in_a_vision_only_directory_fail(plain: tuple[Path, Path], tmp_path: Path) -> None:
    """A CLIPVisionModel config promises no text tower: text_model.* tensors there are unexpected, by name."""
    _, clip_dir = _write(tmp_path, clip_layout="clipmodel")
    full = json.loads((clip_dir / "config.json").read_text())
    (clip_dir / "config.json").write_text(json.dumps({**full["vision_config"], "architectures": ["CLIPVisionModel"]}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['logit_scale', 'text_model\.embeddings"):
        load_model(plain[0], clip_dir)


def test_sharded_bf16_model_with_generation_config_loads(tmp_path: Path) -> None:
    """A BF16 model in three shards with an index and Qwen-Instruct's generation_config.json loads strictly; the
    weights are the BF16 values upcast exactly."""
    model_dir, clip_dir = _write(tmp_path, preset="tiny", dtype="BF16", shards=3, generation_config="qwen-instruct")
    shards = sorted(model_dir.glob("model-*-of-00003.safetensors"))
    assert len(shards) == 3 and (model_dir / "model.safetensors.index.json").is_file()
    assert json.loads((model_dir / "generation_config.json").read_text())["repetition_penalty"] == 1.1
    with safe_open(str(shards[0]), framework="pt") as f:
        key = next(iter(f.keys()))
        stored = f.get_tensor(key)
    assert stored.dtype == torch.bfloat16
    model = load_model(model_dir, clip_dir)
    assert torch.equal(model.lm.state_dict()[key], stored.float())


def test_a_shard_index_naming_a_tensor_the_shard_lacks_is_refused(tmp_path: Path) -> None:
    """An index whose weight_map puts a tensor in the wrong shard fails, naming the index and the tensor."""
    model_dir, clip_dir = _write(tmp_path, shards=2)
    index = model_dir / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    key = "model.norm.weight"
    files = sorted(set(data["weight_map"].values()))
    data["weight_map"][key] = next(f for f in files if f != data["weight_map"][key])
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"index\.json: tensor\(s\) not in the shard it names: \['model\.norm\.weight'\]"):
        load_model(model_dir, clip_dir)


def test_hf_cache_root_resolves_refs_main_and_snapshot_paths_work(plain_model, tmp_path: Path) -> None:  # noqa: ANN001
    """``models--org--name`` roots resolve refs/main to the snapshot (files are blob symlinks); snapshot paths load."""
    model_root, clip_root = _write(tmp_path, hf_cache=True, clip_layout="clipmodel")
    assert model_root.name == "models--synthetic--Mobile-VideoGPT-tiny-golden"
    assert clip_root.name == "models--openai--clip-vit-base-patch16"
    snapshot = resolve_checkpoint_dir(clip_root)
    assert snapshot.parent.name == "snapshots" and snapshot.name == (clip_root / "refs" / "main").read_text()
    assert os.path.islink(snapshot / "model.safetensors")
    by_root = load_model(model_root, clip_root)
    by_snapshot = load_model(resolve_checkpoint_dir(model_root), snapshot)
    for a, b, c in zip(by_root.lm.state_dict().values(), by_snapshot.lm.state_dict().values(),
                       plain_model.lm.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_hf_cache_root_without_refs_main_and_two_snapshots_is_refused(tmp_path: Path) -> None:
    """With no refs/main and several snapshots the root is ambiguous: the error lists them."""
    model_root, _ = _write(tmp_path, hf_cache=True)
    snapshot = resolve_checkpoint_dir(model_root)
    shutil.copytree(snapshot, snapshot.parent / ("0" * 40), symlinks=True)
    (model_root / "refs" / "main").unlink()
    with pytest.raises(CheckpointError, match=r"without refs/main and with 2 snapshots"):
        resolve_checkpoint_dir(model_root)


def test_vision_tower_name_must_be_a_vit_b16(plain: tuple[Path, Path], tmp_path: Path) -> None:
    """image_mm_vision_tower naming a ViT-L/14 is refused by name (audit A9)."""
    model_dir = tmp_path / "model"
    shutil.copytree(plain[0], model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**cfg, "image_mm_vision_tower": "openai/clip-vit-large-patch14"}))
    with pytest.raises(ModelConfigError, match=r"image_mm_vision_tower is 'openai/clip-vit-large-patch14', not a ViT-B/16"):
        load_model(model_dir, plain[1])


def test_clip_directory_other_than_the_named_tower_is_a_warning(
    plain: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CLIP directory whose identity differs from image_mm_vision_tower loads (geometry fits) with a warning."""
    _, clip_dir = _write(tmp_path, clip_layout="clipmodel")
    cfg = json.loads((clip_dir / "config.json").read_text())
    (clip_dir / "config.json").write_text(json.dumps({**cfg, "_name_or_path": "laion/CLIP-ViT-B-16-laion2B"}))
    with caplog.at_level(logging.WARNING, logger="mobile_videogpt.checkpoint"):
        load_model(plain[0], clip_dir)
    assert any("the CLIP directory is 'laion/CLIP-ViT-B-16-laion2B' but config.json names "
               "'openai/clip-vit-base-patch16'" in r.getMessage() for r in caplog.records)
