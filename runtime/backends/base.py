"""The one backend interface the streaming runtime, the parity harness and the benchmarks use.

Two levels, as in Polygraphy / TensorRT-LLM:

* ``Engine``: one graph (an ONNX Runtime session, a TensorRT engine, or a PyTorch export-wrapper module) with
  ``infer(dict[name, array]) -> dict[name, array]``. Inputs are checked against the engine's own I/O table before
  running; the duration of the last call is recorded inside (``last_inference_ms``). Outputs may be reused buffers:
  copy them if you keep them across calls.
* ``ModelBackend``: the stage-level API built from the engines plus a little host code (top-K, embedding lookup).
  Every backend (``pytorch``, ``onnxruntime``, ``tensorrt``) implements exactly these methods, with numpy arrays at
  the boundary except the KV cache, which stays in the backend's own storage behind ``KVState``.

Shapes (H hidden size, V vocabulary rows, F frames, P past length, S new positions):
    encode_images   context_pixels [F,3,224,224] f32 -> ImageFeatures(clip_features [F,196,768], image_tokens [F,144,H])
    select_frames   clip_features [16,196,768] -> (scores [2,8] f32, selected [2,4] int64, ascending)
    encode_video    selected video-branch pixels [8,3,224,224] f32 -> video_tokens [2,49,H]
    embed_tokens    ids [S] -> [S,H] (rows of the tied embedding table)
    decode          inputs_embeds [1,S,H], KVState|None, position_ids [1,S] int64 -> (logits [1,V] f32, KVState)
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mobile_videogpt.vocab import ActionTokenIds


class BackendError(RuntimeError):
    """A backend cannot be created or run (missing engine file, wrong I/O, unavailable library or device)."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Attributes:
        name: Graph tensor name.
        dtype: numpy dtype name ("float32", "float16", "int64", ...).
        shape: Dimensions; a str is a symbolic (dynamic) dimension.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]


class Engine(ABC):
    """One runnable graph."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    last_inference_ms: float = 0.0

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Validates names, dtypes and static dimensions of ``feeds`` against ``inputs``.

        Args:
            feeds: Input name -> array.

        Raises:
            BackendError: Naming the offending input.
        """
        expected = {s.name: s for s in self.inputs}
        missing = sorted(set(expected) - set(feeds))
        unknown = sorted(set(feeds) - set(expected))
        if missing or unknown:
            raise BackendError(f"{self.name}: missing inputs {missing}, unknown inputs {unknown}")
        for name, spec in expected.items():
            arr = feeds[name]
            if str(arr.dtype) != spec.dtype:
                raise BackendError(f"{self.name}: input {name} has dtype {arr.dtype}, engine expects {spec.dtype}")
            if len(arr.shape) != len(spec.shape) or any(
                isinstance(d, int) and d != a for d, a in zip(spec.shape, arr.shape)
            ):
                raise BackendError(f"{self.name}: input {name} has shape {arr.shape}, engine expects {spec.shape}")

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checks the feeds, runs the graph and records its duration.

        Args:
            feeds: Input name -> array.

        Returns:
            Output name -> array.
        """
        self.check_feeds(feeds)
        start = time.perf_counter()
        out = self._run(feeds)
        self.last_inference_ms = (time.perf_counter() - start) * 1e3
        return out

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the graph on validated feeds."""

    def close(self) -> None:
        """Releases the engine's resources."""


@dataclass(frozen=True)
class ImageFeatures:
    """Per-frame image-encoder outputs (what the runtime caches per frame).

    Attributes:
        clip_features: CLIP patch features [F, 196, 768] (the frame selector's input).
        image_tokens: Image-ETP tokens [F, 144, H].
    """

    clip_features: np.ndarray
    image_tokens: np.ndarray


class KVState(ABC):
    """A decoder KV cache owned by one backend (numpy for ONNX Runtime, torch tensors for PyTorch/TensorRT)."""

    @property
    @abstractmethod
    def length(self) -> int:
        """Number of cached positions P."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes held by all layers' keys and values."""

    @abstractmethod
    def drop(self, start: int, stop: int) -> KVState:
        """Returns a cache without positions [start, stop) (eviction of a window)."""

    @abstractmethod
    def shift_positions(self, delta: int, start: int = 0) -> KVState:
        """Returns a cache whose keys from cache index ``start`` on are re-rotated by ``delta`` RoPE positions.

        Entries before ``start`` (the fixed system prefix) keep their positions, so after ``drop`` of an evicted
        window ``shift_positions(-window_len, start=window_start)`` closes the gap and positions stay contiguous.
        Exact for RoPE (see ``runtime.backends.kv``).
        """


