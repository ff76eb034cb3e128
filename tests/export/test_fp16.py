"""fp16 variants: the islands stay fp32, the weight products are fp16, and the graphs run in ORT CPU within fp16 gates.

``pytest tests/export/test_fp16.py -s``. ONNX Runtime's CPU provider computes the fp16 nodes in fp32 (it drops the
cast pairs), so the numeric tests here exercise the fp16 weights and the fp16 KV cache; fp16 arithmetic is measured
by ``validation/gpu_numerics.py`` (docs/export.md). Outputs are compared with ``validation.compare.compare`` under
the fp16 gates of ``validation/tolerances.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from export.fp16 import Fp16ConversionError, convert_to_fp16, node_compute_types
from validation.compare import compare, render_table
from validation.tolerances import tolerance_for

FP16, FP32 = TensorProto.FLOAT16, TensorProto.FLOAT
ISLAND_OPS = ("Softmax", "ReduceMean", "Pow", "Sqrt", "Sin", "Cos", "Exp", "LayerNormalization", "Softplus", "Sigmoid")


def _load(root: Path, precision: str, graph: str) -> onnx.ModelProto:
    return onnx.load(str(root / "onnx" / precision / f"{graph}.onnx"), load_external_data=False)


@pytest.mark.parametrize("graph", ["image_encoder", "video_encoder", "decoder"])
def test_islands_are_fp32_and_weight_products_fp16(exported_tiny: Path, graph: str) -> None:
    """Norms, softmax, RoPE sin/cos, exp (scan decays), activations compute in fp32; weight MatMul/Gemm/Conv in fp16."""
    model = _load(exported_tiny, "fp16", graph)
    compute = node_compute_types(model)
    inits = {i.name: i for i in model.graph.initializer}
    islands = [n for n in model.graph.node if n.op_type in ISLAND_OPS]
    assert islands, f"{graph} has none of the island ops"
    wrong = [f"{n.op_type} {n.name}" for n in islands if compute.get(n.name) != FP32]
    assert not wrong, f"fp16 island ops in {graph}: {wrong[:5]}"
    products = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and n.input[1] in inits]
    assert products and all(inits[n.input[1]].data_type == FP16 and compute[n.name] == FP16 for n in products)
    activation_products = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in inits]
    assert all(compute.get(n.name) == FP32 for n in activation_products), (
        "QK^T / attention-V / scan products must be fp32"
    )


def test_decoder_fp16_io(exported_tiny: Path) -> None:
    """KV cache in fp16, inputs_embeds and logits in fp32; the table is fp16 and still stored once."""
    model = _load(exported_tiny, "fp16", "decoder")
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)}
    assert types["inputs_embeds"] == FP32 and types["logits"] == FP32 and types["position_ids"] == TensorProto.INT64
    assert {types[n] for n in types if n.startswith(("past_key_values.", "present."))} == {FP16}
    tables = [i for i in model.graph.initializer if i.name == "embed_tokens.weight"]
    assert len(tables) == 1 and tables[0].data_type == FP16


def test_fp16_graphs_within_fp16_tolerance(ort_fp16, ref_model, clip_inputs) -> None:  # noqa: ANN001
    """Image, video and frame-selector stages of the fp16 graphs pass the fp16 gates of validation/tolerances.py."""
    tol = tolerance_for("fp16")
    video, context = clip_inputs
    features = ref_model.encode_images(context)
    out = ort_fp16.encode_images(context.numpy())
    selected = video[[1, 2, 4, 6, 8, 11, 13, 14]]
    video_ref = ref_model.project_video(ref_model.pool_video(ref_model.encode_video(selected)))
    results = [
        compare("image_encoder", "clip_features", features.numpy(), out.clip_features, tol.vision),
        compare("image_encoder", "image_tokens", ref_model.project_images(features).numpy(), out.image_tokens,
                tol.vision),
        compare("video_encoder", "video_tokens", video_ref.numpy(), ort_fp16.encode_video(selected.numpy()),
                tol.vision),
    ]
    print(render_table(results))
    assert all(r.passed for r in results), [r.note for r in results if not r.passed]
    _, chosen = ort_fp16.select_frames(features.numpy())
    np.testing.assert_array_equal(chosen, ref_model.select_frames(ref_model.score_frames(features)).numpy())


def test_fp16_decoder_agrees_with_reference(ort_fp16, ref_model) -> None:  # noqa: ANN001
    """Prefill then 8 cached steps with the fp16 KV cache: top-1 agreement on every step, logits close."""
    ids = np.random.default_rng(5).integers(0, 151_000, 30).tolist()
    kv = ort_fp16.allocate_kv(40)
    got = [ort_fp16.decode([ids], kv)]
    assert kv.layer_views()[0][0].dtype == np.float16
    cache = ref_model.allocate_cache(40)
    want = [ref_model.forward_cached(ref_model.embed_tokens(ids)[None], cache)[0]]
    for _ in range(8):
        token = int(torch.argmax(want[-1]))  # teacher forcing on the reference's greedy tokens
        want.append(ref_model.forward_cached(ref_model.embed_tokens([token])[None], cache)[0])
        got.append(ort_fp16.decode([[token]], kv))
    row = compare("decoder", "logits", torch.stack(want).numpy(), np.stack(got), tolerance_for("fp16").logits,
                  top1=True)
    print(render_table([row]))
    assert row.passed and row.top1_agreement == 1.0 and row.max_abs_err < 0.1, row.note


def _toy_model() -> onnx.ModelProto:
    """x[2,4] -> MatMul(W) -> Add(b) -> Softmax -> y, plus a KV-like Concat output."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="mm"),
        helper.make_node("Add", ["xw", "b"], ["xwb"], name="bias"),
        helper.make_node("Softmax", ["xwb"], ["y"], name="softmax", axis=-1),
        helper.make_node("Concat", ["past", "xwb"], ["present"], name="cat", axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("x", FP32, [2, 4]), helper.make_tensor_value_info("past", FP32, ["p", 3])],
        [helper.make_tensor_value_info("y", FP32, [2, 3]), helper.make_tensor_value_info("present", FP32, ["t", 3])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_converter_policy_on_a_toy_graph() -> None:
    """MatMul + bias Add in fp16, Softmax in fp32, the KV Concat in fp16 with fp16 I/O; values match fp32 closely."""
    src = _toy_model()
    out, report = convert_to_fp16(src, fp16_io=["past", "present"])
    onnx.checker.check_model(out)
    compute = node_compute_types(out)
    assert (compute["mm"], compute["bias"], compute["softmax"], compute["cat"]) == (FP16, FP16, FP32, FP16)
    assert report.fp16_nodes == {"Add": 1, "Concat": 1, "MatMul": 1} and report.fp16_initializers == 2
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    past = np.zeros((1, 3), dtype=np.float32)
    y32, p32 = ort.InferenceSession(src.SerializeToString()).run(None, {"x": x, "past": past})
    y16, p16 = ort.InferenceSession(out.SerializeToString()).run(None, {"x": x, "past": past.astype(np.float16)})
    assert y16.dtype == np.float32 and p16.dtype == np.float16 and p16.shape == (3, 3)
    np.testing.assert_allclose(y16, y32, atol=2e-3)
    np.testing.assert_allclose(p16.astype(np.float32), p32, atol=2e-2)


def test_converter_rejects_unknown_fp16_io() -> None:
    """An fp16_io name that is not a float graph input/output is an error that names it."""
    with pytest.raises(Fp16ConversionError, match=r"\['nope'\]"):
        convert_to_fp16(_toy_model(), fp16_io=["nope"])
