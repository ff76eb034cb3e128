"""The ``pytorch`` backend: the reference model's stage methods behind the ModelBackend API.

It is the numerical reference the exported backends are compared with, and the fallback that runs without exported
engines. Arrays cross the boundary as numpy (float32 for features and logits, int64 for indices); the KV cache stays
in torch tensors (:class:`~runtime.backends.kv.TorchKVState`), so appending a window never copies the past to numpy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from export.manifest import Manifest, ManifestError
from mobile_videogpt.checkpoint import load_model
from mobile_videogpt.synthetic import is_synthetic
from mobile_videogpt.vocab import ActionTokenIds, load_action_tokens, plan_action_token_ids
from runtime.backends.base import BackendError, ImageFeatures, KVState, ModelBackend
from runtime.backends.kv import RopeSpec, TorchKVState

logger = logging.getLogger(__name__)

PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class TorchBackend(ModelBackend):
    """The reference model (``mobile_videogpt.model.MobileVideoGPT``) as a streaming backend.

    Args:
        model_dir: Checkpoint directory (config.json, safetensors, tokenizer files).
        clip_dir: CLIP directory.
        precision: ``fp32`` or ``fp16``; fp16 needs a CUDA device (CPU half matmuls are slow and not the reference).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        scan_impl: Selective-scan implementation; ``chunked`` is the fast one, ``ref`` the golden loop.
        threads: torch intra-op threads for this process (0 keeps torch's default).

    Raises:
        BackendError: For an unknown precision, fp16 on CPU, a missing CUDA device or an unloadable checkpoint.
    """

    name = "pytorch"

    def __init__(
        self,
        model_dir: str | Path,
        clip_dir: str | Path,
        precision: str = "fp32",
        device: str = "cpu",
        scan_impl: str = "chunked",
        threads: int = 0,
    ) -> None:
        if precision not in PRECISION_DTYPES:
            raise BackendError(f"pytorch backend: precision {precision!r} is not one of {sorted(PRECISION_DTYPES)}")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"pytorch backend: device {device!r} requested but CUDA is not available")
        if precision == "fp16" and dev.type != "cuda":
            raise BackendError(
                f"pytorch backend: precision fp16 needs a CUDA device, got device {device!r} "
                "(use precision fp32 on CPU)"
            )
        if threads < 0:
            raise BackendError(f"pytorch backend: threads = {threads}: must be >= 0 (0 = torch default)")
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-module thread pool
        self.model_dir, self.clip_dir = Path(model_dir), Path(clip_dir)
        for what, path in (("model", self.model_dir), ("CLIP", self.clip_dir)):
            if not path.is_dir():
                raise BackendError(f"pytorch backend: {what} directory {path} does not exist")
        self.precision = precision
        self.device = dev
        self._dtype = PRECISION_DTYPES[precision]
        self._stage_ms: dict[str, float] = {}
        # extend_vocab: the action tokens must exist as embedding rows whether or not the checkpoint was trained.
        self.model = load_model(self.model_dir, self.clip_dir, self._dtype, dev, scan_impl=scan_impl, extend_vocab=True)
        text_cfg = self.model.lm.config
        self.hidden_size = int(self.model.config.hidden_size)
        self.vocab_size = int(self.model.vocab_size)
        self.max_position_embeddings = int(text_cfg.max_position_embeddings)
        self.rope = RopeSpec.from_qwen2_config(text_cfg)
        recorded = load_action_tokens(self.model_dir)
        # A checkpoint without action_tokens.json got the rows appended by load_model: the last three.
        self.action_token_ids: ActionTokenIds | None = recorded or plan_action_token_ids(self.vocab_size - 3)
        self.random_weights = is_synthetic(self.model_dir)
        self.tokenizer_dir = self.model_dir
        self.clip_preprocess = self.model.clip_preprocess  # the CLIP directory's preprocessor_config.json
        logger.info(
            "pytorch backend: %s on %s (%s, scan %s)%s",
            self.model_dir,
            dev,
            precision,
            scan_impl,
            " [random weights]" if self.random_weights else "",
        )

    @classmethod
    def from_engines(cls, engines_dir: str | Path, **kwargs: object) -> TorchBackend:
        """Builds the reference for the checkpoint an engines directory was exported from.

        Args:
            engines_dir: Directory with ``manifest.json`` written by ``python -m export``.
            **kwargs: Passed to the constructor (``precision``, ``device``, ``scan_impl``, ``threads``).

        Returns:
            The backend.

        Raises:
            BackendError: If the manifest is missing or does not record the checkpoint directories.
        """
        model_dir, clip_dir = manifest_checkpoint_dirs(Path(engines_dir))
        return cls(model_dir, clip_dir, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ stages
    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # CUDA calls are async; time the work, not the launch
        self._stage_ms[stage] = (time.perf_counter() - start) * 1e3

    def _to_model(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device, self._dtype)

    @staticmethod
    def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to("cpu", torch.float32).numpy()

    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        """CLIP + image ETP per frame: ``[F,3,224,224]`` -> features ``[F,196,768]``, tokens ``[F,144,H]``."""
        _check_pixels("encode_images", context_pixels, None)
        with self._timed("image_encoder"):
            features = self.model.encode_images(self._to_model(context_pixels))
            tokens = self.model.project_images(features)
        return ImageFeatures(clip_features=self._to_numpy(features), image_tokens=self._to_numpy(tokens))

    def select_frames(self, clip_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame scores ``[2,8]`` and the top-4 per chunk ``[2,4]`` (ascending)."""
        with self._timed("frame_selection"):
            scores = self.model.score_frames(self._to_model(clip_features))
            selected = self.model.select_frames(scores)
        return self._to_numpy(scores), selected.detach().cpu().numpy().astype(np.int64)

    def encode_video(self, video_pixels: np.ndarray) -> np.ndarray:
        """VideoMamba + pooling + video ETP on the 8 selected frames -> ``[2,49,H]``."""
        _check_pixels("encode_video", video_pixels, self.model.config.videomamba.num_frames)
        with self._timed("video_encoder"):
            tokens = self.model.encode_video(self._to_model(video_pixels))
            projected = self.model.project_video(self.model.pool_video(tokens))
        return self._to_numpy(projected)

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Rows of the tied embedding table ``[S,H]``."""
        return self._to_numpy(self.model.embed_tokens(list(ids)))

    def decode(
        self, inputs_embeds: np.ndarray, past: KVState | None, position_ids: np.ndarray
    ) -> tuple[np.ndarray, KVState]:
        """Prefill / append / single-token decode; returns last-position logits ``[1,V]`` and the new cache."""
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[0] != 1 or inputs_embeds.shape[2] != self.hidden_size:
            raise BackendError(
                f"decode: inputs_embeds has shape {inputs_embeds.shape}, expected [1, S, {self.hidden_size}]"
            )
        if position_ids.shape != inputs_embeds.shape[:2]:
            raise BackendError(f"decode: position_ids {position_ids.shape} must be [1, S] = {inputs_embeds.shape[:2]}")
        if past is not None and not isinstance(past, TorchKVState):
            raise BackendError(f"decode: the pytorch backend needs a TorchKVState past, got {type(past).__name__}")
        pos = torch.as_tensor(np.asarray(position_ids, dtype=np.int64), device=self.device)
        with self._timed("decoder"):
            logits, present = self.model.decode_step(
                self._to_model(inputs_embeds), past.layers if past is not None else None, pos
            )
        return self._to_numpy(logits), TorchKVState.after_decode(present, self.rope, past, position_ids)

    def stage_times_ms(self) -> dict[str, float]:
        """Duration of the last call of each stage in ms."""
        return dict(self._stage_ms)

    def close(self) -> None:
        """Drops the model (frees its memory once no other reference holds it)."""
        self.__dict__.pop("model", None)


def _check_pixels(stage: str, pixels: np.ndarray, frames: int | None) -> None:
    if pixels.ndim != 4 or pixels.shape[1:] != (3, 224, 224) or (frames is not None and pixels.shape[0] != frames):
        want = f"[{frames if frames is not None else 'F'}, 3, 224, 224]"
        raise BackendError(f"{stage}: pixels have shape {pixels.shape}, expected {want}")


def load_manifest(engines_dir: Path) -> Manifest:
    """Reads ``engines_dir/manifest.json`` through the exporter's validating reader.

    Raises:
        BackendError: If it is missing, malformed or of another format version.
    """
    try:
        return Manifest.load(engines_dir)
    except ManifestError as exc:
        raise BackendError(str(exc)) from exc


def manifest_checkpoint_dirs(engines_dir: Path) -> tuple[Path, Path]:
    """The checkpoint and CLIP directories an engines directory was exported from (``source`` in the manifest).

    Relative paths are resolved against the current directory first, then against the engines directory.

    Raises:
        BackendError: If the manifest does not record them.
    """
    source = load_manifest(engines_dir).data.get("source")
    if not isinstance(source, dict) or "model_dir" not in source or "clip_dir" not in source:
        raise BackendError(
            f"{Path(engines_dir) / 'manifest.json'}: no source.model_dir / source.clip_dir recorded; "
            "pass --model/--clip to run the pytorch backend"
        )

    def resolve(value: object) -> Path:
        path = Path(str(value))
        if path.is_absolute() or path.exists():
            return path
        return Path(engines_dir) / path

    return resolve(source["model_dir"]), resolve(source["clip_dir"])
