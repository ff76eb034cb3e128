"""Every exported fp32 graph against the PyTorch reference in ONNX Runtime, and the decoder's one KV contract.

``pytest tests/export/test_graphs.py``. The tiny model is exported once per session (``conftest.exported_tiny``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export import graphs
from export.onnx_export import embedding_table_location
from mobile_videogpt import frame_selection
from runtime.backends.base import select_top_k
from runtime.backends.kv import PingPongKV


def _close(name: str, ours: np.ndarray, ref: torch.Tensor | np.ndarray, atol: float = 1e-4, rtol: float = 1e-3) -> None:
    ref_np = ref.detach().float().numpy() if isinstance(ref, torch.Tensor) else ref
    err = float(np.abs(ours - ref_np).max())
    print(f"{name}: max abs err {err:.3g} (max |ref| {float(np.abs(ref_np).max()):.3g})")
    np.testing.assert_allclose(ours, ref_np, atol=atol, rtol=rtol, err_msg=name)


def test_image_encoder_matches_reference_for_any_frame_count(ort_fp32, ref_model, clip_inputs) -> None:  # noqa: ANN001
    """CLIP features and image-ETP tokens per frame, for F = 3 and 16 (traced with F = 2: the frame axis is dynamic)."""
    _, context = clip_inputs
    for frames in (3, 16):
        out = ort_fp32.encode_images(context[:frames].numpy())
        features = ref_model.encode_images(context[:frames])
        _close(f"clip_features F={frames}", out.clip_features, features)
        _close(f"image_tokens F={frames}", out.image_tokens, ref_model.project_images(features))


def test_frame_selector_matches_reference(ort_fp32, ref_model, clip_inputs) -> None:  # noqa: ANN001
    """Scores equal ``score_frames``; the host top-K equals ``select_frames``."""
    features = ref_model.encode_images(clip_inputs[1])
    scores, selected = ort_fp32.select_frames(features.numpy())
    ref_scores = ref_model.score_frames(features)
    _close("frame_scores", scores, ref_scores, atol=1e-3, rtol=1e-5)
    np.testing.assert_array_equal(selected, ref_model.select_frames(ref_scores).numpy())


def test_host_top_k_equals_reference_top_k() -> None:
    """``select_top_k`` (numpy) equals ``frame_selection.select_top_k`` (torch) on distinct scores, both directions."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.standard_normal((2, 8)).astype(np.float32)
        for largest in (True, False):
            ref = frame_selection.select_top_k(torch.from_numpy(scores), 4, largest).numpy()
            np.testing.assert_array_equal(select_top_k(scores, 4, largest), ref)


def test_video_encoder_matches_sequential_scan_reference(ort_fp32, ref_model, clip_inputs) -> None:  # noqa: ANN001
    """VideoMamba (exported with the chunked scan) + pooling + video ETP equals the sequential-scan reference."""
    video, _ = clip_inputs
    selected = video[[0, 2, 5, 7, 8, 9, 12, 15]]
    ref = ref_model.project_video(ref_model.pool_video(ref_model.encode_video(selected)))
    _close("video_tokens", ort_fp32.encode_video(selected.numpy()), ref, atol=1e-5)


def _prompt(ref_model, n: int, seed: int) -> np.ndarray:  # noqa: ANN001
    ids = np.random.default_rng(seed).integers(0, 151_000, n).tolist()
    return ref_model.embed_tokens(ids)[None].numpy()


def test_decoder_prefill_matches_reference(ort_fp32, ref_model) -> None:  # noqa: ANN001
    """First prefill (Past = 0) gives the reference's last-position logits and present KV."""
    embeds = _prompt(ref_model, 20, 0)
    state = ort_fp32.allocate_kv(64)
    logits = ort_fp32.decode([embeds[0]], state)
    ref_logits, ref_present = ref_model.decode_step(torch.from_numpy(embeds), None, torch.arange(20)[None])
    _close("prefill logits", logits, ref_logits[0], atol=1e-3)
    for i, (k, v) in enumerate(ref_present):
        _close(f"present.{i}.key", state.layer_views()[i][0], k, atol=1e-4)
        _close(f"present.{i}.value", state.layer_views()[i][1], v, atol=1e-4)


def test_cached_decode_equals_recompute(ort_fp32) -> None:  # noqa: ANN001
    """Prefill + cached single-token decode gives the logits of recomputing the whole sequence (S = 1, Past > 0)."""
    embeds = np.random.default_rng(1).standard_normal((25, 128)).astype(np.float32) * 0.3
    full = ort_fp32.decode([embeds], ort_fp32.allocate_kv(64))
    state = ort_fp32.allocate_kv(64)
    ort_fp32.decode([embeds[:24]], state)
    step = ort_fp32.decode([embeds[24:]], state)
    assert state.length == 25
    _close("cached decode vs recompute", step, full, atol=1e-4)


