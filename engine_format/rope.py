"""The decoder's rotary embedding (Qwen2 default RoPE), for exact re-basing of cached keys.

Qwen2 caches keys *rotated*: the (i, i + D/2) pair of a key at position ``p`` is rotated by ``a(p) = p * inv_freq[i]``
(fp32 product of the fp32 ``inv_freq`` and the position), applied with ``rotate_half``. Rotations compose, so a key
cached at ``p`` moves to ``p + delta`` by one more rotation. :meth:`RopeSpec.rotation` gives the rotation by
``a_fp32(p + delta) - a_fp32(p)`` (the difference of the angles the model itself computes, taken in float64), so a
re-based key equals what a fresh prefill at ``p + delta`` would have cached up to a few fp32 roundings. Rotating by
``a_fp32(delta)`` instead would add fp32 angle error of order ``ulp(p * inv_freq)`` (~5e-4 rad at p = 8000).

``inv_freq`` is taken from the model (the PyTorch backend reads its rotary buffer; the exporter records it in the
manifest), never recomputed here: numpy's and torch's float32 ``pow`` differ in the last bit for head_dim 64/128,
which would show as exactly that angle error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from engine_format import FormatError


@dataclass(frozen=True)
class RopeSpec:
    """The decoder's rotary embedding.

    Attributes:
        head_dim: D, the rotated width of every key (even).
        theta: ``rope_theta`` (1e6 for Qwen2.5); recorded for reports.
        inv_freq: The model's inverse frequencies ``[D/2]`` float32.
    """

    head_dim: int
    theta: float
    inv_freq: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        if self.head_dim <= 0 or self.head_dim % 2:
            raise FormatError(f"RoPE head_dim must be a positive even number, got {self.head_dim}")
        if not self.theta > 0:
            raise FormatError(f"RoPE theta must be > 0, got {self.theta}")
        inv = np.asarray(self.inv_freq, dtype=np.float32).reshape(-1)
        if inv.shape != (self.head_dim // 2,) or not np.all(np.isfinite(inv)) or not np.all(inv > 0):
            raise FormatError(f"RoPE inv_freq must hold {self.head_dim // 2} finite positive values, got {inv.shape}")
        inv.setflags(write=False)
        object.__setattr__(self, "inv_freq", inv)

    @classmethod
    def from_list(cls, head_dim: int, theta: float, inv_freq: Sequence[float]) -> RopeSpec:
        """Builds the spec from recorded values (the manifest stores ``inv_freq`` as a list of floats)."""
        return cls(int(head_dim), float(theta), np.asarray(inv_freq, dtype=np.float32))

    def angles(self, positions: np.ndarray) -> np.ndarray:
        """The model's fp32 angles ``positions[:, None] * inv_freq`` as float64 ``[n, D/2]``."""
        pos = np.asarray(positions, dtype=np.int64).astype(np.float32)
        return (pos[:, None] * self.inv_freq[None, :]).astype(np.float64)

    def rotation(self, old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos/sin ``[n, D/2]`` (float32) of the rotation moving keys from positions ``old`` to ``new``.

        Apply to a key's halves ``(k1, k2) = (k[..., :D/2], k[..., D/2:])`` as ``(k1 c - k2 s, k2 c + k1 s)``, which is
        ``k * cat(c, c) + rotate_half(k) * cat(s, s)``.
        """
        diff = self.angles(new) - self.angles(old)  # [n, D/2], float64
        return np.cos(diff).astype(np.float32), np.sin(diff).astype(np.float32)
