"""The torch-free engine format: tokenizer, prompt ids, preprocessing, records and their validation.

``pytest tests/engine_format``. The package is what the runtime deploys with; these tests pin that it agrees with
the reference stack it replaces (Hugging Face tokenizer, the reference package's tensors) and that bad values fail
by name.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from engine_format import FormatError
from engine_format.geometry import GraphGeometry
from engine_format.io import io_tables
from engine_format.preprocess import ClipPreprocessConfig, clip_branch, video_branch
from engine_format.prompt import streaming_prompt_ids
from engine_format.tokenizer import Tokenizer
from engine_format.vocab import ActionTokenIds
from mobile_videogpt.facts import geometry
from mobile_videogpt.prompt import streaming_prompt_ids as hf_streaming_prompt_ids
from runtime.sources.scene import SquatScene

TEXTS = [
    "<|im_start|>system\nYou are a coach.<|im_end|>\n",
    "Knees out! ünïcödé 日本語 🏋️ spaces  and\ttabs",
    "<|im_end|>\n<|im_start|>assistant\n",
]


def test_the_package_imports_without_torch() -> None:
    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, n, p=None, t=None):\n"
        "        if n.split('.')[0] in ('torch', 'transformers', 'onnx'): raise ImportError(n)\n"
        "sys.meta_path.insert(0, B())\n"
        "import engine_format.manifest, engine_format.tokenizer, engine_format.preprocess, engine_format.io\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_tokenizer_encodes_and_decodes_like_the_hf_tokenizer(tiny_checkpoint: tuple[Path, Path]) -> None:
    model_dir = tiny_checkpoint[0]
    hf = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    ours = Tokenizer.from_dir(model_dir)
    assert len(ours) == len(hf)
    for text in TEXTS:
        assert ours.encode(text) == hf(text, add_special_tokens=False).input_ids
    assert hf_streaming_prompt_ids(hf) == streaming_prompt_ids(ours.encode)
    rng = np.random.default_rng(0)
    for _ in range(100):
        ids = [int(x) for x in rng.integers(0, len(hf), rng.integers(1, 30))]
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)


def test_text_stream_never_emits_a_partial_character(tiny_checkpoint: tuple[Path, Path]) -> None:
    """Byte-level BPE splits multi-byte characters across tokens; the stream holds them back until complete."""
    tok = Tokenizer.from_dir(tiny_checkpoint[0])
    ids = tok.encode("日本語 🏋️ ok")
    stream = tok.text_stream()
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) == stream.text == tok.decode(ids)
    assert not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p == "") >= 1, "a multi-byte character spans tokens in this text"


def test_tokenizer_errors_name_the_file(tmp_path: Path, tiny_checkpoint: tuple[Path, Path]) -> None:
    with pytest.raises(FormatError, match="no tokenizer.json in"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(FormatError, match="is not a valid tokenizer file"):
        Tokenizer.from_dir(tmp_path)
    tok = Tokenizer.from_dir(tiny_checkpoint[0])
    with pytest.raises(FormatError, match=r"generation.stop_tokens\[0\] = 'no stop': is not a single token"):
        tok.single_token_id("no stop", "generation.stop_tokens[0]")
    with pytest.raises(FormatError, match="<next> has id None, the engines expect 5"):
        tok.check_action_tokens(ActionTokenIds(5, 6, 7))


def test_preprocessing_is_the_reference_package_s(tiny_model) -> None:
    """The reference model's tensors are these numpy functions' output, bit for bit (golden tests pin both)."""
    frames = SquatScene(size=(180, 320)).frames(3)
    video, context = tiny_model.preprocess(frames)
    np.testing.assert_array_equal(video.numpy(), video_branch(frames))
    np.testing.assert_array_equal(context.numpy(), clip_branch(frames, tiny_model.clip_preprocess))
    assert isinstance(video, torch.Tensor)


def test_clip_preprocessing_values_round_trip_and_refuse_unsupported_pipelines() -> None:
    cfg = ClipPreprocessConfig.from_hf({"size": {"shortest_edge": 256}, "crop_size": {"height": 224}}, "x")
    assert cfg.shortest_edge == 256 and cfg.crop_size == 224
    assert ClipPreprocessConfig.from_dict(cfg.as_dict(), "x") == cfg
    with pytest.raises(FormatError, match="do_center_crop is False"):
        ClipPreprocessConfig.from_hf({"do_center_crop": False}, "x")
    with pytest.raises(FormatError, match=r"expected keys .* got \['mean'\]"):
        ClipPreprocessConfig.from_dict({"mean": [0, 0, 0]}, "x")
    with pytest.raises(FormatError, match="crop_size <= shortest_edge"):
        ClipPreprocessConfig(shortest_edge=200, crop_size=224)


def test_io_tables_follow_the_geometry(tiny_model) -> None:
    geo = geometry(tiny_model)
    tables = io_tables(geo)
    assert tables["video_encoder"].inputs[0].shape == (8, 3, 224, 224)
    assert tables["decoder"].outputs[0].shape == ("batch", geo.vocab_size)
    assert len(tables["decoder"].inputs) == 2 + 2 * geo.num_layers
    fp16_in, _ = tables["decoder"].with_precision("fp16")
    assert {s.dtype for s in fp16_in[2:]} == {"float16"} and fp16_in[0].dtype == "float32"
    assert geo.num_visual_tokens == 2402
    with pytest.raises(FormatError, match="num_frames 16 must split into chunks of 5"):
        replace(geo, chunk_size=5)
    assert isinstance(geo, GraphGeometry)