def test_appending_two_windows_equals_one_prefill(ort_fp32, ref_model) -> None:  # noqa: ANN001
    """Prefix, then two windows appended onto the past (S > 1, Past > 0) == one prefill of everything == reference."""
    prefix = _prompt(ref_model, 12, 2)
    rng = np.random.default_rng(3)
    w1, w2 = (rng.standard_normal((1, 30, 128)).astype(np.float32) * 0.5 for _ in range(2))
    everything = np.concatenate([prefix, w1, w2], axis=1)
    one = ort_fp32.decode([everything[0]], ort_fp32.allocate_kv(128))
    state = ort_fp32.allocate_kv(128)
    for part in (prefix, w1):
        ort_fp32.decode([part[0]], state)
    two = ort_fp32.decode([w2[0]], state)
    assert isinstance(state, PingPongKV) and state.length == 72 and state.positions.tolist() == list(range(72))
    _close("append vs one prefill", two, one, atol=1e-4)
    ref, _ = ref_model.decode_step(torch.from_numpy(everything))
    _close("append vs reference", two, ref[0], atol=1e-3)


def test_decoder_batch_axis_is_dynamic(exported_tiny: Path) -> None:
    """B = 2 rows of equal length give each row's B = 1 result (the graph was traced with B = 1)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported_tiny / "onnx/fp32/decoder.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    feeds = {
        "inputs_embeds": rng.standard_normal((2, 3, 128)).astype(np.float32),
        "position_ids": np.tile(np.arange(4, 7), (2, 1)),
    }
    for i in range(2):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = rng.standard_normal((2, 2, 4, 32)).astype(np.float32)
    both = session.run(None, feeds)
    for row in range(2):
        single = session.run(None, {k: v[row : row + 1] for k, v in feeds.items()})
        for a, b in zip(both, single):
            np.testing.assert_allclose(a[row : row + 1], b, atol=1e-5)


def test_embedding_table_is_stored_once_and_tied(exported_tiny: Path, ref_model) -> None:  # noqa: ANN001
    """The decoder holds the [V, H] table once, as the lm_head Gemm weight, equal to the extended embedding matrix."""
    model = onnx.load(str(exported_tiny / "onnx/fp32/decoder.onnx"), load_external_data=False)
    v, h = ref_model.vocab_size, ref_model.config.hidden_size
    big = [i.name for i in model.graph.initializer if sorted(i.dims) == sorted([v, h])]
    assert big == [graphs.EMBED_TABLE_NAME]
    gemm = [n for n in model.graph.node if graphs.EMBED_TABLE_NAME in n.input]
    assert len(gemm) == 1 and gemm[0].op_type == "Gemm"
    to_logits = [n for n in model.graph.node if n.output[0] == "logits"]  # the wrapper's .float(): a Cast to fp32
    assert to_logits[0].input[0] == gemm[0].output[0]
    loc = embedding_table_location(exported_tiny / "onnx/fp32/decoder.onnx")
    table = np.memmap(
        exported_tiny / "onnx/fp32" / loc["file"],
        dtype=loc["dtype"],
        mode="r",
        offset=loc["offset"],
        shape=tuple(loc["shape"]),
    )
    np.testing.assert_array_equal(table, ref_model.lm.model.embed_tokens.weight.detach().numpy())


def test_graph_io_follows_the_io_table(exported_tiny: Path, ref_model) -> None:  # noqa: ANN001
    """Every graph's I/O has the declared names, order, dtypes and symbolic dims; opset 17, no custom ops."""
    tables = graphs.io_tables(ref_model)
    elem = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64"}
    for name, table in tables.items():
        model = onnx.load(str(exported_tiny / f"onnx/fp32/{name}.onnx"), load_external_data=False)
        assert {(o.domain or "ai.onnx", o.version) for o in model.opset_import} == {("ai.onnx", 17)}
        assert all(n.domain in ("", "ai.onnx") for n in model.graph.node), f"{name} has non-standard ops"
        for specs, values in ((table.inputs, model.graph.input), (table.outputs, model.graph.output)):
            assert [s.name for s in specs] == [v.name for v in values]
            for spec, value in zip(specs, values):
                dims = tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)
                assert (elem[value.type.tensor_type.elem_type], dims) == (spec.dtype, spec.shape), f"{name}.{spec.name}"
    decoder = tables[graphs.DECODER]
    assert decoder.input_names[2:6] == [
        "past_key_values.0.key",
        "past_key_values.0.value",
        "past_key_values.1.key",
        "past_key_values.1.value",
    ]
    assert decoder.output_names[:3] == ["logits", "present.0.key", "present.0.value"]


def test_decoder_wrapper_rejects_wrong_past_count(ref_model) -> None:  # noqa: ANN001
    """The flat-KV wrapper names the expected count."""
    wrapper = graphs.build_graph(graphs.DECODER, ref_model)
    with pytest.raises(ValueError, match="expected 4 past tensors"):
        wrapper(torch.zeros(1, 1, 128), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 2, 0, 32))
    with pytest.raises(ValueError, match="unknown graph"):
        graphs.build_graph("vision", ref_model)
