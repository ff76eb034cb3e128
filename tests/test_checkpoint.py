"""Strict checkpoint loading: nothing is dropped, nothing unknown is accepted, shapes must match.

Pins the peer project's bug (VideoMamba's backward-direction weights silently dropped) and its cousins.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from mobile_videogpt.checkpoint import CheckpointError, load_model
from mobile_videogpt.config import ModelConfigError

BWD_KEY = "model.vision_tower.vision_encoder.layers.0.mixer.A_b_log"


def _copy_with(src: tuple[Path, Path], dst: Path, edit) -> Path:  # noqa: ANN001 - edit: dict -> None
    """Copies a checkpoint dir, applying ``edit`` to its tensors; returns the new model dir."""
    model_dir = dst / "model"
    shutil.copytree(src[0], model_dir)
    tensors = load_file(str(model_dir / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(model_dir / "model.safetensors"))
    return model_dir


def test_missing_tensor_is_named(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """Removing the backward-direction A_b_log fails and names it."""
    model_dir = _copy_with(tiny_golden_checkpoint, tmp_path, lambda t: t.pop(BWD_KEY))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['model\.vision_tower\.vision_encoder\.layers\.0\.mixer\.A_b_log'\]"):
        load_model(model_dir, tiny_golden_checkpoint[1])


def test_unknown_tensor_is_named(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """An extra tensor fails and is named."""
    def add(t: dict) -> None:
        t["model.layers.0.self_attn.extra_bias"] = np.zeros(4, np.float16)

    model_dir = _copy_with(tiny_golden_checkpoint, tmp_path, add)
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['model\.layers\.0\.self_attn\.extra_bias'\]"):
        load_model(model_dir, tiny_golden_checkpoint[1])


def test_shape_change_names_key_and_both_shapes(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """A tensor with another shape fails with the key and both shapes."""
    def reshape(t: dict) -> None:
        t["model.mm_projector.mlp.mlp.0.bias"] = np.zeros(127, np.float16)

    model_dir = _copy_with(tiny_golden_checkpoint, tmp_path, reshape)
    with pytest.raises(CheckpointError, match=r"model\.mm_projector\.mlp\.mlp\.0\.bias: checkpoint \(127,\) vs model \(128,\)"):
        load_model(model_dir, tiny_golden_checkpoint[1])


def test_clip_missing_tensor_is_named(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """The CLIP directory is held to the same rule."""
    clip_dir = tmp_path / "clip"
    shutil.copytree(tiny_golden_checkpoint[1], clip_dir)
    tensors = load_file(str(clip_dir / "model.safetensors"))
    tensors.pop("vision_model.encoder.layers.1.mlp.fc2.bias")
    save_file(tensors, str(clip_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"CLIP .*missing tensor\(s\) \['vision_model\.encoder\.layers\.1\.mlp\.fc2\.bias'\]"):
        load_model(tiny_golden_checkpoint[0], clip_dir)


def test_tied_lm_head_accepted_when_identical_rejected_when_different(
    tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    """lm_head.weight may be stored if it equals embed_tokens (tied); a different one is an error."""
    same = _copy_with(tiny_golden_checkpoint, tmp_path / "a", lambda t: t.__setitem__("lm_head.weight", t["model.embed_tokens.weight"].copy()))
    model = load_model(same, tiny_golden_checkpoint[1])
    assert model.lm.lm_head.weight.data_ptr() == model.lm.model.embed_tokens.weight.data_ptr()

    def different(t: dict) -> None:
        t["lm_head.weight"] = t["model.embed_tokens.weight"] + np.float16(1)

    other = _copy_with(tiny_golden_checkpoint, tmp_path / "b", different)
    with pytest.raises(CheckpointError, match="lm_head.weight is stored but differs"):
        load_model(other, tiny_golden_checkpoint[1])


def test_missing_safetensors_and_bad_config(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """A directory without weights, or with a wrong model_type, fails with a message saying so."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"no model.safetensors, model.safetensors.index.json, pytorch_model.bin"):
        load_model(empty, tiny_golden_checkpoint[1])
    bad = tmp_path / "bad"
    shutil.copytree(tiny_golden_checkpoint[0], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "llava"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelConfigError, match="model_type is 'llava'"):
        load_model(bad, tiny_golden_checkpoint[1])


