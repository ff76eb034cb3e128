"""manifest.json written by ``python -m export``: contents, and clear errors when it is missing or malformed.

``pytest tests/export/test_manifest.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine_format.manifest import FORMAT_VERSION, Manifest, ManifestError, checkpoint_fingerprint
from engine_format.prompt import DEFAULT_INSTRUCTION, streaming_prompt_ids
from engine_format.tokenizer import Tokenizer
from engine_format.vocab import ACTION_TOKENS, load_action_tokens, plan_action_token_ids
from export.graphs import GRAPH_NAMES, io_tables
from runtime.backends.base import BackendError


def test_manifest_contents(exported_tiny: Path, tiny_checkpoint: tuple[Path, Path], ref_model) -> None:  # noqa: ANN001
    """Geometry, RoPE, CLIP values, action tokens, prompt ids, fingerprint, libraries, graphs and the table location."""
    manifest = Manifest.load(exported_tiny)
    data = manifest.data
    model_dir, clip_dir = tiny_checkpoint
    assert data["format_version"] == FORMAT_VERSION and data["name"] == "tiny"
    assert data["random_weights"] is True and manifest.random_weights
    assert data["source"]["model_dir"] == str(model_dir) and data["source"]["clip_dir"] == str(clip_dir)
    assert data["source"]["sha256"] == checkpoint_fingerprint(model_dir, clip_dir)["sha256"]
    assert {"torch", "transformers", "onnx", "onnxruntime", "python"} <= set(data["libraries"])
    assert data["export"]["opset"] == 17 and data["export"]["scan_impl"] == "chunked"

    geo = data["model"]
    text = ref_model.config.text
    assert (geo["hidden_size"], geo["vocab_size"], geo["num_layers"], geo["num_key_value_heads"], geo["head_dim"]) == (
        128,
        151_669,
        2,
        2,
        32,
    )
    assert geo["rope_theta"] == 1e6 and geo["max_position_embeddings"] == text.max_position_embeddings
    assert manifest.model.num_visual_tokens == 2402 and geo["tokenizer_size"] == 151_669
    assert geo["image_token_id"] == 151_665 and geo["eos_token_ids"] == [151645, 151643]
    # RoPE inverse frequencies are the model's own buffer, bit for bit (re-basing depends on it)
    np.testing.assert_array_equal(manifest.model.rope.inv_freq, ref_model.lm.model.rotary_emb.inv_freq.numpy())
    assert manifest.clip_preprocess == ref_model.clip_preprocess

    ids = plan_action_token_ids(151_666)
    assert data["action_tokens"] == ids.as_dict() == manifest.action_token_ids.as_dict()
    assert load_action_tokens(manifest.tokenizer_dir) == ids
    tokenizer = Tokenizer.from_dir(manifest.tokenizer_dir)
    assert [tokenizer.token_to_id(t) for t in ACTION_TOKENS] == list(ids.ids)
    assert manifest.prompt_instruction == DEFAULT_INSTRUCTION
    assert manifest.prompt_ids == streaming_prompt_ids(tokenizer.encode, DEFAULT_INSTRUCTION)

    assert manifest.precisions == ["fp32", "fp16"]
    tables = io_tables(ref_model)
    for precision in manifest.precisions:
        for name in GRAPH_NAMES:
            graph = manifest.graph(precision, name)
            assert graph.path.is_file() and graph.path.with_suffix(".json").is_file()
            assert [t.name for t in graph.inputs] == tables[name].input_names
            entry = data["graphs"][precision][name]
            assert entry["bytes"] > 0 and entry["seconds"] >= 0 and entry["nodes"] > 0
        table = manifest.embedding_table(precision).open()
        assert table.shape == (151_669, 128) and table.dtype == np.dtype(
            "float32" if precision == "fp32" else "float16"
        )
        np.testing.assert_allclose(
            table[-3:], ref_model.lm.model.embed_tokens.weight[-3:].detach().numpy(), rtol=1e-3, atol=1e-7
        )
    assert data["graphs"]["fp16"]["decoder"]["fp16"]["fp16_nodes"]["Gemm"] == 1


def test_manifest_errors_name_the_problem(exported_tiny: Path, tmp_path: Path) -> None:
    """Missing file, other format version, missing key, unexported precision: each error says which."""
    with pytest.raises(ManifestError, match="does not exist"):
        Manifest.load(tmp_path)
    data = json.loads((exported_tiny / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ManifestError, match="format_version 99"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({k: v for k, v in data.items() if k != "action_tokens"}))
    with pytest.raises(ManifestError, match="missing key 'action_tokens'"):
        Manifest.load(tmp_path)
    model = {k: v for k, v in data["model"].items() if k != "rope_inv_freq"}
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "model": model}))
    with pytest.raises(ManifestError, match=r"missing keys \['rope_inv_freq'\]"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "model": {**data["model"], "num_layers": "2"}}))
    with pytest.raises(ManifestError, match=r"model\.num_layers = '2': must be int"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps({**data, "precisions": ["fp32"], "graphs": {"fp32": data["graphs"]["fp32"]}})
    )
    with pytest.raises(ManifestError, match=r"graphs\.fp32\.image_encoder: .* does not exist"):
        Manifest.load(tmp_path)  # the graph files are not in tmp_path


def test_onnxruntime_backend_reports_missing_precision_and_fallback(exported_tiny: Path, tmp_path: Path) -> None:
    """Asking for an unexported precision or a provider this build lacks fails with the reason (no silent fallback)."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    partial = tmp_path / "engines"
    shutil.copytree(exported_tiny, partial)
    data = json.loads((exported_tiny / "manifest.json").read_text())
    (partial / "manifest.json").write_text(json.dumps({**data, "precisions": ["fp32"]}))
    with pytest.raises(BackendError, match="precision 'fp16' was not exported"):
        OnnxRuntimeBackend(partial, precision="fp16")
    with pytest.raises(BackendError, match="CUDAExecutionProvider is not in this onnxruntime build"):
        OnnxRuntimeBackend(exported_tiny, precision="fp32", provider="CUDAExecutionProvider")
    with pytest.raises(BackendError, match=r"manifest\.json does not exist"):
        OnnxRuntimeBackend(tmp_path / "nowhere")


def test_manifest_records_the_checkpoint_generation_config(exported_tiny: Path, tmp_path: Path) -> None:
    """The tiny checkpoint's generation_config.json (stop ids, greedy) is the manifest's generation section, the
    ONNX Runtime backend exposes it, and a manifest written before the section existed reads as "no file"."""
    from engine_format.generation import CheckpointGeneration
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    manifest = Manifest.load(exported_tiny)
    assert manifest.data["generation"] == {
        "source": "generation_config.json", "eos_token_ids": [151645, 151643], "repetition_penalty": None,
        "max_new_tokens": None, "ignored": {}, "unsupported": {},
    }
    with OnnxRuntimeBackend(exported_tiny, precision="fp32") as backend:
        assert backend.generation == manifest.generation
    data = json.loads((exported_tiny / "manifest.json").read_text())
    older = {k: v for k, v in data.items() if k != "generation"}
    assert Manifest.from_data(tmp_path, older, check_files=False).generation == CheckpointGeneration()
    bad = {**data, "generation": {**data["generation"], "repetition_penalty": -1}}
    with pytest.raises(ManifestError, match=r"generation\.repetition_penalty = -1: must be a finite number > 0"):
        Manifest.from_data(tmp_path, bad, check_files=False)
