"""A preallocated, in-place KV cache for the reference decoder (a transformers ``Cache``).

``DynamicCache`` grows by concatenation: every decoder call copies the whole past once per layer, which on a GPU made
one generated token cost 4x an isolated decode step. :class:`PreallocatedCache` holds ``[B, Hkv, capacity, D]``
buffers per layer; ``update`` writes the new keys/values at ``[:, :, P:P+S]`` in place and returns the
``[:, :, :P+S]`` views, so attention (SDPA or eager) reads exactly the live positions and nothing is copied or
reallocated. The masks are those of a dynamic cache (``get_mask_sizes`` = live length + query length).

A CUDA graph cannot see the Python live length, so a graphed decode step (``runtime.backends.torch_graphs``) switches
the cache to *static writes* (``set_static_index``): each layer writes its one new position at a device index and
returns the whole ``[B, Hkv, C, D]`` buffers, and the caller passes a mask over the C slots and records the length
after the replay.

Dimensions: B batch (1), Hkv KV heads, C capacity, P cached positions, S new positions, D head_dim.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in fixed ``[B, Hkv, C, D]`` buffers.

    Args:
        key_buffer: Preallocated keys.
        value_buffer: Preallocated values (same shape, dtype and device).
    """

    is_croppable = True

    def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor) -> None:
        super().__init__()
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.device = key_buffer.device
        self.length = 0
        self.is_initialized = True
        self.static_index: torch.Tensor | None = None  # device [1] int64 write slot in static-write mode
        self._refresh()

    @property
    def capacity(self) -> int:
        """C."""
        return int(self.key_buffer.shape[2])

    def _refresh(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing to allocate: the buffers exist."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes ``[B, Hkv, S, D]`` after the live entries; returns the live ``[B, Hkv, P+S, D]`` views.

        In static-write mode it writes ``[B, Hkv, 1, D]`` at ``static_index`` instead and returns the whole buffers
        (no Python length involved, so the call can be captured in a CUDA graph; the length is not changed).

        Raises:
            ValueError: If the S new positions do not fit in the capacity.
        """
        if self.static_index is not None:
            self.key_buffer.index_copy_(2, self.static_index, key_states)
            self.value_buffer.index_copy_(2, self.static_index, value_states)
            return self.key_buffer, self.value_buffer
        new = int(key_states.shape[-2])
        end = self.length + new
        if end > self.capacity:
            raise ValueError(f"KV cache full: {self.length} + {new} positions exceed the capacity {self.capacity}")
        self.key_buffer[:, :, self.length : end].copy_(key_states)
        self.value_buffer[:, :, self.length : end].copy_(value_states)
        self.length = end
        self._refresh()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Live positions P."""
        return self.length

    def set_length(self, length: int) -> None:
        """Sets the live length (after the owner moved entries within the buffers)."""
        if not 0 <= length <= self.capacity:
            raise ValueError(f"length {length} outside [0, {self.capacity}]")
        self.length = length
        self._refresh()

    def crop(self, tokens_to_remove: int) -> None:
        """Drops the last ``-tokens_to_remove`` positions (transformers' convention: a negative count)."""
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of positions to remove")
        self.set_length(max(0, self.length + tokens_to_remove))

    def reset(self) -> None:
        """Empties the layer (the buffers stay allocated)."""
        self.set_length(0)


class PreallocatedCache(Cache):
    """Per-layer preallocated buffers behind transformers' ``Cache`` interface.

    Args:
        num_layers: Decoder layers.
        kv_heads: Hkv.
        head_dim: D.
        capacity: C, the largest number of cached positions.
        dtype: Storage dtype (the model's).
        device: Storage device.
        batch: B.
    """

    def __init__(
        self,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device | str,
        batch: int = 1,
    ) -> None:
        shape = (batch, kv_heads, capacity, head_dim)
        # zeros, not empty: on the CPU the pages are then only committed when written
        layers = [
            PreallocatedLayer(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(num_layers)
        ]
        super().__init__(layers=layers)

    @classmethod
    def for_model(cls, text_config: object, capacity: int, dtype: torch.dtype, device: torch.device | str) -> PreallocatedCache:
        """A cache sized for a ``Qwen2Config``."""
        hidden, heads = int(text_config.hidden_size), int(text_config.num_attention_heads)  # type: ignore[attr-defined]
        head_dim = int(getattr(text_config, "head_dim", None) or hidden // heads)
        return cls(
            int(text_config.num_hidden_layers),  # type: ignore[attr-defined]
            int(text_config.num_key_value_heads),  # type: ignore[attr-defined]
            head_dim,
            capacity,
            dtype,
            device,
        )

    @property
    def length(self) -> int:
        """Live positions P (equal in every layer)."""
        return self.layers[0].length  # type: ignore[attr-defined]

    @property
    def capacity(self) -> int:
        """C."""
        return self.layers[0].capacity  # type: ignore[attr-defined]

    def set_length(self, length: int) -> None:
        """Sets every layer's live length."""
        for layer in self.layers:
            layer.set_length(length)  # type: ignore[attr-defined]

    def set_static_index(self, index: torch.Tensor | None) -> None:
        """Switches every layer to static writes at the device index ``[1]`` int64, or back (``None``)."""
        for layer in self.layers:
            layer.static_index = index  # type: ignore[attr-defined]

    def buffers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer ``(key_buffer, value_buffer)`` ``[B, Hkv, C, D]``."""
        return [(layer.key_buffer, layer.value_buffer) for layer in self.layers]  # type: ignore[attr-defined]

    def views(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer live ``(keys, values)`` ``[B, Hkv, P, D]`` views."""
        return [(layer.keys, layer.values) for layer in self.layers]  # type: ignore[misc]
