"""TensorRT engines from the exported ONNX graphs: strongly typed, name-based profiles, timing cache, JSON sidecar.

Precision comes from the ONNX file itself: the network is created **strongly typed** (TensorRT 10.12+ flag
``STRONGLY_TYPED``; TensorRT 11 is always strongly typed and has no FP16 builder flag), so the fp16 graphs of
``export.fp16`` build with exactly their fp16 products and fp32 islands, and the fp32 graphs build in fp32 (TF32 is
turned off for them so they stay a precision reference). Every ONNX parser error is collected and raised.

Optimization profiles are given per symbolic dimension of the I/O table (``export.graphs``):

* ``image_encoder``: frames 1 / 16 / 32 (one profile); ``frame_selector`` and ``video_encoder`` are static.
* ``decoder``: profile 0 **prefill / append** (sequence 1 / 2432 / max_sequence, past 0 / 2432 / max_context - 1) and
  profile 1 **decode** (sequence 1, past 1 / 4096 / max_context - 1); batch is 1. One execution context per profile
  (the runtime picks profile 1 for S = 1 with a non-empty past). TensorRT cannot express past + sequence <=
  max_context; the runtime enforces it.

TensorRT is imported lazily; :class:`TensorRTUnavailable` says why it cannot be used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from engine_format.io import DECODER, FRAME_SELECTOR, IMAGE_ENCODER, VIDEO_ENCODER, TensorSpec

logger = logging.getLogger(__name__)

MIN_TENSORRT = (10, 0)
DimRange = tuple[int, int, int]
"""(min, opt, max) of one symbolic dimension."""


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a CUDA device for it) is not available here; the message says what is missing."""


class EngineBuildError(RuntimeError):
    """Parsing or building an engine failed; the message carries every parser error."""


