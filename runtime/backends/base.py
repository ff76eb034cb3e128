"""The one backend interface the streaming session, the parity harness and the benchmarks use.

Two levels, as in Polygraphy / TensorRT-LLM:

* ``Engine``: one graph (an ONNX Runtime session or a TensorRT engine) with ``infer(dict[name, array]) ->
  dict[name, array]``. Inputs are checked against the engine's own I/O table before running; the duration of the last
  call is recorded inside (``last_inference_ms``).
* ``ModelBackend``: the stage-level API built from the engines plus a little host code (top-K, embedding lookup).
  Every backend (``pytorch``, ``onnxruntime``, ``tensorrt``) implements exactly these methods. Pixels and logits cross
  the boundary as numpy; visual features stay in the backend's own arrays (numpy on the CPU, torch tensors on a GPU)
  and go back into ``decode`` as they are, so a GPU backend never copies them to the host; the KV cache is owned by
  the backend (:class:`~runtime.backends.kv.KVCache`, preallocated, updated in place).

Shapes (H hidden size, V vocabulary rows, F frames, E CLIP width, P cached positions, S new positions):
    upload_frames   the window's RGB uint8 frames [H,W,3] -> the backend's batch of them (host: the list itself)
    preprocess_images  uploaded frames, positions -> CLIP-branch pixels [F,3,224,224] (host numpy by default)
    preprocess_video   uploaded frames, positions -> video-branch pixels [8,3,224,224] (host numpy by default)
    encode_images   pixels [F,3,224,224] f32 -> ImageFeatures(clip_features [F,196,E], image_tokens [F,144,H], clip_mean)
    select_frames   clip_features [16,196,E] -> (scores [2,8] f32, selected [2,4] int64, ascending)
    encode_video    selected video-branch pixels [8,3,224,224] f32 -> video_tokens [2,49,H]
    allocate_kv     capacity -> KVCache
    decode          segments (token-id lists and feature arrays [..., H]) appended to the KVCache -> logits [V] f32
    embed_tokens    ids [S] -> [S,H] f32 (rows of the tied embedding table; for checks)

Outputs of ``encode_images`` / ``encode_video`` are the caller's to keep (never reused buffers).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from engine_format import FormatError
from engine_format.generation import CheckpointGeneration
from engine_format.geometry import ModelFacts
from engine_format.io import TensorSpec
from engine_format.preprocess import ClipPreprocessConfig, clip_branch, video_branch
from engine_format.tokenizer import Tokenizer
from engine_format.vocab import ActionTokenIds
from runtime.backends.kv import KVCache

Array = Any
"""A backend's own array type: numpy on the CPU backends, torch tensors (possibly CUDA) on the others."""

Segment = Sequence[int] | Array
"""One piece of a decoder input: a list/tuple of token ids, or feature rows ``[..., H]`` in the backend's arrays."""


class BackendError(RuntimeError):
    """A backend cannot be created or run (missing engine file, wrong I/O, unavailable library or device)."""


class Engine(ABC):
    """One runnable graph."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    last_inference_ms: float = 0.0

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Validates names, dtypes and static dimensions of ``feeds`` against ``inputs``.

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
            if str(arr.dtype).removeprefix("torch.") != spec.dtype:
                raise BackendError(f"{self.name}: input {name} has dtype {arr.dtype}, engine expects {spec.dtype}")
            if len(arr.shape) != len(spec.shape) or any(
                isinstance(d, int) and d != a for d, a in zip(spec.shape, arr.shape)
            ):
                raise BackendError(f"{self.name}: input {name} has shape {tuple(arr.shape)}, engine expects {spec.shape}")

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checks the feeds, runs the graph and records its duration.

        Returns:
            Output name -> array (fresh arrays the caller may keep).
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
        clip_features: CLIP patch features [F, 196, E] (the frame selector's input), backend arrays.
        image_tokens: Image-ETP tokens [F, 144, H], backend arrays.
        clip_mean: Mean CLIP feature per frame [F, E] float32 on the host (the motion policy's embedding).
    """

    clip_features: Array
    image_tokens: Array
    clip_mean: np.ndarray


