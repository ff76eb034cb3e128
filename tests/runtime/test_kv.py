"""KV states: drop, nbytes and exact RoPE re-basing (``pytest tests/runtime/test_kv.py``).

The model tests pin the property the streaming context relies on: a cache moved with ``shift_positions`` and then
extended by ``decode`` gives the logits of decoding the same tokens at the shifted positions from scratch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.backends.base import BackendError
from runtime.backends.kv import NumpyKVState, RopeSpec, TorchKVState

ROPE = RopeSpec(head_dim=8, theta=10000.0)


def _layers(length: int, n_layers: int = 2, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(1, 2, length, 8)).astype(np.float32), rng.normal(size=(1, 2, length, 8)).astype(np.float32))
        for _ in range(n_layers)
    ]


def _states(length: int) -> list[NumpyKVState | TorchKVState]:
    layers = _layers(length)
    torch_layers = [(torch.from_numpy(k.copy()), torch.from_numpy(v.copy())) for k, v in layers]
    return [NumpyKVState(layers, ROPE), TorchKVState(torch_layers, ROPE)]


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else x


@pytest.mark.parametrize("kind", [0, 1], ids=["numpy", "torch"])
def test_drop_removes_the_range_and_keeps_later_positions(kind: int) -> None:
    state = _states(10)[kind]
    dropped = state.drop(3, 6)
    assert dropped.length == 7
    assert dropped.positions.tolist() == [0, 1, 2, 6, 7, 8, 9]
    for (k0, v0), (k1, v1) in zip(state.layers, dropped.layers, strict=True):
        np.testing.assert_array_equal(_np(k1), np.concatenate([_np(k0)[:, :, :3], _np(k0)[:, :, 6:]], axis=2))
        np.testing.assert_array_equal(_np(v1), np.concatenate([_np(v0)[:, :, :3], _np(v0)[:, :, 6:]], axis=2))
    assert state.length == 10, "drop must not modify the original state"


@pytest.mark.parametrize("kind", [0, 1], ids=["numpy", "torch"])
def test_nbytes_counts_every_key_and_value(kind: int) -> None:
    state = _states(5)[kind]
    assert state.nbytes == 2 * 2 * (1 * 2 * 5 * 8) * 4
    assert state.drop(0, 5).nbytes == 0


@pytest.mark.parametrize("kind", [0, 1], ids=["numpy", "torch"])
def test_shift_round_trip_and_prefix_untouched(kind: int) -> None:
    state = _states(12)[kind]
    moved = state.shift_positions(37, start=4)
    assert moved.positions.tolist() == list(range(4)) + list(range(41, 49))
    back = moved.shift_positions(-37, start=4)
    for (k0, v0), (k1, v1), (km, vm) in zip(state.layers, back.layers, moved.layers, strict=True):
        np.testing.assert_array_equal(_np(km)[:, :, :4], _np(k0)[:, :, :4])  # prefix keys unchanged
        np.testing.assert_array_equal(_np(vm), _np(v0))  # values carry no position
        assert np.abs(_np(km)[:, :, 4:] - _np(k0)[:, :, 4:]).max() > 1e-2  # keys really moved
        np.testing.assert_allclose(_np(k1), _np(k0), atol=2e-6)
        np.testing.assert_array_equal(_np(v1), _np(v0))


def test_shift_keeps_fp16_dtype() -> None:
    layers = [(k.astype(np.float16), v.astype(np.float16)) for k, v in _layers(6)]
    moved = NumpyKVState(layers, ROPE).shift_positions(5)
    assert moved.layers[0][0].dtype == np.float16
    torch_moved = TorchKVState([(torch.from_numpy(k), torch.from_numpy(v)) for k, v in layers], ROPE).shift_positions(5)
    assert torch_moved.layers[0][0].dtype == torch.float16
    np.testing.assert_allclose(moved.layers[0][0], torch_moved.layers[0][0].numpy(), atol=1e-3)


def test_errors_name_the_problem() -> None:
    state = _states(4)[0]
    with pytest.raises(BackendError, match="below 0"):
        state.shift_positions(-1)
    with pytest.raises(BackendError, match=r"\[2, 9\) is not inside the cache of 4"):
        state.drop(2, 9)
    with pytest.raises(BackendError, match="head_dim 8 does not match the RoPE head_dim 16"):
        NumpyKVState(_layers(3), RopeSpec(16, 1e4))
    with pytest.raises(BackendError, match="3 position ids"):
        NumpyKVState(_layers(4), ROPE, positions=[0, 1, 2])


def test_rope_matches_the_models_rotary_embedding(tiny_model) -> None:
    """inv_freq and the fp32 angles are HF's (the premise of exact re-basing)."""
    rope = RopeSpec.from_qwen2_config(tiny_model.lm.config)
    np.testing.assert_array_equal(rope.inv_freq(), tiny_model.lm.model.rotary_emb.inv_freq.numpy())
    cos, sin = tiny_model.lm.model.rotary_emb(torch.zeros(1, 1, rope.head_dim), torch.arange(9000, 9010)[None])
    angles = rope.angles(np.arange(9000, 9010))
    np.testing.assert_allclose(cos[0].numpy(), np.cos(np.concatenate([angles, angles], -1)), atol=1e-6)
    np.testing.assert_allclose(sin[0].numpy(), np.sin(np.concatenate([angles, angles], -1)), atol=1e-6)


