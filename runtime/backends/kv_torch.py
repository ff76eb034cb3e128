"""KV caches in torch tensors: the PyTorch backend's strided cache and TensorRT's ping-pong buffers.

Imported only by the torch-based backends (see :mod:`runtime.backends.kv` for the layouts and the bookkeeping).
"""

from __future__ import annotations

import numpy as np
import torch

from engine_format.rope import RopeSpec
from mobile_videogpt.kv_cache import PreallocatedCache
from runtime.backends.kv import KVCache, PingPongKV, rotate_keys


def _f32_copy(tensor: torch.Tensor) -> torch.Tensor:
    """An fp32 copy (``.float()`` would alias an fp32 tensor, and the rotation overwrites its input)."""
    return tensor.to(torch.float32, copy=True)


class TorchCacheKV(KVCache):
    """The PyTorch backend's cache: a transformers ``PreallocatedCache`` (``[1, Hkv, C, D]`` per layer) the reference
    decoder appends to in place.

    Args:
        cache: The preallocated cache (empty).
        rope: The decoder's RoPE.
    """

    def __init__(self, cache: PreallocatedCache, rope: RopeSpec) -> None:
        key = cache.buffers()[0][0]
        super().__init__(rope, len(cache.layers), int(key.shape[1]), cache.capacity, key.element_size())
        self.cache = cache
        self.decode_graph: object | None = None  # the backend's CUDA-graph decode step bound to these buffers

    @property
    def allocated_bytes(self) -> int:
        """Bytes of the preallocated buffers."""
        return self.capacity * self.bytes_per_position

    def layer_views(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer live ``(keys, values)`` ``[1, Hkv, P, D]`` (strided views)."""
        return self.cache.views()

    def _compact(self, start: int, stop: int) -> None:
        if stop == self._length:
            return  # a dropped suffix: the live length shrinks, nothing moves
        for key, value in self.cache.buffers():
            for buf in (key, value):
                tail = buf[:, :, stop : self._length].clone()  # source and target overlap
                buf[:, :, start : start + tail.shape[2]].copy_(tail)

    def _after_drop(self) -> None:
        self.cache.set_length(self._length)

    def _rotate(self, start: int, cos: np.ndarray, sin: np.ndarray) -> None:
        device = self.cache.buffers()[0][0].device
        c, s = torch.from_numpy(cos).to(device), torch.from_numpy(sin).to(device)
        for key, _ in self.cache.views():
            rotate_keys(key[:, :, start:], c, s, _f32_copy)


def torch_ping_pong_kv(
    rope: RopeSpec, num_layers: int, kv_heads: int, capacity: int, dtype: torch.dtype, device: torch.device | str
) -> PingPongKV:
    """A ping-pong cache in torch buffers on ``device`` (TensorRT binds their addresses)."""
    return PingPongKV(
        rope,
        num_layers,
        kv_heads,
        capacity,
        zeros=lambda n: torch.zeros(n, dtype=dtype, device=device),
        to_f32=_f32_copy,
        constant=lambda a: torch.from_numpy(a).to(device),
        itemsize=torch.empty(0, dtype=dtype).element_size(),
    )
