"""Typed, validated streaming configuration loaded from ``streaming_config.yaml``.

Every key is optional in the YAML file (missing keys take the defaults of :mod:`runtime.config_schema`),
but an unknown key, a value of the wrong type or a value out of range raises
:class:`ConfigError` with the dotted key and the allowed values, e.g.
``window.overlap_s = 2.5: must be >= 0 and < window.window_s (2.0)``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from runtime.config_schema import (  # noqa: F401 - re-exported: runtime.config is the public module
    ATTENTION_NAMES,
    BACKEND_NAMES,
    DEFAULT_CONFIG_PATH,
    MOTION_MODES,
    POLICY_NAMES,
    PRECISIONS,
    PREPROCESS_NAMES,
    SCAN_IMPL_NAMES,
    SPEECH_ENGINES,
    SPEECH_PLAYERS,
    TERMINAL_MODES,
    BackendConfig,
    CacheConfig,
    CameraConfig,
    CaptureConfig,
    ConfigError,
    ContextConfig,
    DecisionConfig,
    EveryNConfig,
    GenerationConfig,
    MotionConfig,
    OnnxRuntimeConfig,
    OutputConfig,
    PolicyConfig,
    RandomConfig,
    SpeechConfig,
    StreamingConfig,
    WindowConfig,
    _to_plain,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- loading

_D = TypeVar("_D")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotated type ``tp`` and convert it."""
    args = typing.get_args(tp)
    if type(None) in args:  # ``X | None``: null means "not set here" (see the field's docstring)
        if value is None:
            return None
        (tp,) = [a for a in args if a is not type(None)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is tuple:  # tuple[str, ...]
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {value!r}: must be a list of {_type_name(item_tp)}")
        return tuple(_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: must be true or false")
        return value
    if tp is int:
        # bool is an int subclass in Python; a YAML 'true' is never a count.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r}: must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} = {value!r}: must be a number")
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r}: must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r}: must be a string")
        return value
    raise TypeError(f"unsupported config field type {tp!r} for {key}")


