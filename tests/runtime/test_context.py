"""DecoderContext: eviction with contiguous positions, clearing, timeout, limits, KV bytes.

``pytest tests/runtime/test_context.py``. Most tests use the scripted backend (its KV is each embedding rotated at
its position, so a re-based cache must equal a fresh prefill exactly); one runs the tiny model.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine_format.prompt import streaming_prompt_ids
from runtime.config import ConfigError, ContextConfig
from runtime.context import ContextError, DecoderContext
from runtime.events import ContextCleared, ContextEvicted, Event
from runtime.windowing import Window
from tests.runtime.fakes import HIDDEN, SPECIAL, CharTokenizer, FakeBackend, rotate

VISUAL = 2402
NEXT_ID = SPECIAL["<next>"]


def _context(**cfg: object) -> tuple[DecoderContext, list[Event], FakeBackend]:
    events: list[Event] = []
    backend = FakeBackend()
    prompt = streaming_prompt_ids(CharTokenizer().encode)
    config = ContextConfig(**cfg)  # type: ignore[arg-type]
    ctx = DecoderContext(backend, prompt, config, reserve_tokens=10, on_event=events.append)
    return ctx, events, backend


def _window(k: int, stride: float = 1.5) -> Window:
    return Window(k, k * stride, k * stride + 2.0)


def _visual(k: int) -> list[np.ndarray]:
    return [np.full((VISUAL, HIDDEN), 0.01 * (k + 1), dtype=np.float32)]


def _assert_contiguous_and_fresh(ctx: DecoderContext) -> None:
    """Positions are 0..L-1 and every key equals its raw row (the fake's value) rotated at that position."""
    kv = ctx.kv
    assert kv is not None
    assert kv.positions.tolist() == list(range(kv.length))
    keys, values = kv.layer_views()[0]
    fresh = rotate(values[0, 0], np.arange(kv.length))
    np.testing.assert_allclose(keys[0, 0], fresh, atol=1e-4)


def test_evicting_the_oldest_window_rebases_later_windows() -> None:
    ctx, events, _ = _context(max_windows=2, max_tokens=20000)
    for k in range(3):
        ctx.append_window(_window(k), _visual(k), VISUAL)
        ctx.close_turn(NEXT_ID)
    assert [w.window_index for w in ctx.windows] == [1, 2]
    evicted = [e for e in events if isinstance(e, ContextEvicted)]
    assert [(e.window_index, e.reason) for e in evicted] == [(0, "max_windows")]
    # The evicted span covered its turn and its closing tokens (fed with window 1's append).
    per_window = ctx.window_tokens(VISUAL)
    assert evicted[0].tokens == per_window + 1 + len(ctx.prompt.turn_end_ids)
    _assert_contiguous_and_fresh(ctx)
    # What remains is the prefix, then window 1's turn starting with its user header, then window 2's.
    ids = np.rint(ctx.kv.layer_views()[0][1][0, 0, :, 0]).astype(int)  # type: ignore[union-attr]
    w1, w2 = ctx.windows
    assert w1.start == ctx.prefix_length and w2.start == w1.start + w1.length
    assert ids[: ctx.prefix_length].tolist() == ctx.prompt.system_ids
    n_head = len(ctx.prompt.window_prefix_ids)
    assert ids[w1.start : w1.start + n_head].tolist() == ctx.prompt.window_prefix_ids
    assert ids[w2.start - 3 : w2.start].tolist() == [NEXT_ID, *ctx.prompt.turn_end_ids]
    assert ctx.length == w2.start + w2.length


def test_token_budget_evicts_and_length_never_exceeds_it() -> None:
    ctx, events, _ = _context(max_windows=10, max_tokens=3 * 2500)
    for k in range(5):
        ctx.append_window(_window(k), _visual(k), VISUAL)
        assert ctx.length + ctx.reserve_tokens <= 3 * 2500
        ctx.close_turn(NEXT_ID)
    reasons = {e.reason for e in events if isinstance(e, ContextEvicted)}
    assert reasons == {"max_tokens"}
    assert len(ctx.windows) == 2
    _assert_contiguous_and_fresh(ctx)


def test_clear_after_feedback_keeps_only_the_prefix() -> None:
    ctx, events, backend = _context(max_windows=4, max_tokens=20000, clear_after_feedback=True)
    ctx.append_window(_window(0), _visual(0), VISUAL)
    prefix_bytes = ctx.kv.layer_views()[0][0][:, :, : ctx.prefix_length].nbytes * 2  # type: ignore[union-attr]
    logits = ctx.extend([SPECIAL["<feedback>"]])
    assert int(np.argmax(logits)) == ord("G")
    ctx.extend([ord("G")])
    ctx.end_feedback(None, 0)
    assert ctx.windows == [] and ctx.length == ctx.prefix_length
    assert ctx.kv_bytes == prefix_bytes
    assert [e for e in events if isinstance(e, ContextCleared)] == [ContextCleared("feedback", 0)]
    prefills = [c for c in backend.calls if c.positions[0] == 0]
    ctx.append_window(_window(1), _visual(1), VISUAL)
    assert [c for c in backend.calls if c.positions[0] == 0] == prefills, "the prefix is never recomputed"
    _assert_contiguous_and_fresh(ctx)


def test_feedback_without_clearing_closes_the_turn_with_the_text() -> None:
    ctx, _, backend = _context(max_windows=4, max_tokens=20000, clear_after_feedback=False)
    ctx.append_window(_window(0), _visual(0), VISUAL)
    ctx.extend([SPECIAL["<feedback>"]])
    ctx.end_feedback(ord("G"), 0)  # the last generated token was not fed yet
    with pytest.raises(ContextError, match="after the turn was closed"):
        ctx.extend([ord("x")])
    ctx.append_window(_window(1), _visual(1), VISUAL)
    assert backend.calls[-1].first_id == ord("G")  # fed first in the next append, inside window 0's span
    assert [w.window_index for w in ctx.windows] == [0, 1]
    w0 = ctx.windows[0]
    assert w0.length == ctx.window_tokens(VISUAL) + 1 + 1 + len(ctx.prompt.turn_end_ids)


def test_timeout_clears_on_a_stream_time_gap() -> None:
    ctx, events, _ = _context(max_windows=4, max_tokens=20000, timeout_s=10.0)
    ctx.append_window(Window(0, 0.0, 2.0), _visual(0), VISUAL)
    ctx.close_turn(NEXT_ID)
    ctx.append_window(Window(5, 7.5, 9.5), _visual(5), VISUAL)  # 5.5 s gap: kept
    ctx.close_turn(NEXT_ID)
    assert len(ctx.windows) == 2
    ctx.append_window(Window(20, 30.0, 32.0), _visual(20), VISUAL)  # 20.5 s gap: cleared first
    assert [w.window_index for w in ctx.windows] == [20]
    assert [e for e in events if isinstance(e, ContextCleared)] == [ContextCleared("timeout", 20)]
    _assert_contiguous_and_fresh(ctx)


def test_kv_bytes_track_the_cache() -> None:
    ctx, _, _ = _context(max_windows=1, max_tokens=20000)
    assert ctx.kv_bytes == 0
    ctx.append_window(_window(0), _visual(0), VISUAL)
    one = ctx.kv_bytes
    assert one == ctx.length * HIDDEN * 4 * 2  # key + value, fp32, one layer, one head
    ctx.close_turn(NEXT_ID)
    ctx.append_window(_window(1), _visual(1), VISUAL)  # max_windows=1: window 0 evicted first
    assert ctx.kv_bytes == one


def test_limits_are_checked_with_the_key_named() -> None:
    prompt = streaming_prompt_ids(CharTokenizer().encode)
    with pytest.raises(ConfigError, match=r"context\.max_tokens = 200000: must be <= the model's max_position"):
        DecoderContext(FakeBackend(), prompt, ContextConfig(max_tokens=200_000))
    ctx = DecoderContext(FakeBackend(), prompt, ContextConfig(max_tokens=3000), reserve_tokens=500)
    with pytest.raises(ConfigError, match=r"context\.max_tokens = 3000: must be >= \d+"):
        ctx.append_window(_window(0), _visual(0), VISUAL)
    with pytest.raises(ContextError, match="no window"):
        ctx.extend([1])


def test_tiny_model_eviction_matches_a_fresh_prefill_of_the_kept_windows(tiny_backend, tiny_tokenizer) -> None:
    """Real decoder: after evicting window 0, positions are contiguous and the layer-0 KV of the kept turns equals
    a fresh prefill of [prefix, window 1, window 2] (layer 0 sees only embeddings and positions). Deeper layers
    keep what they attended to in window 0: eviction is not a re-prefill (docs/design.md)."""
    import torch

    prompt = streaming_prompt_ids(tiny_tokenizer.encode)
    ctx = DecoderContext(tiny_backend, prompt, ContextConfig(max_windows=2, max_tokens=12000), reserve_tokens=8)
    rng = np.random.default_rng(0)
    visual = [rng.normal(0, 0.02, size=(VISUAL, tiny_backend.hidden_size)).astype(np.float32) for _ in range(3)]
    next_id = tiny_backend.action_token_ids.next
    for k in range(3):
        logits = ctx.append_window(_window(k), [visual[k]], VISUAL)
        assert np.all(np.isfinite(logits))
        ctx.close_turn(next_id)
    kv = ctx.kv
    assert kv is not None and kv.positions.tolist() == list(range(kv.length))
    assert kv.length < tiny_backend.max_position_embeddings

    closing = [next_id, *prompt.turn_end_ids]
    turn = lambda k: [list(prompt.window_prefix_ids), visual[k], list(prompt.window_suffix_ids)]  # noqa: E731
    fresh = tiny_backend.allocate_kv(12000)
    tiny_backend.decode([list(prompt.system_ids), *turn(1), closing, *turn(2)], fresh)
    assert fresh.length == kv.length
    for got, want in zip(kv.layer_views()[0], fresh.layer_views()[0], strict=True):
        err = (got - want).abs().max().item()
        print(f"layer-0 max |diff| after eviction: {err:.2e}")
        assert err < 1e-4 * max(1.0, want.abs().max().item())
    # deeper layers remember window 0
    assert not torch.allclose(kv.layer_views()[-1][0], fresh.layer_views()[-1][0], atol=1e-3)
