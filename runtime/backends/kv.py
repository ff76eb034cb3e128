"""Backend-owned decoder KV caches: preallocated once, updated in place, with exact RoPE re-basing.

Every cache holds, per decoder layer, keys and values for up to ``capacity`` positions (BNSH ``[1, Hkv, P, D]`` views,
as HF), and the RoPE position of every cached entry (``positions`` ``[P]`` int64). A backend creates one with
``ModelBackend.allocate_kv(capacity)`` and its ``decode`` appends to it in place; the streaming context evicts and
re-bases in place (``drop``, ``shift_positions``). Nothing is reallocated per token, and nothing grows beyond the
capacity (the context's ``max_tokens``).

Keys are stored *rotated* (Qwen2 applies RoPE before caching), so moving entries to other positions re-rotates their
keys by the exact angle difference (:class:`engine_format.rope.RopeSpec`); values carry no position.

Two storage layouts, one bookkeeping (:class:`KVCache`):

* **ping-pong** (:class:`PingPongKV`; ONNX Runtime with numpy buffers, TensorRT with torch CUDA buffers): an exported
  decoder graph reads ``past [1,Hkv,P,D]`` and writes ``present [1,Hkv,P+S,D]``, both contiguous, so a strided
  capacity buffer cannot be bound. Each layer has two flat buffers of ``Hkv * capacity * D`` elements; the live cache
  is the contiguous prefix of the *active* one, the graph writes ``present`` into the prefix of the *spare* one, and
  the two swap. Eviction compacts into the spare buffer. Twice the memory of the live cache at most, no allocation.
* **strided** (the PyTorch backend's ``mobile_videogpt.kv_cache.PreallocatedCache``): ``[1,Hkv,capacity,D]``
  buffers written at ``[:, :, P:P+S]``; attention reads the ``[:, :, :P+S]`` view.

Dimensions: L layers, Hkv kv heads, P cached positions, S new positions, D head_dim, C capacity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from engine_format.rope import RopeSpec

Array = Any
"""A numpy array or a torch tensor (the backend's own storage)."""


class KVCacheError(RuntimeError):
    """A cache operation is out of range (position past the capacity, negative position, bad index range)."""


class KVCache(ABC):
    """Positions and bookkeeping shared by every layout; subclasses own the storage.

    Args:
        rope: The decoder's RoPE.
        num_layers: L.
        kv_heads: Hkv.
        capacity: Largest number of cached positions.
        itemsize: Bytes per stored element (4 for fp32, 2 for fp16 caches).
    """

    def __init__(self, rope: RopeSpec, num_layers: int, kv_heads: int, capacity: int, itemsize: int) -> None:
        if capacity < 1:
            raise KVCacheError(f"KV capacity must be >= 1, got {capacity}")
        self.rope = rope
        self.num_layers, self.kv_heads, self.capacity, self.itemsize = num_layers, kv_heads, capacity, itemsize
        self.head_dim = rope.head_dim
        self._positions = np.zeros(capacity, dtype=np.int64)
        self._length = 0

    # ------------------------------------------------------------------ state
    @property
    def length(self) -> int:
        """Cached positions P."""
        return self._length

    @property
    def positions(self) -> np.ndarray:
        """RoPE position of each cached entry ``[P]`` (a read-only view)."""
        view = self._positions[: self._length]
        view.flags.writeable = False
        return view

    @property
    def next_position(self) -> int:
        """The RoPE position the next appended entry gets (one past the last, or 0)."""
        return int(self._positions[self._length - 1]) + 1 if self._length else 0

    @property
    def bytes_per_position(self) -> int:
        """Bytes one cached position takes over all layers' keys and values."""
        return 2 * self.num_layers * self.kv_heads * self.head_dim * self.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of the live cache (``length`` positions)."""
        return self._length * self.bytes_per_position

    @property
    @abstractmethod
    def allocated_bytes(self) -> int:
        """Bytes of the preallocated storage."""

    @abstractmethod
    def layer_views(self) -> list[tuple[Array, Array]]:
        """Per-layer ``(key, value)`` views ``[1, Hkv, P, D]`` of the live cache (no copies)."""

    # ------------------------------------------------------------------ appends (backends)
    def check_room(self, new: int) -> None:
        """Raises KVCacheError unless ``new`` more positions fit."""
        if self._length + new > self.capacity:
            raise KVCacheError(
                f"KV cache full: {self._length} + {new} positions exceed the capacity of {self.capacity} "
                "(context.max_tokens)"
            )

    def new_positions(self, count: int) -> np.ndarray:
        """Position ids ``[1, count]`` int64 of the next ``count`` entries (the decode call's ``position_ids``)."""
        start = self.next_position
        return np.arange(start, start + count, dtype=np.int64)[None]

    def record_append(self, positions: np.ndarray) -> None:
        """Records that the backend wrote ``len(positions)`` entries after the live ones (call after each decode)."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        self.check_room(len(pos))
        self._positions[self._length : self._length + len(pos)] = pos
        self._length += len(pos)

    # ------------------------------------------------------------------ context operations
    def drop(self, start: int, stop: int) -> None:
        """Removes entries ``[start, stop)`` in place; later entries move down and keep their positions.

        Raises:
            KVCacheError: If the range is not inside the cache.
        """
        self._check_range(start, stop)
        if start == stop:
            return
        self._compact(start, stop)
        self._positions[start : self._length - (stop - start)] = self._positions[stop : self._length].copy()
        self._length -= stop - start
        self._after_drop()

    def truncate(self, length: int) -> None:
        """Keeps the first ``length`` entries (drops the rest)."""
        self.drop(length, self._length)

    def shift_positions(self, delta: int, start: int = 0) -> None:
        """Re-rotates the keys of entries ``start ..`` in place to positions ``+ delta``.

        Entries before ``start`` (the fixed system prefix) keep their positions, so after ``drop`` of an evicted
        window ``shift_positions(-window_len, start=window_start)`` closes the gap and positions stay contiguous.

        Raises:
            KVCacheError: If a position would become negative or ``start`` is out of range.
        """
        self._check_range(start, self._length)
        if delta == 0 or start == self._length:
            return
        old = self._positions[start : self._length]
        new = old + int(delta)
        if int(new.min()) < 0:
            raise KVCacheError(f"shifting by {delta} would move position {int(old.min())} below 0")
        cos, sin = self.rope.rotation(old, new)  # [n, D/2] float32
        self._rotate(start, cos, sin)
        self._positions[start : self._length] = new

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self._length:
            raise KVCacheError(f"KV range [{start}, {stop}) is not inside the cache of {self._length} positions")

    # ------------------------------------------------------------------ storage (subclasses)
    @abstractmethod
    def _compact(self, start: int, stop: int) -> None:
        """Removes entries ``[start, stop)`` from the storage (called before ``length`` is updated)."""

    @abstractmethod
    def _rotate(self, start: int, cos: np.ndarray, sin: np.ndarray) -> None:
        """Rotates the keys of entries ``[start, length)`` in place by ``cos``/``sin`` ``[n, D/2]``."""

    def _after_drop(self) -> None:
        """Hook after a drop changed ``length`` (a storage that tracks its own length syncs it)."""


def rotate_keys(keys: Array, cos: Array, sin: Array, to_f32: Callable[[Array], Array]) -> None:
    """Rotates ``keys [1, Hkv, n, D]`` in place by ``cos``/``sin`` ``[n, D/2]`` (fp32 arithmetic for any dtype).

    ``(k1, k2) -> (k1 c - k2 s, k2 c + k1 s)`` on the halves, which is Qwen2's ``k cos + rotate_half(k) sin``.
    """
    half = keys.shape[-1] // 2
    k1, k2 = to_f32(keys[..., :half]), to_f32(keys[..., half:])  # copies: both halves are overwritten below
    keys[..., :half] = k1 * cos - k2 * sin
    keys[..., half:] = k2 * cos + k1 * sin


class PingPongKV(KVCache):
    """Two flat buffers per layer and kind; the live cache is the contiguous prefix of the active one.

    Args:
        rope: The decoder's RoPE.
        num_layers: L.
        kv_heads: Hkv.
        capacity: Largest number of cached positions.
        zeros: Allocates a flat zeroed buffer of ``n`` elements in the cache dtype (numpy or torch).
        to_f32: fp32 *copy* of an array (rotation arithmetic; it must not alias the input).
        constant: numpy -> backend array (the rotation's cos/sin).
        itemsize: Bytes per element.
    """

    def __init__(
        self,
        rope: RopeSpec,
        num_layers: int,
        kv_heads: int,
        capacity: int,
        zeros: Callable[[int], Array],
        to_f32: Callable[[Array], Array],
        constant: Callable[[np.ndarray], Array],
        itemsize: int,
    ) -> None:
        super().__init__(rope, num_layers, kv_heads, capacity, itemsize)
        n = kv_heads * capacity * rope.head_dim
        # [buffer a/b][layer][key/value]
        self._buffers = [[(zeros(n), zeros(n)) for _ in range(num_layers)] for _ in range(2)]
        self._active = 0
        self._to_f32, self._constant = to_f32, constant

    @property
    def allocated_bytes(self) -> int:
        """Bytes of both buffer sets."""
        return 2 * self.capacity * self.bytes_per_position

    def _view(self, flat: Array, length: int) -> Array:
        return flat[: self.kv_heads * length * self.head_dim].reshape(1, self.kv_heads, length, self.head_dim)

    def layer_views(self) -> list[tuple[Array, Array]]:
        """Per-layer ``(key, value)`` ``[1, Hkv, P, D]`` contiguous views of the active buffers."""
        return [(self._view(k, self._length), self._view(v, self._length)) for k, v in self._buffers[self._active]]

    def output_views(self, new: int) -> list[tuple[Array, Array]]:
        """Per-layer ``(key, value)`` ``[1, Hkv, P + new, D]`` views of the spare buffers, where a decode call writes.

        Raises:
            KVCacheError: If ``new`` more positions do not fit.
        """
        self.check_room(new)
        total = self._length + new
        return [(self._view(k, total), self._view(v, total)) for k, v in self._buffers[1 - self._active]]

    def commit(self, positions: np.ndarray) -> None:
        """After a decode call wrote ``output_views``: the spare buffers become the live cache."""
        self.record_append(positions)
        self._active = 1 - self._active

    def _compact(self, start: int, stop: int) -> None:
        # The contiguous [1, Hkv, P, D] layout depends on P, so even a dropped suffix re-lays every head out.
        kept = self._length - (stop - start)
        for (src_k, src_v), (dst_k, dst_v) in zip(self._buffers[self._active], self._buffers[1 - self._active]):
            for src, dst in ((src_k, dst_k), (src_v, dst_v)):
                old, new = self._view(src, self._length), self._view(dst, kept)
                new[:, :, :start] = old[:, :, :start]
                new[:, :, start:] = old[:, :, stop:]
        self._active = 1 - self._active

    def _rotate(self, start: int, cos: np.ndarray, sin: np.ndarray) -> None:
        c, s = self._constant(cos), self._constant(sin)
        for key, _ in self.layer_views():
            rotate_keys(key[:, :, start:], c, s, self._to_f32)


def numpy_kv(rope: RopeSpec, num_layers: int, kv_heads: int, capacity: int, dtype: np.dtype) -> PingPongKV:
    """A ping-pong cache in numpy buffers (ONNX Runtime binds them directly)."""
    dt = np.dtype(dtype)
    return PingPongKV(
        rope,
        num_layers,
        kv_heads,
        capacity,
        zeros=lambda n: np.zeros(n, dtype=dt),  # calloc: pages are committed only when written
        to_f32=lambda a: a.astype(np.float32),
        constant=lambda a: a,
        itemsize=dt.itemsize,
    )

