"""CUDA graphs for the PyTorch backend (``backend.cuda_graphs: true``): the encoders per batch size, the decode step.

Part of the ``pytorch`` backend (imported by ``torch_backend`` only). At batch 1 the GPU waits on the host: the eager
decode step launches ~300 small kernels through transformers' Python, VideoMamba thousands. A CUDA graph records a
call's kernels once per input shape and replays them with one launch:

* :class:`GraphedCall`: a function of one tensor (CLIP + image ETP; VideoMamba + pooling + video ETP), one graph per
  input shape (so one per image batch size), captured on first use. Inputs are copied into the graph's static input
  and outputs cloned out of its static outputs, so callers keep fresh tensors, as the backend API promises.
* :class:`GraphedDecodeStep`: one new position appended to a :class:`~runtime.backends.kv_torch.TorchCacheKV`. The
  graph is captured once per cache (it holds the cache buffers' addresses; eviction and re-basing move entries inside
  them in place, so it stays valid) with the cache in static-write mode: the new key/value go to the slot given by a
  device index, attention reads every one of the C slots under a ``[1, 1, 1, C]`` mask ``slot <= index`` built inside
  the graph, and the Python length is recorded after each replay.

Every graph is captured after warm-up runs on a side stream (kernel selection, Triton compilation) and shares one
memory pool. Capture costs are logged. Graphs exist only on CUDA: the backend refuses the setting elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from runtime.backends.kv_torch import TorchCacheKV

logger = logging.getLogger(__name__)

WARMUP_RUNS = 2
"""Eager runs on a side stream before each capture."""


def _warm_up_and_capture(fn: Callable[[], Any], pool: Any, what: str) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Runs ``fn`` :data:`WARMUP_RUNS` times on a side stream, then captures it; returns the graph and its outputs."""
    start = time.perf_counter()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_RUNS):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        outputs = fn()
    torch.cuda.synchronize()
    logger.info("captured a CUDA graph for %s in %.0f ms", what, (time.perf_counter() - start) * 1e3)
    return graph, outputs


class GraphedCall:
    """``fn(x)`` replayed from a CUDA graph per input shape.

    Args:
        fn: A function of one device tensor returning a tensor or a tuple of tensors (no host synchronisation inside).
        name: For the log.
        pool: The memory pool shared by the backend's graphs (``torch.cuda.graph_pool_handle()``).
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any], name: str, pool: Any) -> None:
        self.fn, self.name, self.pool = fn, name, pool
        self._graphs: dict[tuple[tuple[int, ...], torch.dtype], tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]] = {}

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Input shapes captured so far."""
        return [shape for shape, _ in self._graphs]

    def __call__(self, x: torch.Tensor) -> Any:
        """Copies ``x`` into the static input, replays, and returns clones of the outputs."""
        key = (tuple(x.shape), x.dtype)
        entry = self._graphs.get(key)
        if entry is None:
            static_in = x.clone()
            graph, static_out = _warm_up_and_capture(lambda: self.fn(static_in), self.pool,
                                                     f"{self.name} {tuple(x.shape)}")
            entry = self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        if isinstance(static_out, tuple):
            return tuple(t.clone() for t in static_out)
        return static_out.clone()


class GraphedDecodeStep:
    """One decoder position appended to a cache, replayed from a CUDA graph captured for that cache.

    Args:
        forward: ``forward(embeds [1,1,H], position_ids [1,1], mask [1,1,1,C], cache) -> logits [1,V]`` (the model's
            one decoder call with a 4-D mask).
        kv: The cache (its buffers are bound into the graph).
        hidden_size: H.
        dtype: The decoder's dtype.
        pool: The backend's graph memory pool.
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor],
        kv: TorchCacheKV,
        hidden_size: int,
        dtype: torch.dtype,
        pool: Any,
    ) -> None:
        device = kv.cache.buffers()[0][0].device
        self.kv = kv
        self.embeds = torch.zeros(1, 1, hidden_size, dtype=dtype, device=device)
        self.position_ids = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        slots = torch.arange(kv.capacity, device=device)

        self._step = lambda: forward(self.embeds, self.position_ids, (slots <= self.slot)[None, None, None, :],
                                     kv.cache)  # the mask: the live slots and the new one
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        self.pool = pool

    def __call__(self, embeds: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
        """Appends one position (RoPE position ``positions[0]``) at slot ``kv.length``; returns the logits ``[1, V]``
        (the graph's static output: read it before the next call). The caller records the append.

        The first call captures the graph; its warm-up runs write the same inputs to the same free slot, so they
        leave the cache as the replay does.
        """
        self.embeds.copy_(embeds.reshape(self.embeds.shape))
        self.position_ids.fill_(int(positions[0]))
        self.slot.fill_(self.kv.length)
        if self.graph is None:
            self.kv.cache.set_static_index(self.slot)
            try:
                self.graph, self.logits = _warm_up_and_capture(self._step, self.pool,
                                                               f"decode step (KV capacity {self.kv.capacity})")
            finally:
                self.kv.cache.set_static_index(None)  # eager calls (window appends) use the dynamic views again
        self.graph.replay()
        assert self.logits is not None
        return self.logits
