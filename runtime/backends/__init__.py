"""Backend factory: one name -> one :class:`~runtime.backends.base.ModelBackend`.

Imports are lazy so that choosing ``onnxruntime`` never imports torch or TensorRT, and choosing ``pytorch`` never
needs exported engines. Every option is validated for the chosen backend (a precision or device it cannot honour is
an error naming the option, never silently replaced).
"""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.backends.base import BackendError, ModelBackend
from runtime.config import BACKEND_NAMES, BackendConfig, OnnxRuntimeConfig

logger = logging.getLogger(__name__)

__all__ = ["BACKEND_NAMES", "BackendError", "ModelBackend", "backend_from_config", "create_backend"]

#: ONNX Runtime execution provider per device type.
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def create_backend(
    name: str,
    *,
    engines_dir: str | Path | None = None,
    model_dir: str | Path | None = None,
    clip_dir: str | Path | None = None,
    precision: str = "fp32",
    device: str = "cpu",
    threads: int = 0,
    scan_impl: str = "chunked",
    preprocess: str = "cpu",
    cuda_graphs: bool = False,
    attention: str = "sdpa",
    onnxruntime: OnnxRuntimeConfig | None = None,
) -> ModelBackend:
    """Creates the backend named ``name``.

    Args:
        name: ``pytorch``, ``onnxruntime`` or ``tensorrt``.
        engines_dir: Exported engines (required for ``onnxruntime`` and ``tensorrt``; for ``pytorch`` the manifest's
            recorded checkpoint is used when ``model_dir`` is not given).
        model_dir: Checkpoint directory (``pytorch`` only).
        clip_dir: CLIP directory (``pytorch`` only; required with ``model_dir``).
        precision: ``fp32`` or ``fp16`` (``tensorrt``: the engines built for it).
        device: ``cpu``, ``cuda`` or ``cuda:N`` (``tensorrt`` needs CUDA; ``onnxruntime`` picks the provider).
        threads: CPU threads (0 = the library's default).
        scan_impl: ``pytorch`` only: selective-scan implementation (``chunked``, ``ref``, ``triton``).
        preprocess: ``pytorch`` only: ``cpu`` or ``device`` preprocessing.
        cuda_graphs: ``pytorch`` on CUDA only: CUDA graphs for the encoders and the decode step.
        attention: ``pytorch`` only: ``sdpa`` or ``sdpa_causal``.
        onnxruntime: Memory settings of the ``onnxruntime`` backend (default: the config defaults); an error for
            another backend.

    Returns:
        The backend, ready to run.

    Raises:
        BackendError: For an unknown name, an option the backend cannot honour, missing directories, or a backend
            that cannot start.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}: choose one of {'|'.join(BACKEND_NAMES)}")
    device_type = device.split(":", 1)[0]
    fast = {"scan_impl": scan_impl, "preprocess": preprocess, "cuda_graphs": cuda_graphs, "attention": attention}
    if onnxruntime is not None and name != "onnxruntime":
        raise BackendError(f"{name} backend: the onnxruntime settings apply to the onnxruntime backend only")
    if name == "pytorch":
        from runtime.backends.torch_backend import TorchBackend

        options = {"precision": precision, "device": device, "threads": threads, **fast}
        if model_dir is not None:
            if clip_dir is None:
                raise BackendError("pytorch backend: model_dir given without clip_dir")
            return TorchBackend(model_dir, clip_dir, **options)
        if engines_dir is None:
            raise BackendError("pytorch backend: give model_dir and clip_dir, or an engines_dir whose manifest records them")
        return TorchBackend.from_engines(engines_dir, **options)

    reference = {"scan_impl": "chunked", "preprocess": "cpu", "cuda_graphs": False, "attention": "sdpa"}
    if changed := sorted(k for k, v in fast.items() if v != reference[k]):
        raise BackendError(f"{name} backend: {', '.join(changed)} are pytorch backend settings (docs/gpu.md)")
    if engines_dir is None:
        raise BackendError(f"{name} backend: engines_dir is required (export first: python -m export)")
    engines = Path(engines_dir)
    if not (engines / "manifest.json").is_file():
        raise BackendError(
            f"{name} backend: {engines} holds no exported engines (no manifest.json; export first: python -m export)"
        )
    if model_dir is not None or clip_dir is not None:
        raise BackendError(f"{name} backend runs the exported engines in {engines}; model_dir/clip_dir are pytorch options")
    if name == "onnxruntime":
        if device_type not in ORT_PROVIDERS:
            raise BackendError(f"onnxruntime backend: device {device!r} must be one of {sorted(ORT_PROVIDERS)}")
        try:
            from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
        except ModuleNotFoundError as exc:
            raise BackendError(f"onnxruntime backend is not available: {exc} (pip install '.[runtime]')") from exc
        ort_cfg = onnxruntime or OnnxRuntimeConfig()
        return OnnxRuntimeBackend(
            engines,
            precision=precision,
            intra_op_threads=threads,
            provider=ORT_PROVIDERS[device_type],
            cpu_mem_arena=ort_cfg.cpu_mem_arena,
            decode_chunk_rows=ort_cfg.decode_chunk_rows,
        )
    if device_type != "cuda":
        raise BackendError(f"tensorrt backend: device {device!r} must be cuda (TensorRT runs on NVIDIA GPUs only)")
    from runtime.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(engines, precision=precision)


def backend_from_config(cfg: BackendConfig, *, prefer_checkpoint: bool = False) -> ModelBackend:
    """Creates the backend a ``backend`` config section describes (the CLIs' and benchmarks' entry point).

    ``onnxruntime`` / ``tensorrt`` run ``cfg.engines_dir``. ``pytorch`` runs the checkpoint recorded in the engines'
    manifest when the engines exist (so it is the reference of exactly what was exported, with the same tokenizer),
    otherwise ``cfg.model_dir`` / ``cfg.clip_dir``; with ``prefer_checkpoint`` (``--model`` given) always the latter.

    Raises:
        BackendError: If the engines or checkpoint are missing or the backend cannot start.
    """
    options = {"precision": cfg.precision, "device": cfg.device, "threads": cfg.intra_op_threads}
    engines = Path(cfg.engines_dir)
    if cfg.name == "onnxruntime":
        return create_backend(cfg.name, engines_dir=engines, onnxruntime=cfg.onnxruntime, **options)
    if cfg.name != "pytorch":
        return create_backend(cfg.name, engines_dir=engines, **options)
    options.update(scan_impl=cfg.scan_impl, preprocess=cfg.preprocess, cuda_graphs=cfg.cuda_graphs,
                   attention=cfg.attention)
    if not prefer_checkpoint and (engines / "manifest.json").is_file():
        return create_backend("pytorch", engines_dir=engines, **options)
    model_dir, clip_dir = Path(cfg.model_dir), Path(cfg.clip_dir)
    if not model_dir.is_dir():
        raise BackendError(
            f"pytorch backend: checkpoint {model_dir} does not exist and {engines} holds no engines; give --model/--clip "
            "or write the synthetic one: python -m mobile_videogpt.synthetic --preset tiny --out checkpoints/tiny"
        )
    return create_backend("pytorch", model_dir=model_dir, clip_dir=clip_dir, **options)