class ModelBackend(ABC):
    """Stage-level API of one backend; see the module docstring for shapes."""

    name: str
    precision: str
    hidden_size: int
    vocab_size: int
    action_token_ids: ActionTokenIds | None
    random_weights: bool
    #: The decoder's RoPE range; the streaming context never uses positions at or beyond it. ``None`` = unknown.
    max_position_embeddings: int | None = None

    @abstractmethod
    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        """CLIP + image ETP per frame."""

    @abstractmethod
    def select_frames(self, clip_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-chunk frame scores and the top-K indices (ascending)."""

    @abstractmethod
    def encode_video(self, video_pixels: np.ndarray) -> np.ndarray:
        """VideoMamba + pooling + video ETP on the 8 selected frames."""

    @abstractmethod
    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Rows of the tied embedding table."""

    @abstractmethod
    def decode(
        self, inputs_embeds: np.ndarray, past: KVState | None, position_ids: np.ndarray
    ) -> tuple[np.ndarray, KVState]:
        """Prefill, append or single-token decode: last-position logits and the new cache."""

    def stage_times_ms(self) -> dict[str, float]:
        """Duration of the last call of each engine (for benchmarks)."""
        return {}

    def close(self) -> None:
        """Releases engines."""


def select_top_k(scores: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """Top-K frames per chunk sorted by time: the numpy twin of ``mobile_videogpt.frame_selection.select_top_k``.

    Host code of the exported backends (the frame-selector graph returns only the scores). For distinct scores the
    result equals the reference's ``torch.topk`` + ``sort`` (tested); exactly equal scores, where ``torch.topk``'s
    choice is unspecified, are resolved deterministically by taking the lower index first (ONNX ``TopK``'s rule).

    Args:
        scores: Frame scores [C, T].
        k: Frames kept per chunk.
        largest: Keep the largest scores (the release) or the smallest.

    Returns:
        Int64 indices within each chunk [C, K], ascending.

    Raises:
        BackendError: If ``scores`` is not 2-D or ``k`` is not in [1, T].
    """
    if scores.ndim != 2 or not 1 <= k <= scores.shape[1]:
        raise BackendError(f"select_top_k: scores {scores.shape} must be [C, T] with 1 <= k={k} <= T")
    order = np.argsort(-scores if largest else scores, axis=-1, kind="stable")[:, :k]
    return np.sort(order, axis=-1).astype(np.int64)


def lookup_rows(table: np.ndarray, ids: Sequence[int], vocab_size: int) -> np.ndarray:
    """Rows of a tied embedding table, upcast to float32 (exact for fp16 rows).

    Args:
        table: [V, H] table (may be a memory map).
        ids: Token ids.
        vocab_size: V.

    Returns:
        [S, H] float32.

    Raises:
        BackendError: If an id is outside ``[0, V)``.
    """
    index = np.asarray(list(ids), dtype=np.int64)
    if index.size and (int(index.min()) < 0 or int(index.max()) >= vocab_size):
        raise BackendError(f"token ids must lie in [0, {vocab_size}); got min {index.min()}, max {index.max()}")
    return np.asarray(table[index], dtype=np.float32)


def check_decode_inputs(inputs_embeds: np.ndarray, position_ids: np.ndarray, hidden_size: int) -> np.ndarray:
    """Validates a ``decode`` call's shapes (batch 1) and returns the positions as int64.

    Args:
        inputs_embeds: [1, S, H].
        position_ids: [1, S].
        hidden_size: H.

    Returns:
        position_ids as int64 [1, S].

    Raises:
        BackendError: Naming the offending shape.
    """
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[0] != 1 or inputs_embeds.shape[2] != hidden_size:
        raise BackendError(f"decode: inputs_embeds has shape {inputs_embeds.shape}, expected [1, S, {hidden_size}]")
    positions = np.asarray(position_ids, dtype=np.int64)
    if positions.shape != inputs_embeds.shape[:2]:
        raise BackendError(f"decode: position_ids {positions.shape} must be [1, S] = {inputs_embeds.shape[:2]}")
    return positions