def _build(cls: type[_D], data: Any, prefix: str) -> _D:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys."""
    where = prefix or "top level"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{dotted}: unknown key (allowed in {where}: {', '.join(names)})")
    kwargs = {
        name: _coerce(f"{prefix}.{name}" if prefix else name, data[name], hints[name]) for name in names if name in data
    }
    return cls(**kwargs)


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r}: {rule}")


def validate(cfg: StreamingConfig) -> StreamingConfig:
    """Check every value's range and cross-key constraints.

    Returns:
        ``cfg`` unchanged.

    Raises:
        ConfigError: Naming the first offending dotted key and its allowed range.
    """
    w = cfg.window
    _check(0 < w.window_s <= 60, "window.window_s", w.window_s, "must be > 0 and <= 60")
    _check(
        0 <= w.overlap_s < w.window_s,
        "window.overlap_s",
        w.overlap_s,
        f"must be >= 0 and < window.window_s ({w.window_s})",
    )
    # The model's visual path is built for exactly 16 frames (2 chunks of 8, 16 x 144 image tokens).
    # The model fixes the count (16 for the release); the session checks it against the engines' manifest.
    _check(w.frames_per_window >= 1, "window.frames_per_window", w.frames_per_window, "must be >= 1")
    _check(
        0 <= w.min_tail_s < w.window_s,
        "window.min_tail_s",
        w.min_tail_s,
        f"must be >= 0 and < window.window_s ({w.window_s})",
    )
    _check(
        cfg.capture.ring_buffer_frames >= w.frames_per_window,
        "capture.ring_buffer_frames",
        cfg.capture.ring_buffer_frames,
        f"must be >= window.frames_per_window ({w.frames_per_window})",
    )
    _check(cfg.cache.max_frames >= 1, "cache.max_frames", cfg.cache.max_frames, "must be >= 1")
    _validate_camera(cfg.camera)

    c = cfg.context
    _check(c.max_windows >= 1, "context.max_windows", c.max_windows, "must be >= 1")
    # One window is ~2420 tokens (2402 visual rows plus the turn's text); smaller budgets could never hold one.
    _check(c.max_tokens >= 3000, "context.max_tokens", c.max_tokens, "must be >= 3000 (one window is ~2420 tokens)")
    _check(c.timeout_s > 0, "context.timeout_s", c.timeout_s, "must be > 0")

    p = cfg.policy
    _check(p.name in POLICY_NAMES, "policy.name", p.name, f"must be one of {', '.join(POLICY_NAMES)}")
    _check(p.every_n.n >= 1, "policy.every_n.n", p.every_n.n, "must be >= 1")
    _check(0.0 <= p.random.p <= 1.0, "policy.random.p", p.random.p, "must be in [0, 1]")
    _check(p.random.seed >= 0, "policy.random.seed", p.random.seed, "must be >= 0")
    _check(
        p.motion.mode in MOTION_MODES, "policy.motion.mode", p.motion.mode, f"must be one of {', '.join(MOTION_MODES)}"
    )
    upper = 255.0 if p.motion.mode == "frame_diff" else 2.0
    _check(
        0 < p.motion.threshold <= upper,
        "policy.motion.threshold",
        p.motion.threshold,
        f"must be > 0 and <= {upper:g} for policy.motion.mode {p.motion.mode}",
    )

    d = cfg.decision
    _check(
        0.0 <= d.confidence_threshold <= 1.0,
        "decision.confidence_threshold",
        d.confidence_threshold,
        "must be in [0, 1]",
    )
    _check(
        d.min_feedback_interval_s >= 0,
        "decision.min_feedback_interval_s",
        d.min_feedback_interval_s,
        "must be >= 0",
    )

    g = cfg.generation
    _check(bool(g.instruction.strip()), "generation.instruction", g.instruction, "must be a non-empty string")
    if g.max_new_tokens is not None:
        _check(
            1 <= g.max_new_tokens <= 4096, "generation.max_new_tokens", g.max_new_tokens,
            "must be in [1, 4096], or null for the checkpoint's",
        )
    if g.repetition_penalty is not None:
        _check(
            0 < g.repetition_penalty <= 10, "generation.repetition_penalty", g.repetition_penalty,
            "must be > 0 and <= 10 (1.0 = none), or null for the checkpoint's",
        )
    if g.stop_tokens is not None:
        _check(bool(g.stop_tokens), "generation.stop_tokens", list(g.stop_tokens),
               "must name at least one token, or be null for the checkpoint's stop ids")
        for i, tok in enumerate(g.stop_tokens):
            _check(bool(tok), f"generation.stop_tokens[{i}]", tok, "must be a non-empty string")

    b = cfg.backend
    _check(b.name in BACKEND_NAMES, "backend.name", b.name, f"must be one of {', '.join(BACKEND_NAMES)}")
    _check(b.precision in PRECISIONS, "backend.precision", b.precision, f"must be one of {', '.join(PRECISIONS)}")
    _check(
        re.fullmatch(r"cpu|cuda(:\d+)?", b.device) is not None,
        "backend.device",
        b.device,
        "must be cpu, cuda or cuda:N",
    )
    _check(bool(b.engines_dir.strip()), "backend.engines_dir", b.engines_dir, "must be a non-empty path")
    _check(bool(b.model_dir.strip()), "backend.model_dir", b.model_dir, "must be a non-empty path")
    _check(bool(b.clip_dir.strip()), "backend.clip_dir", b.clip_dir, "must be a non-empty path")
    _check(
        0 <= b.intra_op_threads <= 256,
        "backend.intra_op_threads",
        b.intra_op_threads,
        "must be in [0, 256] (0 = runtime default)",
    )
    for key, value, names in (("scan_impl", b.scan_impl, SCAN_IMPL_NAMES),
                              ("preprocess", b.preprocess, PREPROCESS_NAMES),
                              ("attention", b.attention, ATTENTION_NAMES)):
        _check(value in names, f"backend.{key}", value, f"must be one of {', '.join(names)}")
    defaults = BackendConfig()
    for key in ("scan_impl", "preprocess", "cuda_graphs", "attention"):
        value = getattr(b, key)
        _check(b.name == "pytorch" or value == getattr(defaults, key), f"backend.{key}", value,
               f"only the pytorch backend has this setting (backend.name is {b.name}); leave it at "
               f"{getattr(defaults, key)!r}")
    _check(not b.cuda_graphs or b.device.startswith("cuda"), "backend.cuda_graphs", b.cuda_graphs,
           f"needs backend.device cuda (got {b.device}): CUDA graphs exist only on NVIDIA GPUs")
    rows = b.onnxruntime.decode_chunk_rows
    _check(0 <= rows <= 65536, "backend.onnxruntime.decode_chunk_rows", rows, "must be in [0, 65536] (0 = one call)")
    _validate_output(cfg.output, cfg.speech)
    return cfg


def _validate_output(o: OutputConfig, s: SpeechConfig) -> None:
    _check(o.terminal in TERMINAL_MODES, "output.terminal", o.terminal, f"must be one of {', '.join(TERMINAL_MODES)}")
    _check(240 <= o.video_height <= 2160, "output.video_height", o.video_height, "must be in [240, 2160]")
    _check(s.engine in SPEECH_ENGINES, "speech.engine", s.engine, f"must be one of {', '.join(SPEECH_ENGINES)}")
    _check(re.fullmatch(r"[A-Za-z0-9_+\-]+", s.voice) is not None, "speech.voice", s.voice,
           "must be a voice name such as en-us (letters, digits, _ + -)")
    _check(80 <= s.rate_wpm <= 450, "speech.rate_wpm", s.rate_wpm, "must be in [80, 450]")
    _check(0 <= s.volume <= 200, "speech.volume", s.volume, "must be in [0, 200]")
    _check(s.player in SPEECH_PLAYERS, "speech.player", s.player, f"must be one of {', '.join(SPEECH_PLAYERS)}")
    _check(1 <= s.max_pending <= 16, "speech.max_pending", s.max_pending, "must be in [1, 16]")


def _validate_camera(cam: CameraConfig) -> None:
    """Ranges of the ``camera.*`` keys."""
    for key, value in (("camera.width", cam.width), ("camera.height", cam.height)):
        _check(value == 0 or 16 <= value <= 8192, key, value, "must be 0 (driver default) or in [16, 8192]")
    _check(0 <= cam.fps <= 240, "camera.fps", cam.fps, "must be 0 (driver default) or in (0, 240]")
    for key, value in (("camera.open_timeout_s", cam.open_timeout_s), ("camera.read_timeout_s", cam.read_timeout_s)):
        _check(0 < value <= 60, key, value, "must be > 0 and <= 60")
    _check(
        1 <= cam.max_consecutive_failures <= 10000,
        "camera.max_consecutive_failures",
        cam.max_consecutive_failures,
        "must be in [1, 10000]",
    )
    _check(0 <= cam.reconnect_attempts <= 1000, "camera.reconnect_attempts", cam.reconnect_attempts,
           "must be in [0, 1000] (0 = no reconnect)")
    _check(0 <= cam.reconnect_backoff_s <= 60, "camera.reconnect_backoff_s", cam.reconnect_backoff_s,
           "must be >= 0 and <= 60")
    _check(
        cam.reconnect_backoff_s <= cam.reconnect_backoff_max_s <= 300,
        "camera.reconnect_backoff_max_s",
        cam.reconnect_backoff_max_s,
        f"must be >= camera.reconnect_backoff_s ({cam.reconnect_backoff_s}) and <= 300",
    )
    _check(1 <= cam.probe_frames <= 300, "camera.probe_frames", cam.probe_frames, "must be in [1, 300]")


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["a.b=1", ...]`` -> ``{"a.b": "1"}``.

    Raises:
        ConfigError: For an item without ``=``.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set policy.name=motion")
        out[key.strip()] = value.strip()
    return out


def frames_per_window_at(window_s: float, fps: float) -> int:
    """Most frames one window ``[t, t + window_s]`` holds at ``fps`` (both ends included)."""
    return math.floor(window_s * fps + 1e-6) + 1


def check_ring_buffer(cfg: StreamingConfig, fps: float, source: str = "the source") -> None:
    """Checks that ``capture.ring_buffer_frames`` holds one whole window at the source's frame rate.

    A smaller buffer loses the start of every window (live), or would wait forever for room (offline).

    Args:
        cfg: The configuration.
        fps: The source's frame rate.
        source: The source's name, for the message.

    Raises:
        ConfigError: Naming ``capture.ring_buffer_frames`` and the smallest value that fits.
    """
    need = frames_per_window_at(cfg.window.window_s, fps)
    _check(
        cfg.capture.ring_buffer_frames >= need,
        "capture.ring_buffer_frames",
        cfg.capture.ring_buffer_frames,
        f"must hold one window of {source} (>= {need}: window.window_s {cfg.window.window_s:g} s at {fps:g} fps)",
    )


def config_from_dict(data: Mapping[str, Any] | None) -> StreamingConfig:
    """Build and validate a config from a nested mapping (missing keys = defaults).

    Raises:
        ConfigError: On unknown keys, wrong types or out-of-range values.
    """
    return validate(_build(StreamingConfig, data, ""))


def load_config(path: str | Path | None = None) -> StreamingConfig:
    """Load and validate a streaming configuration file.

    Args:
        path: YAML file; ``None`` loads the repository's ``streaming_config.yaml``.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: If the file is missing or unreadable, is not valid YAML, or
            has an invalid key or value.
    """
    cfg_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {cfg_path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {cfg_path} is not valid YAML: {exc}") from exc
    try:
        cfg = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{cfg_path}: {exc}") from exc
    logger.debug("loaded streaming config from %s", cfg_path)
    return cfg


def apply_overrides(cfg: StreamingConfig, overrides: Mapping[str, Any]) -> StreamingConfig:
    """Return a copy of ``cfg`` with dotted-key overrides applied and re-validated.

    String values are parsed as YAML scalars when the key is not a string field,
    so command-line text such as ``"0.7"``, ``"true"`` or ``"[a, b]"`` works.

    Args:
        cfg: The base configuration.
        overrides: Mapping like ``{"window.overlap_s": 0.25, "policy.name": "motion"}``.

    Returns:
        A new validated configuration.

    Raises:
        ConfigError: On an unknown dotted key or an invalid value.
    """
    data = cfg.to_dict()
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = data
        cls: Any = StreamingConfig
        for depth, part in enumerate(parts):
            names = {f.name: f for f in dataclasses.fields(cls)}
            if part not in names:
                where = ".".join(parts[:depth]) or "top level"
                raise ConfigError(f"{dotted}: unknown key (allowed in {where}: {', '.join(names)})")
            tp = typing.get_type_hints(cls)[part]
            if depth < len(parts) - 1:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"{dotted}: {'.'.join(parts[: depth + 1])} is not a section")
                node, cls = node[part], tp
                continue
            if dataclasses.is_dataclass(tp):
                raise ConfigError(f"{dotted}: is a section; override its keys individually")
            if isinstance(value, str) and tp is not str:
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError as exc:
                    raise ConfigError(f"{dotted} = {value!r}: cannot parse value: {exc}") from exc
            node[part] = value
    return config_from_dict(data)