def _decode(model, embeds: torch.Tensor, past, start: int):
    pos = torch.arange(start, start + embeds.shape[1])[None]
    return model.decode_step(embeds, past, pos)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize(("old", "new"), [(0, 96), (96, 0), (600, 5)])
def test_shift_then_decode_equals_decoding_at_shifted_positions(tiny_model, kind: str, old: int, new: int) -> None:
    """Prefill at ``old``, shift to ``new``, decode more tokens == prefill at ``new`` and decode (logits, 1e-4)."""
    rope = RopeSpec.from_qwen2_config(tiny_model.lm.config)
    ids = torch.randint(0, 150000, (40,), generator=torch.Generator().manual_seed(1))
    x = tiny_model.embed_tokens(ids)[None]
    _, present = _decode(tiny_model, x[:, :30], None, old)
    if kind == "numpy":
        state = NumpyKVState([(k.numpy(), v.numpy()) for k, v in present], rope, np.arange(old, old + 30))
        moved = [(torch.from_numpy(k), torch.from_numpy(v)) for k, v in state.shift_positions(new - old).layers]
    else:
        moved = TorchKVState(present, rope, np.arange(old, old + 30)).shift_positions(new - old).layers
    shifted_logits, _ = _decode(tiny_model, x[:, 30:], moved, new + 30)

    _, fresh = _decode(tiny_model, x[:, :30], None, new)
    fresh_logits, _ = _decode(tiny_model, x[:, 30:], fresh, new + 30)
    err = (shifted_logits - fresh_logits).abs().max().item()
    scale = fresh_logits.abs().max().item()
    print(f"{kind} {old}->{new}: max |dlogit| {err:.2e} (logit scale {scale:.2f})")
    assert err <= 1e-4 * max(1.0, scale)


def test_layer0_keys_exact_for_large_shifts(tiny_model) -> None:
    """Layer-0 keys depend only on embeddings and positions: re-basing from 8000 to 0 matches a fresh prefill.

    Deeper layers differ by ~1e-3 here, but that is HF's own fp32 RoPE at position 8000 (a fresh prefill at 8000
    and one at 0 differ by the same amount), not the shift.
    """
    rope = RopeSpec.from_qwen2_config(tiny_model.lm.config)
    x = tiny_model.embed_tokens(list(range(100, 130)))[None]
    _, present = _decode(tiny_model, x, None, 8000)
    moved = TorchKVState(present, rope, np.arange(8000, 8030)).shift_positions(-8000)
    _, fresh = _decode(tiny_model, x, None, 0)
    err = (moved.layers[0][0] - fresh[0][0]).abs().max().item()
    print(f"layer-0 key error after an 8000-position shift: {err:.2e}")
    assert err < 1e-5 * max(1.0, fresh[0][0].abs().max().item())