def import_tensorrt() -> ModuleType:
    """Imports ``tensorrt`` and checks its version.

    Returns:
        The module.

    Raises:
        TensorRTUnavailable: If it is not installed, fails to load its libraries, or is older than 10.0.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:  # ModuleNotFoundError, or missing libnvinfer / libnvonnxparser
        raise TensorRTUnavailable(
            f"TensorRT is not importable ({exc}); install tensorrt>=10.12 on a CUDA machine"
        ) from exc
    version = tuple(int(x) for x in trt.__version__.split(".")[:2])
    if version < MIN_TENSORRT:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old: the name-based I/O API needs >= 10.0")
    return trt


@dataclass(frozen=True)
class BuildSettings:
    """Build-time limits.

    Attributes:
        max_frames: Largest image-encoder batch.
        opt_frames: Image-encoder batch TensorRT tunes for.
        max_sequence: Largest S of one decoder call (window + text).
        max_context: Largest past + S.
        opt_sequence: S TensorRT tunes the prefill/append profile for (one window).
        opt_past: Past length of the prefill/append profile's tuning point.
        opt_decode_past: Past length of the decode profile's tuning point.
        workspace_gib: Workspace memory-pool limit.
    """

    max_frames: int = 32
    opt_frames: int = 16
    max_sequence: int = 4096
    max_context: int = 12288
    opt_sequence: int = 2432
    opt_past: int = 2432
    opt_decode_past: int = 4096
    workspace_gib: float = 8.0

    def __post_init__(self) -> None:
        if not 1 <= self.opt_frames <= self.max_frames:
            raise ValueError(f"need 1 <= opt_frames ({self.opt_frames}) <= max_frames ({self.max_frames})")
        if not 1 <= self.opt_sequence <= self.max_sequence <= self.max_context:
            raise ValueError(
                f"need 1 <= opt_sequence ({self.opt_sequence}) <= max_sequence ({self.max_sequence}) <= max_context "
                f"({self.max_context})"
            )
        if not 0 <= self.opt_past < self.max_context or not 1 <= self.opt_decode_past < self.max_context:
            raise ValueError(f"opt_past / opt_decode_past must lie below max_context ({self.max_context})")


def graph_profiles(graph: str, settings: BuildSettings) -> list[dict[str, DimRange]]:
    """Ranges of every symbolic dimension, one dict per optimization profile.

    Args:
        graph: Graph name.
        settings: Limits.

    Returns:
        Profiles (empty list for a static graph).

    Raises:
        ValueError: For an unknown graph.
    """
    s = settings
    if graph == IMAGE_ENCODER:
        return [{"frames": (1, s.opt_frames, s.max_frames)}]
    if graph in (FRAME_SELECTOR, VIDEO_ENCODER):
        return []
    if graph == DECODER:
        prefill = {
            "batch": (1, 1, 1),
            "sequence": (1, s.opt_sequence, s.max_sequence),
            "past_sequence": (0, min(s.opt_past, s.max_context - 1), s.max_context - 1),
        }
        decode = {
            "batch": (1, 1, 1),
            "sequence": (1, 1, 1),
            "past_sequence": (1, min(s.opt_decode_past, s.max_context - 1), s.max_context - 1),
        }
        return [prefill, decode]
    raise ValueError(f"unknown graph {graph!r}")


def profile_shapes(
    inputs: Sequence[TensorSpec], dims: Mapping[str, DimRange]
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shapes of every dynamic input for one profile.

    Args:
        inputs: The graph's inputs.
        dims: Range of every symbolic dimension.

    Returns:
        Input name -> (min shape, opt shape, max shape), for inputs with a symbolic dimension.

    Raises:
        ValueError: If an input uses a symbolic dimension the profile does not give.
    """
    shapes = {}
    for spec in inputs:
        if not any(isinstance(d, str) for d in spec.shape):
            continue
        missing = [d for d in spec.shape if isinstance(d, str) and d not in dims]
        if missing:
            raise ValueError(f"profile gives no range for dimension(s) {missing} of input {spec.name}")
        lo, opt, hi = (tuple(dims[d][k] if isinstance(d, str) else d for d in spec.shape) for k in range(3))
        shapes[spec.name] = (lo, opt, hi)
    return shapes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EngineBuilder:
    """Builds one serialized engine per ONNX graph.

    Args:
        timing_cache: File to load the timing cache from and save it back to (created if missing).
        workspace_gib: Workspace memory-pool limit.
        verbose: TensorRT verbose logging.

    Raises:
        TensorRTUnavailable: If TensorRT cannot be imported.
    """

    def __init__(self, timing_cache: Path | None = None, workspace_gib: float = 8.0, verbose: bool = False) -> None:
        self.trt = import_tensorrt()
        trt = self.trt
        self.logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        self.builder = trt.Builder(self.logger)
        self.timing_cache_path = timing_cache
        self.workspace_bytes = int(workspace_gib * (1 << 30))
        self.major = int(trt.__version__.split(".")[0])

    def _network_flags(self) -> int:
        """Creation flags: strongly typed (TensorRT 11 is always strongly typed and may not list the flag)."""
        flag = getattr(self.trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if flag is None:
            if self.major >= 11:
                return 0
            raise TensorRTUnavailable(
                f"TensorRT {self.trt.__version__} has no STRONGLY_TYPED network flag (need 10.x+)"
            )
        return 1 << int(flag)

    def build(
        self,
        onnx_path: Path,
        engine_path: Path,
        inputs: Sequence[TensorSpec],
        profiles: Sequence[Mapping[str, DimRange]],
        precision: str,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Parses, builds and writes one engine plus its ``.json`` sidecar.

        Args:
            onnx_path: The ONNX graph (parsed from its path so external data resolves).
            engine_path: Output ``.plan`` path.
            inputs: The graph's I/O-table inputs (symbolic dimension names).
            profiles: Dimension ranges per profile (empty for static graphs).
            precision: "fp32" or "fp16" (recorded; the ONNX dtypes decide).
            extra: More facts for the sidecar.

        Returns:
            The sidecar content.

        Raises:
            EngineBuildError: On any parser error or a failed build.
        """
        trt = self.trt
        start = time.perf_counter()
        network = self.builder.create_network(self._network_flags())
        parser = trt.OnnxParser(network, self.logger)
        ok = parser.parse_from_file(str(onnx_path))
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        if not ok or errors:
            raise EngineBuildError(
                f"TensorRT could not parse {onnx_path}:\n  " + "\n  ".join(errors or ["(no message)"])
            )
        io = []
        for i in range(network.num_inputs):
            t = network.get_input(i)
            io.append({"name": t.name, "mode": "input", "dtype": str(t.dtype), "shape": list(t.shape)})
        for i in range(network.num_outputs):
            t = network.get_output(i)
            io.append({"name": t.name, "mode": "output", "dtype": str(t.dtype), "shape": list(t.shape)})
        for entry in io:
            logger.info("%s %s %s %s %s", onnx_path.name, entry["mode"], entry["name"], entry["dtype"], entry["shape"])

        config = self.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        tf32 = True
        if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # keep fp32 engines a precision reference
            tf32 = False
        cache_bytes = (
            self.timing_cache_path.read_bytes() if self.timing_cache_path and self.timing_cache_path.is_file() else b""
        )
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, ignore_mismatch=False)
        recorded_profiles = []
        for dims in profiles:
            profile = self.builder.create_optimization_profile()
            shapes = profile_shapes(inputs, dims)
            for name, (lo, opt, hi) in shapes.items():
                profile.set_shape(name, lo, opt, hi)
            config.add_optimization_profile(profile)
            recorded_profiles.append(
                {name: {"min": lo, "opt": opt, "max": hi} for name, (lo, opt, hi) in shapes.items()}
            )

        serialized = self.builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineBuildError(f"TensorRT failed to build {onnx_path} (see the TensorRT log above)")
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        engine_path.write_bytes(bytes(serialized))
        if self.timing_cache_path is not None:
            self.timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.timing_cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
        sidecar = {
            "onnx": onnx_path.name,
            "onnx_sha256": _sha256(onnx_path),
            "precision": precision,
            "tensorrt": self.trt.__version__,
            "strongly_typed": True,
            "tf32": tf32,
            "profiles": recorded_profiles,
            "io": io,
            "build_seconds": round(time.perf_counter() - start, 1),
            "bytes": engine_path.stat().st_size,
            **(extra or {}),
        }
        engine_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
        logger.info("built %s (%.1f MB, %.1f s)", engine_path, sidecar["bytes"] / 1e6, sidecar["build_seconds"])
        return sidecar