def test_backward_direction_weights_change_video_tokens(golden: Path, tmp_path: Path) -> None:
    """Perturbing a backward-direction weight (A_b_log + 0.1) moves the VideoMamba tokens (golden: by ~0.3)."""
    base = load_model(golden / "checkpoint", golden / "clip")
    frames = np.load(golden / "frames.npy")
    video_px, context_px = base.preprocess(frames)
    clip = video_px[:8]
    ref = base.encode_video(clip)

    def bump(t: dict) -> None:
        for k in list(t):
            if k.endswith("mixer.A_b_log"):
                t[k] = (t[k].astype(np.float32) + 0.1).astype(np.float16)

    model_dir = _copy_with((golden / "checkpoint", golden / "clip"), tmp_path, bump)
    changed = load_model(model_dir, golden / "clip").encode_video(clip)
    delta = float((changed - ref).abs().max())
    assert delta > 1e-2, f"backward-direction weights had no effect (max change {delta})"
    # And the forward direction alone does not explain the output: zeroing the backward branch changes it too.
    with torch.no_grad():
        for layer in base.lm.model.vision_tower.vision_encoder.layers:
            layer.mixer.x_proj_b.weight.zero_()
            layer.mixer.conv1d_b.bias.zero_()
    assert float((base.encode_video(clip) - ref).abs().max()) > 1e-2


# ------------------------------------------------------------------------------------------------ file-level errors
def _copy(src: tuple[Path, Path], dst: Path) -> Path:
    model_dir = dst / "model"
    shutil.copytree(src[0], model_dir)
    return model_dir


def test_missing_config_json_is_named(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """No config.json: a ModelConfigError naming the file."""
    model_dir = _copy(tiny_golden_checkpoint, tmp_path)
    (model_dir / "config.json").unlink()
    with pytest.raises(ModelConfigError, match=rf"{model_dir / 'config.json'} does not exist"):
        load_model(model_dir, tiny_golden_checkpoint[1])


def test_corrupt_config_json_is_named(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """config.json that is not JSON: the error names the file (a bare JSONDecodeError did not)."""
    model_dir = _copy(tiny_golden_checkpoint, tmp_path)
    (model_dir / "config.json").write_text('{"model_type": "MobileVideoGPT_qwen",')
    with pytest.raises(ModelConfigError, match=rf"{model_dir / 'config.json'} is not valid JSON"):
        load_model(model_dir, tiny_golden_checkpoint[1])


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_safetensors_is_named(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path, damage: str) -> None:
    """A safetensors file cut to half its bytes, or with a garbage header, is one CheckpointError naming it."""
    model_dir = _copy(tiny_golden_checkpoint, tmp_path)
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage" + data[20:])
    with pytest.raises(CheckpointError, match=rf"{path} is not a readable safetensors file \(") as info:
        load_model(model_dir, tiny_golden_checkpoint[1])
    assert "\n" not in str(info.value)


def test_missing_shard_is_named(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """An index naming a shard file that is not there (or an unknown file) fails naming the index and the file."""
    model_dir = _copy(tiny_golden_checkpoint, tmp_path)
    keys = list(load_file(str(model_dir / "model.safetensors")))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in keys}
    weight_map[keys[0]] = "model-00002-of-00002.safetensors"
    (model_dir / "model.safetensors").rename(model_dir / "model-00001-of-00002.safetensors")
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=r"index\.json names shard\(s\) that do not exist: \['model-00002-of-00002"):
        load_model(model_dir, tiny_golden_checkpoint[1])


def test_pytorch_bin_that_is_not_weights_only_is_refused(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """A pytorch_model.bin holding arbitrary pickled objects is refused, never executed, naming the file."""
    clip_dir = tmp_path / "clip"
    shutil.copytree(tiny_golden_checkpoint[1], clip_dir)
    (clip_dir / "model.safetensors").unlink()
    with (clip_dir / "pytorch_model.bin").open("wb") as f:
        pickle.dump({"vision_model.x": print}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin is not a weights-only PyTorch checkpoint"):
        load_model(tiny_golden_checkpoint[0], clip_dir)
    (clip_dir / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin is corrupt or truncated"):
        load_model(tiny_golden_checkpoint[0], clip_dir)


@pytest.mark.parametrize(("dtype", "name"), [(np.int32, "I32"), (np.bool_, "BOOL"), (np.int8, "I8")])
def test_integer_bool_and_quantized_dtypes_are_refused_by_name(
    tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path, dtype: type, name: str
) -> None:
    """Float weights stored as int32 (issue 9: it loaded and produced garbage), bool or int8 fail, naming the key."""
    def cast(t: dict) -> None:
        t["model.norm.weight"] = t["model.norm.weight"].astype(dtype)

    model_dir = _copy_with(tiny_golden_checkpoint, tmp_path, cast)
    with pytest.raises(CheckpointError, match=rf"1 tensor\(s\) stored as {name} where floats .* \['model\.norm\.weight'\]"):
        load_model(model_dir, tiny_golden_checkpoint[1])


def test_backend_maps_the_new_loader_errors(tiny_golden_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """The pytorch backend turns a corrupt checkpoint into a BackendError naming the file."""
    from runtime.backends import BackendError
    from runtime.backends.torch_backend import TorchBackend

    model_dir = _copy(tiny_golden_checkpoint, tmp_path)
    (model_dir / "model.safetensors").write_bytes(b"")
    with pytest.raises(BackendError, match=r"model\.safetensors is not a readable safetensors file"):
        TorchBackend(model_dir, tiny_golden_checkpoint[1])
