"""``sdpa_causal``: the decoder's attention through SDPA without a mask tensor (``backend.attention: sdpa_causal``).

transformers' ``sdpa`` builds a boolean ``[S, P+S]`` mask for every call onto a past (the window append: 2420 x up to
12k entries per layer), which keeps SDPA off its flash kernel, and expands the two KV heads to all query heads. The
streaming context is purely causal over contiguous cache positions, so no mask is needed:

* **S > 1** (prefill, window append): a lower-right causal bias (``torch.nn.attention.bias.causal_lower_right``),
  which SDPA runs with the flash (or memory-efficient) kernel on CUDA and as a materialised mask on the CPU;
* **S = 1** (decode steps): no mask at all, and the G query heads of each KV head are folded into the query axis
  (``[B, Hq, 1, D]`` -> ``[B, Hkv, G, D]``), so the keys and values are read once, not copied G times. A mask given by
  the caller (the CUDA-graph decode step's ``[1, 1, 1, C]`` mask over the static cache) is applied as it is.

Same math as ``sdpa`` (tested against it on the CPU, ``tests/runtime/test_torch_fastpath.py``). Registered with
transformers' ``AttentionInterface`` under :data:`ATTENTION_NAME`; no mask function is registered for the name, so
transformers passes ``attention_mask=None`` unless the caller supplies a 4-D mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

ATTENTION_NAME = "sdpa_causal"
"""The attention implementation name (``model.lm.set_attn_implementation``)."""


def causal_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Attention of the S new queries over the P+S cached keys (transformers' attention-function signature).

    Args:
        module: The attention module (unused; part of the interface).
        query: ``[B, Hq, S, D]``.
        key: ``[B, Hkv, P+S, D]`` (or the whole static cache in a graphed decode step).
        value: Same shape as ``key``.
        attention_mask: ``None``, or a boolean ``[B or 1, 1, S, KV]`` mask supplied by the caller.
        dropout: Must be 0 (inference).
        scaling: Softmax scale (the module's ``head_dim ** -0.5``).
        **kwargs: Other transformers arguments (ignored).

    Returns:
        ``(output [B, S, Hq, D], None)``.

    Raises:
        ValueError: For dropout, or a mask with more than one query (this function is for causal decoding only).
    """
    if dropout:
        raise ValueError(f"{ATTENTION_NAME}: dropout {dropout} is not supported (inference only)")
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    if length == 1:
        # [B, Hq, 1, D] -> [B, Hkv, G, D]: query heads h = kv * G + g share key head kv (repeat_kv's order).
        folded = query.reshape(batch, kv_heads, groups, dim)
        out = F.scaled_dot_product_attention(folded, key, value, attn_mask=attention_mask, scale=scaling)
        return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None
    if attention_mask is not None:
        raise ValueError(f"{ATTENTION_NAME}: a mask with {length} queries is not supported (causal decoding only)")
    if groups > 1:  # flash / memory-efficient kernels with a causal bias take equal head counts
        key = key[:, :, None].expand(batch, kv_heads, groups, *key.shape[2:]).reshape(batch, heads, -1, dim)
        value = value[:, :, None].expand(batch, kv_heads, groups, *value.shape[2:]).reshape(batch, heads, -1, dim)
    bias = causal_lower_right(length, key.shape[2])
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Registers :func:`causal_sdpa_attention` with transformers (idempotent) and returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, causal_sdpa_attention)
    return ATTENTION_NAME
