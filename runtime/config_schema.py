"""The streaming configuration's schema: its sections as frozen dataclasses with their defaults and allowed names.

:mod:`runtime.config` loads, coerces and validates them (and re-exports every name here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_format.prompt import DEFAULT_INSTRUCTION

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


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
