"""Synthetic checkpoints: official layout, strict loading, and bit-identity with the golden recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from mobile_videogpt import synthetic
from mobile_videogpt.checkpoint import load_model


def test_tiny_golden_preset_reproduces_golden_weights(tiny_golden_checkpoint: tuple[Path, Path], golden: Path) -> None:
    """The tiny-golden preset writes the golden checkpoint's exact tensors, names and dtypes (layout proof)."""
    for ours_dir, gold_dir in ((tiny_golden_checkpoint[0], golden / "checkpoint"), (tiny_golden_checkpoint[1], golden / "clip")):
        ours = load_file(str(ours_dir / "model.safetensors"))
        gold = load_file(str(gold_dir / "model.safetensors"))
        assert sorted(ours) == sorted(gold)
        for key in gold:
            assert ours[key].dtype == gold[key].dtype and (ours[key] == gold[key]).all(), key
    ours_cfg = json.loads((tiny_golden_checkpoint[0] / "config.json").read_text())
    gold_cfg = json.loads((golden / "checkpoint" / "config.json").read_text())
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "mm_projector_type", "mm_vision_select_layer"):
        assert ours_cfg[key] == gold_cfg[key]


def test_tiny_preset_has_tokenizer_marker_and_loads(tiny_checkpoint: tuple[Path, Path]) -> None:
    """The tiny preset carries the real tokenizer and the random-weights marker, and loads strictly."""
    from transformers import AutoTokenizer

    model_dir, clip_dir = tiny_checkpoint
    assert synthetic.is_synthetic(model_dir)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    assert tok("Hello world").input_ids == [9707, 1879]
    model = load_model(model_dir, clip_dir)
    assert model.vocab_size == 151666


def test_real_geometry_shapes_match_spec() -> None:
    """0.5B/1.5B presets have the spec's tensor shapes (section 3.3) without writing anything."""
    s05 = synthetic.checkpoint_shapes(synthetic.PRESETS["0.5b"])
    assert s05["model.embed_tokens.weight"] == (151666, 896)
    assert s05["model.layers.23.self_attn.k_proj.weight"] == (128, 896)
    assert s05["model.vision_tower.vision_encoder.layers.31.mixer.x_proj_b.weight"] == (68, 1152)
    s15 = synthetic.checkpoint_shapes(synthetic.PRESETS["1.5b"])
    assert s15["model.layers.27.mlp.down_proj.weight"] == (1536, 8960)
    assert s15["model.layers.0.self_attn.k_proj.weight"] == (256, 1536)
    n_vm = sum(v[0] * (v[1] if len(v) > 1 else 1) * (v[2] if len(v) > 2 else 1) * (v[3] if len(v) > 3 else 1) * (v[4] if len(v) > 4 else 1)
               for k, v in s05.items() if ".vision_encoder." in k)
    assert 73e6 < n_vm < 75e6  # VideoMamba-M ~73.9M params


def test_unknown_preset_is_rejected(tmp_path: Path) -> None:
    """A wrong preset name is an error listing the valid ones."""
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        synthetic.write_synthetic_checkpoint("huge", tmp_path)


def test_cli_writes_the_published_layouts(tmp_path: Path) -> None:
    """--shards/--dtype/--clip-layout/--clip-format/--hf-cache write an HF cache with a sharded F32 model and a
    full-CLIPModel pytorch_model.bin, and the marker records the layout."""
    code = synthetic.main(["--preset", "tiny-golden", "--out", str(tmp_path), "--shards", "2", "--dtype", "F32",
                           "--clip-layout", "clipmodel", "--clip-format", "bin", "--hf-cache"])
    assert code == 0
    model_repo = tmp_path / "hub" / "models--synthetic--Mobile-VideoGPT-tiny-golden"
    clip_repo = tmp_path / "hub" / "models--openai--clip-vit-base-patch16"
    model_snap = model_repo / "snapshots" / (model_repo / "refs" / "main").read_text()
    clip_snap = clip_repo / "snapshots" / (clip_repo / "refs" / "main").read_text()
    index = json.loads((model_snap / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert (model_snap / "model-00001-of-00002.safetensors").is_symlink()
    assert (clip_snap / "pytorch_model.bin").resolve().parent == clip_repo / "blobs"
    assert not (tmp_path / "model").exists()
    marker = json.loads((model_snap / synthetic.SYNTHETIC_MARKER).read_text())
    assert marker["layout"]["shards"] == 2 and marker["layout"]["clip_format"] == "bin"
    assert synthetic.is_synthetic(model_repo)


def test_bad_layout_options_are_rejected() -> None:
    """An unknown stored dtype or a shard count out of range is a ValueError naming the option."""
    from mobile_videogpt.synthetic_layouts import LayoutOptions

    with pytest.raises(ValueError, match=r"dtype 'I32': choose one of \['F16', 'BF16', 'F32'\]"):
        LayoutOptions(dtype="I32")
    with pytest.raises(ValueError, match=r"shards 0: must be an integer in \[1, 99\]"):
        LayoutOptions(shards=0)
