"""The onnxruntime backend: IO-bound in-place decoding equals the plain per-call path, and takes the manifest's facts.

``pytest tests/runtime/test_onnxruntime_backend.py -s``. "Plain" is the previous implementation's path: every layer's
past fed as numpy to ``session.run``, a freshly allocated ``present`` returned and fed back on the next call.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from engine_format.io import past_key_name, past_value_name, present_key_name, present_value_name
from runtime.backends import BackendError, create_backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.generation import GreedyState, greedy_decode


def _plain_decode(backend: OnnxRuntimeBackend, embeds: np.ndarray, past: list, start: int) -> tuple[np.ndarray, list]:
    """One decoder call the pre-IO-binding way: numpy past in, fresh present out."""
    feeds = {"inputs_embeds": embeds, "position_ids": np.arange(start, start + embeds.shape[1], dtype=np.int64)[None]}
    for i, (k, v) in enumerate(past):
        feeds[past_key_name(i)], feeds[past_value_name(i)] = k, v
    out = backend.engines["decoder"].infer(feeds)
    layers = backend.facts.num_layers
    return out["logits"][0], [(out[present_key_name(i)], out[present_value_name(i)]) for i in range(layers)]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_io_binding_decode_equals_the_plain_path(exported_tiny: Path, precision: str) -> None:
    """Prefill, a 2402-row window append and 8 greedy steps: same logits (1e-5 relative) and the same greedy ids."""
    backend = create_backend("onnxruntime", engines_dir=exported_tiny, precision=precision, threads=2)
    f = backend.facts
    rng = np.random.default_rng(0)
    system = list(range(100, 150))
    visual = rng.normal(0, 0.02, size=(f.num_visual_tokens, f.hidden_size)).astype(np.float32)
    kv = backend.allocate_kv(4000)
    backend.decode([system], kv)
    logits = backend.decode([[7, 8], visual, [9]], kv)
    state = GreedyState()
    ids = list(greedy_decode(logits, lambda t: backend.decode([list(t)], kv), 8, set(), state))

    dtype = np.dtype(backend.engines["decoder"].inputs[2].dtype)
    empty = np.zeros((1, f.num_key_value_heads, 0, f.head_dim), dtype=dtype)
    _, past = _plain_decode(backend, backend.embed_tokens(system)[None], [(empty, empty)] * f.num_layers, 0)
    window = np.concatenate([backend.embed_tokens([7, 8]), visual, backend.embed_tokens([9])])[None]
    ref, past = _plain_decode(backend, window, past, len(system))
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    ref_ids, position = [], len(system) + window.shape[1]
    for _ in range(8):
        ref_ids.append(int(np.argmax(ref)))
        ref, past = _plain_decode(backend, backend.embed_tokens([ref_ids[-1]])[None], past, position)
        position += 1
    print(f"{precision}: greedy ids {ids}")
    assert ids == ref_ids
    for (k, v), (rk, rv) in zip(kv.layer_views(), past):  # the cache holds what the plain path returned
        np.testing.assert_array_equal(k, rk[:, :, : kv.length])
        np.testing.assert_array_equal(v, rv[:, :, : kv.length])
    assert kv.length == position - 1  # the last greedy id was never fed


def test_decoding_allocates_nothing_that_grows_with_the_context(exported_tiny: Path) -> None:
    """Python/numpy bytes allocated by one decode step are the same at 300 and 3300 cached positions (no KV copy):
    about one logits row (the returned copy), however long the context."""
    backend = create_backend("onnxruntime", engines_dir=exported_tiny, threads=2)
    f = backend.facts
    kv = backend.allocate_kv(4000)
    backend.decode([list(range(300))], kv)

    def step_bytes() -> int:
        backend.decode([[5]], kv)  # warm
        tracemalloc.start()
        tracemalloc.reset_peak()
        backend.decode([[5]], kv)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak

    short = step_bytes()
    backend.decode([np.zeros((3000, f.hidden_size), dtype=np.float32)], kv)
    long = step_bytes()
    kv_bytes = kv.nbytes
    print(f"peak Python/numpy bytes per decode step: {short} at 302 positions, {long} at {kv.length - 1}; "
          f"KV {kv_bytes} bytes")
    assert abs(long - short) < 16_384
    assert long < 2 * f.vocab_size * 4  # the returned logits copy, not the cache


def test_clip_preprocessing_comes_from_the_manifest(exported_tiny: Path, tmp_path: Path) -> None:
    """A checkpoint with non-default CLIP values is preprocessed with them, not with the defaults."""
    engines = tmp_path / "tiny"
    shutil.copytree(exported_tiny, engines)
    manifest = json.loads((engines / "manifest.json").read_text())
    manifest["clip_preprocess"]["mean"] = [0.5, 0.5, 0.5]
    (engines / "manifest.json").write_text(json.dumps(manifest))
    backend = create_backend("onnxruntime", engines_dir=engines)
    assert backend.clip_preprocess.mean == (0.5, 0.5, 0.5)


def test_options_are_honoured_or_refused_by_name(exported_tiny: Path, tmp_path: Path) -> None:
    fp16 = create_backend("onnxruntime", engines_dir=exported_tiny, precision="fp16")
    assert fp16.precision == "fp16" and fp16.allocate_kv(8).itemsize == 2
    with pytest.raises(BackendError, match="device 'gpu' must be one of"):
        create_backend("onnxruntime", engines_dir=exported_tiny, device="gpu")
    with pytest.raises(BackendError, match="model_dir/clip_dir are pytorch options"):
        create_backend("onnxruntime", engines_dir=exported_tiny, model_dir=tmp_path)
    with pytest.raises(BackendError, match="holds no exported engines"):
        create_backend("onnxruntime", engines_dir=tmp_path)
    with pytest.raises(BackendError, match="device 'cpu' must be cuda"):
        create_backend("tensorrt", engines_dir=exported_tiny, device="cpu")


def test_a_chunked_window_append_equals_one_call(exported_tiny: Path) -> None:
    """``decode_chunk_rows`` (memory: no [heads, 2452, context] scores at once) computes the same append: a window
    appended as 512-row calls gives the one-call logits and cache (1e-5 relative), and the positions continue."""
    f = create_backend("onnxruntime", engines_dir=exported_tiny).facts
    rng = np.random.default_rng(1)
    visual = rng.normal(0, 0.02, size=(f.num_visual_tokens, f.hidden_size)).astype(np.float32)
    results = []
    for rows in (0, 512):
        backend = OnnxRuntimeBackend(exported_tiny, intra_op_threads=2, decode_chunk_rows=rows)
        kv = backend.allocate_kv(6000)
        backend.decode([list(range(100, 150))], kv)
        backend.decode([[7], visual, [9]], kv)  # a first window: the second append has a past
        logits = backend.decode([[7, 8], visual, [9]], kv)
        results.append((logits, [(k.copy(), v.copy()) for k, v in kv.layer_views()], kv.next_position))
    (one, one_kv, one_next), (chunked, chunked_kv, chunked_next) = results
    print(f"chunked vs one call: max |logits diff| {np.abs(one - chunked).max():.2e}")
    np.testing.assert_allclose(chunked, one, rtol=1e-5, atol=1e-5 * float(np.abs(one).max()))
    for (k, v), (ck, cv) in zip(one_kv, chunked_kv):
        np.testing.assert_allclose(ck, k, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cv, v, rtol=1e-5, atol=1e-6)
    assert chunked_next == one_next == 50 + 2 * (f.num_visual_tokens + 2) + 1


def test_memory_settings_reach_the_sessions_and_are_validated(exported_tiny: Path, tmp_path: Path) -> None:
    """``backend.onnxruntime.*``: the arena setting is the sessions' option; bad values and other backends refused."""
    from runtime.config import OnnxRuntimeConfig

    on = create_backend("onnxruntime", engines_dir=exported_tiny, onnxruntime=OnnxRuntimeConfig(cpu_mem_arena=True))
    off = create_backend("onnxruntime", engines_dir=exported_tiny)
    arena = {b.engines["decoder"].session.get_session_options().enable_cpu_mem_arena for b in (on, off)}
    assert arena == {True, False} and off.decode_chunk_rows == 512
    with pytest.raises(BackendError, match="decode_chunk_rows = -1: must be >= 0"):
        OnnxRuntimeBackend(exported_tiny, decode_chunk_rows=-1)
    with pytest.raises(BackendError, match="onnxruntime settings apply to the onnxruntime backend only"):
        create_backend("pytorch", model_dir=tmp_path, clip_dir=tmp_path, onnxruntime=OnnxRuntimeConfig())
