"""Backend factory: one name -> one :class:`~runtime.backends.base.ModelBackend`.

Imports are lazy so that choosing ``onnxruntime`` never imports TensorRT (absent on most machines) and choosing
``pytorch`` never needs exported engines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mobile_videogpt.vocab import ActionTokenIds
from runtime.backends.base import BackendError, ModelBackend
from runtime.config import BACKEND_NAMES, BackendConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = [
    "BACKEND_NAMES",
    "BackendError",
    "ModelBackend",
    "backend_from_config",
    "create_backend",
    "load_tokenizer",
    "tokenizer_for",
]


def create_backend(
    name: str,
    *,
    engines_dir: str | Path | None = None,
    model_dir: str | Path | None = None,
    clip_dir: str | Path | None = None,
    precision: str = "fp32",
    threads: int = 0,
) -> ModelBackend:
    """Creates the backend named ``name``.

    Args:
        name: ``pytorch``, ``onnxruntime`` or ``tensorrt``.
        engines_dir: Exported engines (required for ``onnxruntime`` and ``tensorrt``; for ``pytorch`` the manifest's
            recorded checkpoint is used when ``model_dir`` is not given).
        model_dir: Checkpoint directory (``pytorch`` only).
        clip_dir: CLIP directory (``pytorch`` only; required with ``model_dir``).
        precision: ``fp32`` or ``fp16``.
        threads: CPU threads (0 = the library's default).

    Returns:
        The backend, ready to run.

    Raises:
        BackendError: For an unknown name, missing directories, or a backend that cannot start.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}: choose one of {'|'.join(BACKEND_NAMES)}")
    if name == "pytorch":
        from runtime.backends.torch_backend import TorchBackend

        if model_dir is not None:
            if clip_dir is None:
                raise BackendError("pytorch backend: model_dir given without clip_dir")
            return TorchBackend(model_dir, clip_dir, precision=precision, threads=threads)
        if engines_dir is None:
            raise BackendError(
                "pytorch backend: give model_dir and clip_dir, or an engines_dir whose manifest records them"
            )
        return TorchBackend.from_engines(engines_dir, precision=precision, threads=threads)

    if engines_dir is None:
        raise BackendError(f"{name} backend: engines_dir is required (export first: python -m export)")
    engines = Path(engines_dir)
    if not engines.is_dir():
        raise BackendError(
            f"{name} backend: engines directory {engines} does not exist (export first: python -m export)"
        )
    if model_dir is not None or clip_dir is not None:
        logger.warning("%s backend runs the exported engines in %s; model_dir/clip_dir are ignored", name, engines)
    if name == "onnxruntime":
        try:
            from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
        except ModuleNotFoundError as exc:
            raise BackendError(f"onnxruntime backend is not available: {exc}") from exc
        return OnnxRuntimeBackend(engines, precision=precision, intra_op_threads=threads)
    try:
        from runtime.backends.tensorrt_backend import TensorRTBackend
    except ModuleNotFoundError as exc:
        raise BackendError(f"tensorrt backend is not available: {exc}") from exc
    return TensorRTBackend(engines)


def load_tokenizer(tokenizer_dir: str | Path, action_token_ids: ActionTokenIds | None) -> PreTrainedTokenizerBase:
    """Loads the Qwen2 tokenizer of a model or engines directory, with the action tokens at the backend's ids.

    ``extend_tokenizer`` is idempotent, so a tokenizer saved already extended is accepted as is; one without the
    tokens gets ``<image>`` and the action tokens added at the ids planned for the backend's embedding rows.

    Args:
        tokenizer_dir: Directory with ``tokenizer.json`` (a checkpoint, or an engines directory the exporter copied
            the tokenizer files into).
        action_token_ids: The backend's action-token ids (``None``: no extension).

    Returns:
        The tokenizer.

    Raises:
        BackendError: If there are no tokenizer files or the ids do not fit the tokenizer.
    """
    from transformers import PreTrainedTokenizerFast  # the fast class directly: AutoTokenizer also parses config.json

    from mobile_videogpt.vocab import extend_tokenizer

    path = Path(tokenizer_dir)
    if not (path / "tokenizer.json").is_file():
        raise BackendError(f"no tokenizer.json in {path}: the streaming runtime needs the model's tokenizer")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    if action_token_ids is not None:
        try:
            extend_tokenizer(tokenizer, action_token_ids.next)  # the ids are planned right after the existing rows
        except ValueError as exc:
            raise BackendError(f"tokenizer in {path} does not fit the backend's action tokens: {exc}") from exc
    return tokenizer


#: The synthetic checkpoint the pytorch backend writes on demand when the configured one is this and is missing.
DEFAULT_SYNTHETIC_DIR = Path("checkpoints/tiny")


def backend_from_config(cfg: BackendConfig, *, prefer_checkpoint: bool = False) -> ModelBackend:
    """Creates the backend a ``backend`` config section describes (the CLIs' and benchmarks' entry point).

    ``onnxruntime`` / ``tensorrt`` run ``cfg.engines_dir``. ``pytorch`` runs the checkpoint recorded in the engines'
    manifest when the engines exist (so it is the reference of exactly what was exported), otherwise
    ``cfg.model_dir`` / ``cfg.clip_dir``; with ``prefer_checkpoint`` (``--model`` given) always the latter. The
    synthetic tiny checkpoint at its default location is written on demand (offline, a few seconds).

    Args:
        cfg: The ``backend`` config section.
        prefer_checkpoint: Use ``cfg.model_dir`` even if engines exist.

    Returns:
        The backend.

    Raises:
        BackendError: If the engines or checkpoint are missing or the backend cannot start.
    """
    engines = Path(cfg.engines_dir)
    if cfg.name != "pytorch":
        return create_backend(cfg.name, engines_dir=engines, precision=cfg.precision, threads=cfg.intra_op_threads)
    if not prefer_checkpoint and (engines / "manifest.json").is_file():
        return create_backend("pytorch", engines_dir=engines, precision=cfg.precision, threads=cfg.intra_op_threads)
    model_dir, clip_dir = Path(cfg.model_dir), Path(cfg.clip_dir)
    if (
        not model_dir.is_dir()
        and model_dir == DEFAULT_SYNTHETIC_DIR / "model"
        and clip_dir == DEFAULT_SYNTHETIC_DIR / "clip"
    ):
        from mobile_videogpt.synthetic import ensure_synthetic_checkpoint

        logger.info("writing the synthetic tiny checkpoint (random weights) to %s", DEFAULT_SYNTHETIC_DIR)
        ensure_synthetic_checkpoint("tiny", DEFAULT_SYNTHETIC_DIR)
    return create_backend(
        "pytorch", model_dir=model_dir, clip_dir=clip_dir, precision=cfg.precision, threads=cfg.intra_op_threads
    )


def tokenizer_for(backend: ModelBackend, fallback_dir: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer matching a backend (its ``tokenizer_dir`` attribute, else ``fallback_dir``).

    Raises:
        BackendError: If neither names a directory with tokenizer files.
    """
    directory = getattr(backend, "tokenizer_dir", None) or getattr(backend, "engines_dir", None) or fallback_dir
    if directory is None:
        raise BackendError(f"{backend.name} backend does not say where its tokenizer is (no tokenizer_dir)")
    path = Path(directory)
    if not (path / "tokenizer.json").is_file() and (path / "manifest.json").is_file():
        # An engines directory: the exporter copies the tokenizer into the manifest's tokenizer_dir.
        from runtime.backends.torch_backend import load_manifest

        path = load_manifest(path).tokenizer_dir
    return load_tokenizer(path, backend.action_token_ids)
