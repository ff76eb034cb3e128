"""Attention-based frame scoring and top-K selection per chunk (release: ``arch.py::select_frame_in_chunk``).

Dimensions: C chunks (2), T frames per chunk (8), P patch tokens per frame (196), E CLIP width (768), K kept (4).

For each chunk the 8x196 CLIP patch features X (pre-projection, no learned weights) attend to each other:
W = softmax(X Xᵀ / √E) over keys; a frame's score is the attention mass its keys receive, summed over all queries.
The release computes this as W times a one-hot token->frame matrix; the column-sum form here is the same sum in
another order (differences ~1e-5 on scores of ~200, inside the golden tolerance).
"""

from __future__ import annotations

import math

import torch


def score_frames(chunk_features: torch.Tensor) -> torch.Tensor:
    """Scores every frame of every chunk by the attention mass it receives.

    Args:
        chunk_features: CLIP patch features [C, T, P, E].

    Returns:
        Scores [C, T] (fp32); each row sums to T * P.
    """
    c, t, p, e = chunk_features.shape
    x = chunk_features.float().reshape(c, t * p, e)  # [C, T*P, E]
    logits = torch.matmul(x, x.transpose(1, 2)) / math.sqrt(e)  # [C, T*P, T*P] queries x keys
    weights = torch.softmax(logits, dim=-1)
    received = weights.sum(dim=1)  # [C, T*P]: mass each key receives over all queries
    return received.reshape(c, t, p).sum(dim=-1)  # [C, T]


def select_top_k(scores: torch.Tensor, k: int = 4, largest: bool = True) -> torch.Tensor:
    """Picks the K best frames per chunk and sorts them by time.

    Args:
        scores: Frame scores [C, T].
        k: Frames kept per chunk.
        largest: Keep the largest scores (the release default) or the smallest.

    Returns:
        Int64 indices within each chunk [C, K], ascending.
    """
    if k > scores.shape[-1]:
        raise ValueError(f"top_k={k} exceeds the {scores.shape[-1]} frames of a chunk")
    idx = torch.topk(scores, k=k, dim=-1, largest=largest).indices
    return torch.sort(idx, dim=-1).values


def gather_selected_frames(video_pixels: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Gathers the chosen video-branch frames as one clip, chunk 0's picks then chunk 1's.

    Args:
        video_pixels: Video-branch pixels of all frames [C*T, 3, S, S].
        selected: Indices within each chunk [C, K].

    Returns:
        The selected frames [C*K, 3, S, S], in chunk-major, time-sorted order.
    """
    c, k = selected.shape
    t = video_pixels.shape[0] // c
    flat = (torch.arange(c, device=selected.device)[:, None] * t + selected).reshape(-1)  # [C*K]
    return video_pixels[flat]
