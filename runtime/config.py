"""Typed, validated streaming configuration loaded from ``streaming_config.yaml``.

Every key is optional in the YAML file (missing keys take the defaults below),
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from engine_format.prompt import DEFAULT_INSTRUCTION

logger = logging.getLogger(__name__)

#: The repository's default configuration file.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "streaming_config.yaml"

POLICY_NAMES = ("model", "every_n", "random", "motion")
MOTION_MODES = ("frame_diff", "embedding")
BACKEND_NAMES = ("pytorch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16")
#: The ``pytorch`` backend's fast-path settings (docs/gpu.md); ``SCAN_IMPL_NAMES`` are the runtime's choices from
#: ``mobile_videogpt.selective_scan.SCAN_IMPLS`` (``scan_marker`` is for exports).
SCAN_IMPL_NAMES = ("chunked", "ref", "triton")
PREPROCESS_NAMES = ("cpu", "device")
ATTENTION_NAMES = ("sdpa", "sdpa_causal")
TERMINAL_MODES = ("lines", "jsonl", "quiet")
SPEECH_ENGINES = ("espeak-ng",)
SPEECH_PLAYERS = ("auto", "alsa", "pulse", "none")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass(frozen=True)
class WindowConfig:
    """Windowing in stream time.

    Attributes:
        window_s: Window length in seconds, > 0.
        overlap_s: Overlap of consecutive windows in seconds, in ``[0, window_s)``.
        frames_per_window: Frames sampled per window; must equal the model's ``num_frames`` (16 for the release),
            checked when the session starts.
        latest_wins: Process only the newest complete window and skip stale
            ones (live use); ``false`` processes every window in order
            (offline evaluation: file and synthetic sources then wait for the
            worker instead of overwriting the ring buffer; cameras never wait).
        min_tail_s: At the end of a file, stream time after the last full
            window shorter than this is reported as a skipped window
            (``short_tail``) instead of getting a final window
            ``[end - window_s, end]``; in ``[0, window_s)``.
    """

    window_s: float = 2.0
    overlap_s: float = 0.5
    frames_per_window: int = 16
    latest_wins: bool = True
    min_tail_s: float = 0.25


@dataclass(frozen=True)
class CaptureConfig:
    """Capture buffering.

    Attributes:
        ring_buffer_frames: Ring buffer capacity in frames; must hold at least
            one window at the source's frame rate (``window_s x fps + 1``,
            checked when the source is open: :func:`check_ring_buffer`; 256 is
            8.5 s at 30 fps).
    """

    ring_buffer_frames: int = 256


@dataclass(frozen=True)
class CameraConfig:
    """Live cameras (``--source N``): requested mode, timeouts and reconnecting after a stall.

    Attributes:
        width: Requested capture width in pixels (0 = the driver's default).
        height: Requested capture height in pixels (0 = the driver's default).
        fps: Requested frame rate (0 = the driver's default). What the camera delivers is measured at open and
            logged next to the request.
        open_timeout_s: Longest wait for the device to open and deliver its first frame.
        read_timeout_s: Longest wait for one frame before the camera counts as stalled.
        max_consecutive_failures: Failed reads in a row before the camera counts as stalled.
        reconnect_attempts: Release-and-reopen attempts after a stall before the run ends with a source error
            (0 = end at the first stall).
        reconnect_backoff_s: Wait before the first reopen attempt, doubled after each failed one.
        reconnect_backoff_max_s: Longest wait between two attempts.
        probe_frames: Warm-up frames read at open to measure the delivered size and frame rate.
    """

    width: int = 0
    height: int = 0
    fps: float = 0.0
    open_timeout_s: float = 5.0
    read_timeout_s: float = 2.0
    max_consecutive_failures: int = 30
    reconnect_attempts: int = 5
    reconnect_backoff_s: float = 0.5
    reconnect_backoff_max_s: float = 8.0
    probe_frames: int = 10


@dataclass(frozen=True)
class CacheConfig:
    """Per-frame feature cache.

    Attributes:
        max_frames: Number of frames whose encoder output is kept. Only the
            frames shared by consecutive windows are ever reused (4 with the
            defaults), and one frame's CLIP features plus image tokens take
            about 1.1 MB at the 0.5B geometry, so a few windows' worth is enough.
    """

    max_frames: int = 64


@dataclass(frozen=True)
class ContextConfig:
    """KV context limits.

    Attributes:
        max_windows: Windows kept in the decoder context; the oldest is
            evicted (its KV range dropped, later keys re-based) beyond this.
        max_tokens: Token budget of the context including the system prefix
            and room for one feedback; also bounded by the model's
            max_position_embeddings (checked when the engine starts).
        clear_after_feedback: Drop every window from the context after a
            feedback (the system prefix stays cached).
        timeout_s: Clear the context when the stream time between the newest
            window in it and the next window exceeds this (camera stalled, or a
            long latest-wins skip): the old windows no longer lead up to it.
    """

    max_windows: int = 4
    max_tokens: int = 12000
    clear_after_feedback: bool = True
    timeout_s: float = 30.0


@dataclass(frozen=True)
class EveryNConfig:
    """Parameters of the ``every_n`` policy.

    Attributes:
        n: Feedback on every n-th processed window.
    """

    n: int = 4


@dataclass(frozen=True)
class RandomConfig:
    """Parameters of the ``random`` policy.

    Attributes:
        p: Probability of feedback per window.
        seed: Random seed (runs are reproducible).
    """

    p: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class MotionConfig:
    """Parameters of the ``motion`` policy.

    Attributes:
        threshold: Feedback when the motion score exceeds this. For
            ``frame_diff`` the score is a mean absolute grey-level difference
            (0-255 scale); for ``embedding`` it is ``1 - cosine`` (0-2).
        mode: ``frame_diff`` or ``embedding``.
    """

    threshold: float = 0.8
    mode: str = "frame_diff"


@dataclass(frozen=True)
class PolicyConfig:
    """Action policy selection.

    Attributes:
        name: One of ``model``, ``every_n``, ``random``, ``motion``.
        every_n: Parameters of ``every_n``.
        random: Parameters of ``random``.
        motion: Parameters of ``motion``.
    """

    name: str = "every_n"
    every_n: EveryNConfig = field(default_factory=EveryNConfig)
    random: RandomConfig = field(default_factory=RandomConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)


@dataclass(frozen=True)
class DecisionConfig:
    """Feedback gate.

    Attributes:
        confidence_threshold: Actions below this confidence become ``<next>``.
        min_feedback_interval_s: Minimum stream time between feedbacks.
        allow_correct: If false, ``<correct>`` becomes ``<next>``.
        suppress_repeats: Suppress a feedback text equal to the previous one.
    """

    confidence_threshold: float = 0.5
    min_feedback_interval_s: float = 4.0
    allow_correct: bool = False
    suppress_repeats: bool = True


@dataclass(frozen=True)
class GenerationConfig:
    """Feedback text generation.

    ``max_new_tokens``, ``repetition_penalty`` and ``stop_tokens`` follow one precedence: this key when it is set (not
    null), else the checkpoint's ``generation_config.json`` (recorded in the engines' manifest), else the default
    (24 tokens, penalty 1.0, ``<|im_end|>`` and ``<|endoftext|>``); see ``runtime.generation.resolve_generation``.

    Attributes:
        instruction: The coaching instruction given to the model.
        max_new_tokens: Upper bound on generated tokens per feedback; null = the checkpoint's ``max_new_tokens``.
            Set by default: a checkpoint's budget is for free-form answers (the release passes 1024), not one
            coaching sentence, and the context reserves room for it.
        repetition_penalty: HF repetition penalty over the generated ids (1.0 = none); null = the checkpoint's.
        stop_tokens: Generation stops at any of these token strings; null = the checkpoint's stop ids.
    """

    instruction: str = DEFAULT_INSTRUCTION
    max_new_tokens: int | None = 24
    repetition_penalty: float | None = None
    stop_tokens: tuple[str, ...] | None = None


@dataclass(frozen=True)
class OnnxRuntimeConfig:
    """Memory settings of the ``onnxruntime`` backend (``docs/design.md``, "Memory").

    Attributes:
        cpu_mem_arena: Keep ONNX Runtime's CPU memory arena. It makes allocation cheaper but keeps every
            session's largest activations resident for good (about 0.9 GB for the tiny video encoder alone).
        decode_chunk_rows: Most rows per decoder call: a window append (2402 visual rows) runs as consecutive
            calls of this many, so the exported decoder's attention scores ``[heads, rows, context]`` never exist
            for the whole window at once; 0 = one call. Same result (causal attention), in [0, 65536].
    """

    cpu_mem_arena: bool = False
    decode_chunk_rows: int = 512


@dataclass(frozen=True)
class BackendConfig:
    """Inference backend.

    Attributes:
        name: One of ``pytorch``, ``onnxruntime``, ``tensorrt``.
        precision: ``fp32`` or ``fp16``.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (``pytorch`` runs the reference there; ``onnxruntime`` picks the
            matching execution provider; ``tensorrt`` needs ``cuda``).
        engines_dir: Directory with the exported engines.
        intra_op_threads: CPU threads per operator (0 = the runtime's default).
        model_dir: Checkpoint the ``pytorch`` backend runs when ``engines_dir``
            holds no engines (``make export`` writes the synthetic tiny one).
        clip_dir: CLIP directory that goes with ``model_dir``.
        scan_impl: ``pytorch`` only: the selective scan, ``chunked`` | ``ref`` | ``triton`` (CUDA).
        preprocess: ``pytorch`` only: ``cpu`` (the reference, on the host) or ``device`` (uint8 frames uploaded once,
            both branches on ``device``).
        cuda_graphs: ``pytorch`` on CUDA only: replay the encoders and the decode step from CUDA graphs.
        attention: ``pytorch`` only: ``sdpa`` (transformers' mask) or ``sdpa_causal`` (no mask tensor).
        onnxruntime: Memory settings of the ``onnxruntime`` backend.
    """

    name: str = "onnxruntime"
    precision: str = "fp32"
    device: str = "cpu"
    engines_dir: str = "engines/tiny"
    intra_op_threads: int = 2
    model_dir: str = "checkpoints/tiny/model"
    clip_dir: str = "checkpoints/tiny/clip"
    scan_impl: str = "chunked"
    preprocess: str = "cpu"
    cuda_graphs: bool = False
    attention: str = "sdpa"
    onnxruntime: OnnxRuntimeConfig = field(default_factory=OnnxRuntimeConfig)


@dataclass(frozen=True)
class OutputConfig:
    """What a run shows and writes (see docs/demo.md).

    Attributes:
        terminal: ``lines`` (one readable line per decision, feedback and skip, then the summary), ``jsonl`` (one
            JSON event per line on stdout and the JSON summary on stderr, for scripts) or ``quiet``.
        events_file: Also write every event as JSONL to this file (``""``: none).
        dir: Write the run's artifacts here: ``events.jsonl``, ``summary.json``, ``timeline.png`` and, for file and
            synthetic sources, ``annotated.mp4`` (``""``: none).
        annotated_video: Write ``annotated.mp4`` into ``dir`` (file and synthetic sources only).
        timeline: Write ``timeline.png`` into ``dir``.
        video_height: Frame height of the annotated video and the live window in pixels (frames are scaled).
        font: A TrueType/OpenType file for the text of the pictures (``""``: DejaVu Sans when installed, else
            Pillow's bundled Latin font); set a CJK font for Chinese or Japanese feedback.
    """

    terminal: str = "lines"
    events_file: str = ""
    dir: str = ""
    annotated_video: bool = True
    timeline: bool = True
    video_height: int = 720
    font: str = ""


@dataclass(frozen=True)
class SpeechConfig:
    """Spoken feedback through an offline text-to-speech engine (see docs/demo.md).

    Attributes:
        enabled: Speak every shown (not suppressed) feedback.
        engine: The engine; ``espeak-ng`` (the Debian package of that name).
        voice: An engine voice (``espeak-ng --voices`` lists them).
        rate_wpm: Speaking rate in words per minute.
        volume: Amplitude, 0-200 (100 is the engine's default).
        player: ``auto`` (``pulse`` when a PulseAudio/PipeWire server is there, else ``alsa`` when ALSA lists a
            sound card, else none), ``alsa`` (``aplay``), ``pulse`` (``pacat``) or ``none`` (synthesise and time
            only).
        wav_dir: Keep every utterance as a WAV file here (``""``: none).
        max_pending: Utterances that may wait while one is spoken; a newer feedback replaces the oldest waiting one
            (reported as superseded): stale advice is worse than none.
    """

    enabled: bool = False
    engine: str = "espeak-ng"
    voice: str = "en-us"
    rate_wpm: int = 165
    volume: int = 100
    player: str = "auto"
    wav_dir: str = ""
    max_pending: int = 1


@dataclass(frozen=True)
class StreamingConfig:
    """Every streaming parameter, grouped by section."""

    window: WindowConfig = field(default_factory=WindowConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), suitable for YAML/JSON."""
        return _to_plain(dataclasses.asdict(self))


# --------------------------------------------------------------------------- loading

_D = TypeVar("_D")


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


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
