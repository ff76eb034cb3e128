"""KV-cache states for the decoder: numpy (ONNX Runtime) and torch (PyTorch, TensorRT), with exact RoPE re-basing.

Both classes hold one ``(key, value)`` pair per decoder layer, each ``[1, kv_heads, P, head_dim]`` (BNSH, as HF), and
the RoPE position of every cached entry (``positions`` ``[P]`` int64). Keys are stored *rotated* (Qwen2 applies RoPE
before caching), so moving cached entries to other positions means re-rotating their keys; values carry no position.

Why ``shift_positions`` is exact: Qwen2 rotates each (i, i + head_dim/2) pair of a key by the angle
``a(p) = p * inv_freq[i]``, computed in fp32 (``inv_freq = 1 / theta ** (arange(0, hd, 2) / hd)``, also fp32) and
applied with ``rotate_half``: ``k' = k * cos(a) + rotate_half(k) * sin(a)``. Rotations compose, so a key cached at
``p`` moves to ``p + delta`` by one more rotation. We rotate by ``a_fp32(p + delta) - a_fp32(p)`` (the difference of
the angles HF itself would use, taken in float64), so the re-based key equals what a fresh prefill at ``p + delta``
would have cached up to a few fp32 roundings. Rotating by ``a_fp32(delta)`` instead would add fp32 angle error of
order ``ulp(p * inv_freq)`` (~5e-4 rad at p = 8000), which shows in the logits; this is why the states track their
positions.

Dimensions: L layers, B = 1, Hkv kv heads, P cached positions, D head_dim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from runtime.backends.base import BackendError, KVState


@dataclass(frozen=True)
class RopeSpec:
    """The decoder's rotary embedding (Qwen2 default RoPE, no scaling).

    Attributes:
        head_dim: D, the rotated width of every key (even).
        theta: ``rope_theta`` (1e6 for Qwen2.5).
    """

    head_dim: int
    theta: float

    def __post_init__(self) -> None:
        if self.head_dim <= 0 or self.head_dim % 2:
            raise ValueError(f"RoPE head_dim must be a positive even number, got {self.head_dim}")
        if not self.theta > 0:
            raise ValueError(f"RoPE theta must be > 0, got {self.theta}")

    @classmethod
    def from_qwen2_config(cls, config: Any) -> RopeSpec:
        """Builds the spec from a ``Qwen2Config`` (or anything with its attribute names).

        Args:
            config: Has ``hidden_size``, ``num_attention_heads``, ``rope_theta`` and optionally ``head_dim``.

        Returns:
            The spec.

        Raises:
            ValueError: If the config asks for RoPE scaling, which this re-basing does not model.
        """
        scaling = getattr(config, "rope_scaling", None)
        if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
            raise ValueError(f"RoPE scaling {scaling} is not supported by KV re-basing (only default RoPE)")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        theta = getattr(config, "rope_theta", None)
        if theta is None:  # transformers 5 keeps it in rope_parameters
            theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
        if theta is None:
            raise ValueError("config has no rope_theta")
        return cls(head_dim=int(head_dim), theta=float(theta))

    def inv_freq(self) -> np.ndarray:
        """Inverse frequencies ``[D/2]`` in fp32, computed like HF's ``compute_default_rope_parameters``."""
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim
        return (1.0 / (self.theta**exponent)).numpy()

    def angles(self, positions: np.ndarray) -> np.ndarray:
        """HF's fp32 angles ``positions[:, None] * inv_freq`` as float64 ``[n, D/2]``."""
        pos = np.asarray(positions, dtype=np.int64).astype(np.float32)
        return (pos[:, None] * self.inv_freq()[None, :]).astype(np.float64)

    def rotation(self, old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos/sin ``[n, D]`` (float64) of the rotation moving keys from positions ``old`` to ``new``.

        Args:
            old: Current positions ``[n]``.
            new: Target positions ``[n]``.

        Returns:
            ``(cos, sin)`` laid out like HF's ``cat(freqs, freqs)`` so they apply with ``rotate_half``.
        """
        diff = self.angles(new) - self.angles(old)  # [n, D/2]
        emb = np.concatenate([diff, diff], axis=-1)  # [n, D]
        return np.cos(emb), np.sin(emb)


def _check_layers(layers: Sequence[tuple[Any, Any]], rope: RopeSpec) -> int:
    """Validates per-layer shapes; returns P."""
    if not layers:
        raise BackendError("a KV state needs at least one layer")
    first = tuple(layers[0][0].shape)
    if len(first) != 4 or first[0] != 1:
        raise BackendError(f"KV layer 0 key has shape {first}; expected [1, kv_heads, P, head_dim]")
    if first[3] != rope.head_dim:
        raise BackendError(f"KV head_dim {first[3]} does not match the RoPE head_dim {rope.head_dim}")
    for i, (k, v) in enumerate(layers):
        if tuple(k.shape) != first or tuple(v.shape) != first:
            raise BackendError(
                f"KV layer {i}: key {tuple(k.shape)} / value {tuple(v.shape)} differ from layer 0's key {first}"
            )
    return int(first[2])


def _check_range(start: int, stop: int, length: int) -> None:
    if not 0 <= start <= stop <= length:
        raise BackendError(f"KV range [{start}, {stop}) is not inside the cache of {length} positions")


def _resolve_positions(positions: np.ndarray | Sequence[int] | None, length: int) -> np.ndarray:
    if positions is None:
        return np.arange(length, dtype=np.int64)
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if pos.shape[0] != length:
        raise BackendError(f"KV state has {length} positions but {pos.shape[0]} position ids were given")
    return pos


def _new_positions(old: np.ndarray, delta: int) -> np.ndarray:
    new = old + int(delta)
    if new.size and int(new.min()) < 0:
        raise BackendError(f"shifting by {delta} would move position {int(old.min())} below 0")
    return new


class NumpyKVState(KVState):
    """A KV cache held as numpy arrays (what ONNX Runtime feeds and returns).

    The arrays are treated as immutable: every operation returns a new state, and arrays may be shared between
    states (cheap ``drop`` of a suffix, no copies on ``append``-free paths).

    Args:
        layers: Per-layer ``(key, value)``, each ``[1, Hkv, P, D]``.
        rope: The decoder's RoPE.
        positions: RoPE position of each cached entry ``[P]``; defaults to ``0 .. P-1``.

    Raises:
        BackendError: If shapes are inconsistent.
    """

    def __init__(
        self,
        layers: Sequence[tuple[np.ndarray, np.ndarray]],
        rope: RopeSpec,
        positions: np.ndarray | Sequence[int] | None = None,
    ) -> None:
        self._length = _check_layers(layers, rope)
        self.layers: list[tuple[np.ndarray, np.ndarray]] = [(k, v) for k, v in layers]
        self.rope = rope
        self.positions = _resolve_positions(positions, self._length)

    @classmethod
    def after_decode(
        cls,
        present: Sequence[tuple[np.ndarray, np.ndarray]],
        rope: RopeSpec,
        past: KVState | None,
        position_ids: np.ndarray,
    ) -> NumpyKVState:
        """The state after a decode call that returned the full ``present`` (past + new entries).

        Args:
            present: Per-layer ``(key, value)`` with ``P + S`` positions.
            rope: The decoder's RoPE.
            past: The state fed to that call (``None`` for a first prefill).
            position_ids: The call's ``[1, S]`` (or ``[S]``) position ids.

        Returns:
            A state whose positions are ``past.positions`` followed by ``position_ids``.
        """
        old = np.zeros(0, dtype=np.int64) if past is None else _positions_of(past)
        new = np.asarray(position_ids, dtype=np.int64).reshape(-1)
        return cls(present, rope, np.concatenate([old, new]))

    @property
    def length(self) -> int:
        """Number of cached positions P."""
        return self._length

    @property
    def nbytes(self) -> int:
        """Bytes of every layer's key and value."""
        return int(sum(k.nbytes + v.nbytes for k, v in self.layers))

    def drop(self, start: int, stop: int) -> NumpyKVState:
        """Returns a cache without entries ``[start, stop)``; later entries keep their positions.

        Args:
            start: First cache index removed.
            stop: One past the last cache index removed.
        """
        _check_range(start, stop, self._length)
        if start == stop:
            return self
        keep = lambda a: np.concatenate([a[:, :, :start], a[:, :, stop:]], axis=2)
        layers = [(keep(k), keep(v)) for k, v in self.layers]
        return NumpyKVState(layers, self.rope, np.concatenate([self.positions[:start], self.positions[stop:]]))

    def shift_positions(self, delta: int, start: int = 0) -> NumpyKVState:
        """Re-rotates the keys of entries ``start ..`` to positions ``+ delta`` (see the module docstring).

        Args:
            delta: Positions to move by (negative to re-base towards 0).
            start: First cache index moved; earlier entries (e.g. the system prompt) stay.

        Raises:
            BackendError: If a position would become negative or ``start`` is out of range.
        """
        _check_range(start, self._length, self._length)
        if delta == 0 or start == self._length:
            return self
        old = self.positions[start:]
        new = _new_positions(old, delta)
        cos, sin = self.rope.rotation(old, new)  # [n, D] float64
        cos32, sin32 = cos.astype(np.float32), sin.astype(np.float32)
        half = self.rope.head_dim // 2
        layers = []
        for k, v in self.layers:
            tail = k[:, :, start:].astype(np.float32)  # rotate in fp32 even for fp16 caches
            rotated = np.concatenate([-tail[..., half:], tail[..., :half]], axis=-1)
            moved = (tail * cos32 + rotated * sin32).astype(k.dtype)
            layers.append((np.concatenate([k[:, :, :start], moved], axis=2), v))
        return NumpyKVState(layers, self.rope, np.concatenate([self.positions[:start], new]))


class TorchKVState(KVState):
    """A KV cache held as torch tensors (PyTorch backend, TensorRT bindings), on any device.

    Tensors are treated as immutable: every operation returns a new state.

    Args:
        layers: Per-layer ``(key, value)``, each ``[1, Hkv, P, D]``.
        rope: The decoder's RoPE.
        positions: RoPE position of each cached entry ``[P]``; defaults to ``0 .. P-1``.

    Raises:
        BackendError: If shapes are inconsistent.
    """

    def __init__(
        self,
        layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
        rope: RopeSpec,
        positions: np.ndarray | Sequence[int] | None = None,
    ) -> None:
        self._length = _check_layers(layers, rope)
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = [(k, v) for k, v in layers]
        self.rope = rope
        self.positions = _resolve_positions(positions, self._length)

    @classmethod
    def after_decode(
        cls,
        present: Sequence[tuple[torch.Tensor, torch.Tensor]],
        rope: RopeSpec,
        past: KVState | None,
        position_ids: np.ndarray | torch.Tensor,
    ) -> TorchKVState:
        """The state after a decode call that returned the full ``present`` (past + new entries).

        Args:
            present: Per-layer ``(key, value)`` with ``P + S`` positions.
            rope: The decoder's RoPE.
            past: The state fed to that call (``None`` for a first prefill).
            position_ids: The call's ``[1, S]`` (or ``[S]``) position ids.

        Returns:
            A state whose positions are ``past.positions`` followed by ``position_ids``.
        """
        if isinstance(position_ids, torch.Tensor):
            position_ids = position_ids.detach().cpu().numpy()
        old = np.zeros(0, dtype=np.int64) if past is None else _positions_of(past)
        new = np.asarray(position_ids, dtype=np.int64).reshape(-1)
        return cls(present, rope, np.concatenate([old, new]))

    @property
    def length(self) -> int:
        """Number of cached positions P."""
        return self._length

    @property
    def nbytes(self) -> int:
        """Bytes of every layer's key and value."""
        return int(sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers))

    def drop(self, start: int, stop: int) -> TorchKVState:
        """Returns a cache without entries ``[start, stop)``; later entries keep their positions."""
        _check_range(start, stop, self._length)
        if start == stop:
            return self
        keep = lambda t: torch.cat([t[:, :, :start], t[:, :, stop:]], dim=2)
        layers = [(keep(k), keep(v)) for k, v in self.layers]
        return TorchKVState(layers, self.rope, np.concatenate([self.positions[:start], self.positions[stop:]]))

    def shift_positions(self, delta: int, start: int = 0) -> TorchKVState:
        """Re-rotates the keys of entries ``start ..`` to positions ``+ delta`` (see the module docstring).

        Args:
            delta: Positions to move by (negative to re-base towards 0).
            start: First cache index moved; earlier entries (e.g. the system prompt) stay.

        Raises:
            BackendError: If a position would become negative or ``start`` is out of range.
        """
        _check_range(start, self._length, self._length)
        if delta == 0 or start == self._length:
            return self
        old = self.positions[start:]
        new = _new_positions(old, delta)
        cos_np, sin_np = self.rope.rotation(old, new)
        device = self.layers[0][0].device
        cos = torch.from_numpy(cos_np).to(device=device, dtype=torch.float32)
        sin = torch.from_numpy(sin_np).to(device=device, dtype=torch.float32)
        half = self.rope.head_dim // 2
        layers = []
        for k, v in self.layers:
            tail = k[:, :, start:].float()  # rotate in fp32 even for fp16 caches
            rotated = torch.cat([-tail[..., half:], tail[..., :half]], dim=-1)
            moved = (tail * cos + rotated * sin).to(k.dtype)
            layers.append((torch.cat([k[:, :, :start], moved], dim=2), v))
        return TorchKVState(layers, self.rope, np.concatenate([self.positions[:start], new]))


def _positions_of(state: KVState) -> np.ndarray:
    """Positions of a state from this module (other KVState kinds cannot be extended here)."""
    positions = getattr(state, "positions", None)
    if positions is None:
        raise BackendError(f"{type(state).__name__} does not track positions; use NumpyKVState or TorchKVState")
    return np.asarray(positions, dtype=np.int64)
