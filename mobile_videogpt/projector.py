"""ETP, the "Efficient Token Projector" of both branches (release: ``multimodal_projector/builder.py``).

Dimensions: B items, N input tokens (196 = 14x14), I input width (576 video / 768 image), C LLM hidden size,
G output grid side (7 video / 12 image).

Order, as released: DenseMLP (Linear, exact-erf GELU, Linear) -> view the N tokens as a √N x √N grid (token n at row
n // √N, column n % √N) -> adaptive average pool to G x G -> PEG (depthwise 3x3 conv + residual) -> flatten row-major.

For video the 196 tokens of a chunk are 4 frames x 49 pooled tokens, so the 14x14 "grid" is not spatial: an output
cell can mix two rows of a frame, or two frames. This is what the release does and is copied, not fixed.

Deviation: the adaptive pool is written as a constant [G*G, N] averaging matrix built with PyTorch's window rule
(start = floor(i*14/G), end = ceil((i+1)*14/G)). It is the same average (tested against ``F.adaptive_avg_pool2d``)
and exports to ONNX/TensorRT as one MatMul, where a 14 -> 12 adaptive pool does not export.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def adaptive_pool_matrix(in_side: int, out_side: int) -> torch.Tensor:
    """Builds the [out_side², in_side²] matrix equal to 2-D adaptive average pooling on a flattened grid.

    Args:
        in_side: Input grid side.
        out_side: Output grid side.

    Returns:
        Float32 matrix whose row o averages the input cells of output cell o.
    """
    weights_1d = torch.zeros(out_side, in_side, dtype=torch.float64)
    for i in range(out_side):
        start = (i * in_side) // out_side
        end = -((-(i + 1) * in_side) // out_side)  # ceil
        weights_1d[i, start:end] = 1.0 / (end - start)
    return torch.kron(weights_1d, weights_1d).float()  # separable: rows x columns


class DenseMLP(nn.Module):
    """Linear -> GELU -> Linear; attribute ``mlp`` matches the checkpoint keys ``mlp.mlp.{0,2}``."""

    def __init__(self, in_features: int, hidden: int) -> None:
        """Builds the MLP.

        Args:
            in_features: Input width I.
            hidden: Output width C.
        """
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the MLP to [..., I] -> [..., C]."""
        return self.mlp(x)


class PEG(nn.Module):
    """Positional encoding generator: depthwise 3x3 conv (``peg.peg.0``) plus residual."""

    def __init__(self, channels: int) -> None:
        """Builds the depthwise conv.

        Args:
            channels: Channel count C.
        """
        super().__init__()
        self.peg = nn.Sequential(nn.Conv2d(channels, channels, 3, stride=1, padding=1, groups=channels, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the conv with a residual to [B, C, G, G]."""
        return self.peg(x) + x


class ETProjector(nn.Module):
    """The ETP projector (``mm_projector`` for video, ``image_mm_projector`` for images)."""

    def __init__(self, in_features: int, hidden: int, out_side: int, in_side: int = 14) -> None:
        """Builds the projector.

        Args:
            in_features: Input width I (576 or 768).
            hidden: LLM hidden size C.
            out_side: Pooled grid side G (7 or 12).
            in_side: Input grid side (14).
        """
        super().__init__()
        self.in_side = in_side
        self.out_side = out_side
        self.mlp = DenseMLP(in_features, hidden)
        self.peg = PEG(hidden)
        # Not a checkpoint tensor: derived from the geometry, so kept out of the state dict.
        self.register_buffer("pool_matrix", adaptive_pool_matrix(in_side, out_side), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projects tokens.

        Args:
            x: Input tokens [B, N, I] with N = in_side².

        Returns:
            Projected tokens [B, G*G, C].
        """
        b, n, _ = x.shape
        if n != self.in_side**2:
            raise ValueError(f"ETP expects {self.in_side**2} tokens per item, got {n}")
        x = self.mlp(x)  # [B, N, C]
        x = torch.matmul(self.pool_matrix.to(x.dtype), x)  # [B, G*G, C]: adaptive average pool
        g = self.out_side
        x = x.transpose(1, 2).reshape(b, -1, g, g)  # [B, C, G, G]
        x = self.peg(x)
        return x.flatten(2).transpose(1, 2)  # [B, G*G, C]


def pool_video_tokens(tokens: torch.Tensor, out_side: int, num_chunks: int) -> torch.Tensor:
    """2x2 average pool of each frame's 14x14 VideoMamba tokens, regrouped per chunk.

    Args:
        tokens: VideoMamba patch tokens [C*K, P, D] (P = 196, frame-major slots).
        out_side: Pooled side (7).
        num_chunks: Number of chunks C.

    Returns:
        Pooled tokens per chunk [C, K*out_side², D], frame-major within a chunk.
    """
    frames, p, d = tokens.shape
    side = math.isqrt(p)
    x = tokens.reshape(frames, side, side, d).permute(0, 3, 1, 2)  # [F, D, 14, 14]
    x = nn.functional.adaptive_avg_pool2d(x, (out_side, out_side))  # 14 -> 7 is an exact 2x2 average
    x = x.permute(0, 2, 3, 1).reshape(frames, out_side * out_side, d)  # [F, 49, D]
    return x.reshape(num_chunks, -1, d)  # [C, K*49, D]
