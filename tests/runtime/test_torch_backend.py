"""The pytorch backend: the preallocated in-place cache equals the previous DynamicCache path; errors are clean.

``pytest tests/runtime/test_torch_backend.py -s``. "Previous" is the path the backend used before the cache was
preallocated: per call, a transformers ``DynamicCache`` rebuilt from the flat per-layer KV and concatenated onto.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from mobile_videogpt.model import _CACHE_KWARG
from runtime.backends import BackendError, create_backend
from runtime.backends.torch_backend import TorchBackend
from runtime.generation import GreedyState, greedy_decode


@torch.no_grad()
def _dynamic_decode(model, embeds: torch.Tensor, past: list | None, start: int) -> tuple[torch.Tensor, list]:
    """One call the pre-preallocation way (a DynamicCache rebuilt from flat KV, whole past concatenated)."""
    cache = DynamicCache(config=model.lm.config)
    for i, (k, v) in enumerate(past or []):
        cache.update(k, v, i)
    pos = torch.arange(start, start + embeds.shape[1])[None]
    out = model.lm(inputs_embeds=embeds, position_ids=pos, use_cache=True, logits_to_keep=1, **{_CACHE_KWARG: cache})
    layers = (out.cache if _CACHE_KWARG == "cache" else out.past_key_values).layers
    return out.logits.float()[0, -1], [(layer.keys, layer.values) for layer in layers]


def test_preallocated_cache_equals_the_dynamic_cache_path(tiny_backend: TorchBackend) -> None:
    """Prefill, a 2402-row window append and 8 greedy steps: same logits (1e-5 relative), same greedy ids."""
    backend, model = tiny_backend, tiny_backend.model
    rng = np.random.default_rng(0)
    system = list(range(100, 150))
    visual = rng.normal(0, 0.02, size=(backend.facts.num_visual_tokens, backend.hidden_size)).astype(np.float32)
    kv = backend.allocate_kv(4000)
    buffers = [k.data_ptr() for k, _ in kv.cache.buffers()]
    backend.decode([system], kv)
    logits = backend.decode([[7, 8], visual, [9]], kv)
    ids = list(greedy_decode(logits, lambda t: backend.decode([list(t)], kv), 8, set(), GreedyState()))
    assert [k.data_ptr() for k, _ in kv.cache.buffers()] == buffers, "the cache was reallocated"

    _, past = _dynamic_decode(model, model.embed_tokens(system)[None], None, 0)
    window = model.build_inputs_embeds([7, 8], torch.from_numpy(visual), [9])[None]
    ref, past = _dynamic_decode(model, window, past, len(system))
    np.testing.assert_allclose(logits, ref.numpy(), rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    ref_ids, position = [], len(system) + window.shape[1]
    for _ in range(8):
        ref_ids.append(int(torch.argmax(ref)))
        ref, past = _dynamic_decode(model, model.embed_tokens([ref_ids[-1]])[None], past, position)
        position += 1
    print(f"greedy ids {ids}")
    assert ids == ref_ids
    for (k, v), (rk, rv) in zip(kv.layer_views(), past):
        torch.testing.assert_close(k, rk[:, :, : kv.length], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v, rv[:, :, : kv.length], rtol=1e-5, atol=1e-5)


def test_an_unloadable_checkpoint_is_a_backend_error_naming_it(tmp_path: Path, tiny_checkpoint) -> None:
    model_dir, clip_dir = tmp_path / "model", tmp_path / "clip"
    model_dir.mkdir()
    clip_dir.mkdir()
    with pytest.raises(BackendError, match=rf"cannot load {model_dir}.*no model.safetensors"):
        create_backend("pytorch", model_dir=model_dir, clip_dir=tiny_checkpoint[1])
    with pytest.raises(BackendError, match="precision fp16 needs a CUDA device"):
        create_backend("pytorch", model_dir=tiny_checkpoint[0], clip_dir=tiny_checkpoint[1], precision="fp16")
    with pytest.raises(BackendError, match="is not a torch device"):
        create_backend("pytorch", model_dir=tiny_checkpoint[0], clip_dir=tiny_checkpoint[1], device="tpu")


def test_visual_features_stay_in_torch_and_decode_takes_them(tiny_backend: TorchBackend) -> None:
    """encode_images/encode_video return torch tensors that decode consumes as they are (no host round trip)."""
    f = tiny_backend.facts
    pixels = np.zeros((f.num_frames, 3, f.image_size, f.image_size), dtype=np.float32)
    images = tiny_backend.encode_images(pixels)
    video = tiny_backend.encode_video(pixels[: f.selected_frames])
    assert isinstance(images.image_tokens, torch.Tensor) and isinstance(video, torch.Tensor)
    assert images.clip_mean.shape == (f.num_frames, f.clip_hidden_size)
    kv = tiny_backend.allocate_kv(3000)
    logits = tiny_backend.decode([[1, 2], images.image_tokens, video, [3]], kv)
    assert logits.shape == (f.vocab_size,) and kv.length == 3 + f.num_visual_tokens
