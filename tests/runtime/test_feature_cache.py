"""FrameFeatureCache: compute only misses, in one batch; LRU; hit rate."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.feature_cache import FrameFeatureCache


class _Encoder:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, indices: list[int]) -> np.ndarray:
        self.calls.append(list(indices))
        return np.stack([np.full(3, float(i)) for i in indices])


def test_computes_only_missing_frames_in_one_batch() -> None:
    cache: FrameFeatureCache[np.ndarray] = FrameFeatureCache(100)
    enc = _Encoder()
    first = cache.get_or_compute([0, 4, 8, 12], enc)
    assert enc.calls == [[0, 4, 8, 12]]
    second = cache.get_or_compute([8, 12, 16, 20], enc)
    assert enc.calls == [[0, 4, 8, 12], [16, 20]]
    assert [f[0] for f in first] == [0, 4, 8, 12]
    assert [f[0] for f in second] == [8, 12, 16, 20]
    assert cache.hits == 2 and cache.misses == 6
    assert cache.hit_rate == pytest.approx(0.25)


def test_all_cached_does_not_call_compute() -> None:
    cache: FrameFeatureCache[np.ndarray] = FrameFeatureCache(10)
    enc = _Encoder()
    cache.get_or_compute([1, 2], enc)
    out = cache.get_or_compute([2, 1, 2], enc)
    assert len(enc.calls) == 1
    assert [f[0] for f in out] == [2, 1, 2]
    assert cache.hit_rate == pytest.approx(3 / 5)


def test_repeated_missing_index_computed_once() -> None:
    cache: FrameFeatureCache[np.ndarray] = FrameFeatureCache(10)
    enc = _Encoder()
    out = cache.get_or_compute([5, 5, 5, 6], enc)
    assert enc.calls == [[5, 6]]
    assert [f[0] for f in out] == [5, 5, 5, 6]
    assert cache.misses == 2 and cache.hits == 2


def test_lru_eviction_keeps_recently_used() -> None:
    cache: FrameFeatureCache[np.ndarray] = FrameFeatureCache(3)
    enc = _Encoder()
    cache.get_or_compute([1, 2, 3], enc)
    cache.get_or_compute([1], enc)  # 1 is now most recent
    cache.get_or_compute([4], enc)  # evicts 2
    assert 2 not in cache and 1 in cache and 3 in cache and 4 in cache
    assert len(cache) == 3
    stats = cache.stats()
    assert stats["evictions"] == 1 and stats["entries"] == 3 and stats["max_entries"] == 3


def test_request_larger_than_capacity_still_returns_everything() -> None:
    cache: FrameFeatureCache[np.ndarray] = FrameFeatureCache(2)
    out = cache.get_or_compute([1, 2, 3, 4], _Encoder())
    assert [f[0] for f in out] == [1, 2, 3, 4]
    assert len(cache) == 2


def test_wrong_batch_size_is_an_error() -> None:
    cache: FrameFeatureCache[int] = FrameFeatureCache(4)
    with pytest.raises(ValueError, match="returned 1 features for 2 missing frames"):
        cache.get_or_compute([1, 2], lambda idx: [0])
    with pytest.raises(ValueError, match="max_entries = 0"):
        FrameFeatureCache(0)


def test_hit_rate_before_any_request_is_zero() -> None:
    assert FrameFeatureCache(4).hit_rate == 0.0