class ModelBackend(ABC):
    """Stage-level API of one backend; see the module docstring for shapes.

    Use as a context manager (``with create_backend(...) as backend:``) or call :meth:`close`.

    Attributes:
        name: ``pytorch``, ``onnxruntime`` or ``tensorrt``.
        precision: ``fp32`` or ``fp16``.
        device: Where the backend computes (``cpu``, ``cuda:0``).
        facts: The model's geometry and vocabulary facts.
        clip_preprocess: The checkpoint's CLIP preprocessing values (every backend preprocesses with these).
        action_token_ids: Ids of ``<next>``, ``<feedback>``, ``<correct>``.
        random_weights: The model has random weights (its actions and text are meaningless).
        tokenizer_dir: Directory with the model's (extended) ``tokenizer.json``.
        generation: The checkpoint's ``generation_config.json`` (repetition penalty, stop ids, budget); the
            session applies it under the streaming config's ``generation.*`` keys. Empty: no file.
    """

    name: str
    precision: str
    device: str
    facts: ModelFacts
    clip_preprocess: ClipPreprocessConfig
    action_token_ids: ActionTokenIds
    random_weights: bool
    tokenizer_dir: Path
    generation: CheckpointGeneration = CheckpointGeneration()

    @property
    def hidden_size(self) -> int:
        """H."""
        return self.facts.hidden_size

    @property
    def vocab_size(self) -> int:
        """V (the logits width)."""
        return self.facts.vocab_size

    @property
    def max_position_embeddings(self) -> int:
        """The decoder's RoPE range; the streaming context never uses positions at or beyond it."""
        return self.facts.max_position_embeddings

    def upload_frames(self, images: Sequence[np.ndarray]) -> Any:
        """The window's RGB uint8 frames ``[H, W, 3]``, handed over once for both preprocessing branches.

        The default (host preprocessing, ``engine_format.preprocess``) keeps the list as it is; a backend that
        preprocesses on its device copies the frames there once.
        """
        return list(images)

    def preprocess_images(self, uploaded: Any, positions: Sequence[int]) -> Array:
        """CLIP-branch pixels ``[F, 3, 224, 224]`` of the uploaded frames at ``positions`` (the checkpoint's values).

        The default is the reference, ``engine_format.preprocess.clip_branch`` on the host.
        """
        return clip_branch(np.stack([uploaded[i] for i in positions]), self.clip_preprocess)

    def preprocess_video(self, uploaded: Any, positions: Sequence[int]) -> Array:
        """Video-branch pixels ``[K, 3, 224, 224]`` of the uploaded frames at ``positions`` (slot order).

        The default is the reference, ``engine_format.preprocess.video_branch`` on the host.
        """
        return video_branch(np.stack([uploaded[i] for i in positions]))

    @abstractmethod
    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        """CLIP + image ETP per frame."""

    @abstractmethod
    def select_frames(self, clip_features: Array) -> tuple[np.ndarray, np.ndarray]:
        """Per-chunk frame scores and the top-K indices (ascending)."""

    @abstractmethod
    def encode_video(self, video_pixels: np.ndarray) -> Array:
        """VideoMamba + pooling + video ETP on the 8 selected frames."""

    @abstractmethod
    def allocate_kv(self, capacity: int) -> KVCache:
        """A decoder KV cache for up to ``capacity`` positions, owned by this backend."""

    @abstractmethod
    def decode(self, segments: Sequence[Segment], kv: KVCache) -> np.ndarray:
        """Appends the segments' rows to ``kv`` (positions from ``kv.next_position``) and returns the logits ``[V]``.

        One call serves the first prefill (empty cache), a window append and single-token decoding.
        """

    @abstractmethod
    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Rows of the tied embedding table ``[S, H]`` float32 (for checks)."""

    def load_tokenizer(self) -> Tokenizer:
        """The model's tokenizer (``tokenizer_dir/tokenizer.json``), checked to hold the action tokens at their ids.

        Raises:
            BackendError: If the file is missing or invalid, or the action tokens are elsewhere.
        """
        try:
            tokenizer = Tokenizer.from_dir(self.tokenizer_dir)
            tokenizer.check_action_tokens(self.action_token_ids)
        except FormatError as exc:
            raise BackendError(f"{self.name} backend: {exc}") from exc
        return tokenizer

    def stack(self, arrays: Sequence[Array]) -> Array:
        """Stacks per-frame feature arrays (cache entries) into one batch, in the backend's arrays."""
        return np.stack(arrays)

    def to_host(self, array: Array) -> np.ndarray:
        """A float32 numpy copy or view of a backend array (checks and reports; not on the hot path)."""
        return np.asarray(array, dtype=np.float32)

    def stage_times_ms(self) -> dict[str, float]:
        """Duration of the last call of each stage (keys: ``image_encoder``, ``frame_selection``,
        ``video_encoder``, ``decoder``)."""
        return {}

    def close(self) -> None:
        """Releases engines."""

    def __enter__(self) -> ModelBackend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


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


def check_token_ids(ids: Sequence[int], vocab_size: int) -> np.ndarray:
    """Token ids as int64, checked to lie in ``[0, V)``.

    Raises:
        BackendError: If an id is outside ``[0, V)``.
    """
    index = np.asarray(list(ids), dtype=np.int64)
    if index.size and (int(index.min()) < 0 or int(index.max()) >= vocab_size):
        raise BackendError(f"token ids must lie in [0, {vocab_size}); got min {index.min()}, max {index.max()}")
    return index


def host_embeds(table: np.ndarray, segments: Sequence[Segment], hidden_size: int) -> np.ndarray:
    """The decoder input ``[1, S, H]`` float32 of host segments: table rows for id lists, arrays reshaped to rows.

    Args:
        table: The tied embedding table ``[V, H]`` (may be a memory map, fp32 or fp16; rows are upcast exactly).
        segments: Id lists and numpy feature arrays ``[..., H]``.
        hidden_size: H.

    Raises:
        BackendError: For an id outside the table, a feature array of another width, or no rows at all.
    """
    rows = []
    for segment in segments:
        if isinstance(segment, (list, tuple)):
            if segment:
                rows.append(np.asarray(table[check_token_ids(segment, table.shape[0])], dtype=np.float32))
            continue
        array = np.asarray(segment)
        if array.shape[-1] != hidden_size:
            raise BackendError(f"decode: a feature segment has width {array.shape[-1]}, the decoder {hidden_size}")
        rows.append(array.reshape(-1, hidden_size).astype(np.float32, copy=False))
    if not rows:
        raise BackendError("decode: no input rows (every segment is empty)")
    return np.concatenate(rows, axis=0)[None]
