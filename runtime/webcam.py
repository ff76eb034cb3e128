"""Live coaching from a camera, a video file or the synthetic scene.

``python -m runtime.webcam --source 0`` opens an OpenCV window (a GUI OpenCV build: the ``gui`` extra, docs/demo.md)
with the action, its confidence, the streamed feedback text, capture FPS and latency drawn over the live frames; ``q``
or Ctrl-C quits. ``--headless`` runs without a window. Either way the terminal shows one readable line per decision,
feedback and skip, then the summary; ``--jsonl`` prints one JSON event per line on stdout instead (and the JSON summary
on stderr), ``--events FILE`` also writes them to a file, ``--out DIR`` writes the run's events, summary, timeline
picture and (file and synthetic sources) annotated video, and ``--speak`` speaks each feedback (espeak-ng).

Every run ends with one line saying why and, once streaming has started, the run summary (readable lines; with
``--jsonl`` JSON on stderr), whatever stopped it; a traceback only with ``--log-level DEBUG``. SIGTERM is handled
like Ctrl-C: the window in progress is finished (the log says which), the summary printed; a second Ctrl-C /
SIGTERM abandons that window.

Exit codes:

====  ==============================================================================================================
0     done: the stream ended, ``--duration`` passed, or ``q`` in the window
2     bad arguments, configuration, backend, output path or missing speech engine (nothing was streamed)
3     source error: the camera or file cannot be opened, or failed while streaming (the windows already complete
      are decided first); any exception of the source (e.g. an OpenCV ``cv2.error``) counts
4     no display for the window (use ``--headless``)
5     the source was truncated: a cut or corrupt file (the frames before the cut are decided; a
      ``source_truncated`` event and ``ended_by: source_truncated`` in the summary)
6     inference error while streaming: the backend or a stage raised
70    internal error (a bug: please report it with the ``--log-level DEBUG`` output)
130   interrupted by Ctrl-C
141   stdout was closed while streaming (e.g. piped into ``head``)
143   terminated by SIGTERM
====  ==============================================================================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import cv2
import yaml

from runtime.backends import BackendError, backend_from_config
from runtime.config import (
    ConfigError,
    StreamingConfig,
    apply_overrides,
    check_ring_buffer,
    load_config,
    parse_overrides,
)
from runtime.engine import StreamingEngine
from runtime.events import EventBus
from runtime.memory import limit_heap_growth
from runtime.outputs import OutputError, RunOutputs
from runtime.overlay import OverlayState, draw_overlay
from runtime.shutdown import sigterm_as_interrupt, stop_reason
from runtime.sources import CameraSource, FrameSource, SourceError, SyntheticSource, source_from_spec
from runtime.stats import RunSummary
from runtime.tts import SpeechError

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_CONFIG, EXIT_SOURCE, EXIT_DISPLAY, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
EXIT_TRUNCATED, EXIT_INFERENCE, EXIT_INTERNAL, EXIT_OUTPUT_CLOSED, EXIT_TERMINATED = 5, 6, 70, 141, 143
#: Exit code of a run that returned a summary, by ``RunSummary.ended_by``.
EXIT_BY_END = {
    "end_of_stream": EXIT_OK,
    "duration": EXIT_OK,
    "stopped": EXIT_OK,
    "source_truncated": EXIT_TRUNCATED,
    "interrupted": EXIT_INTERRUPTED,
    "terminated": EXIT_TERMINATED,
}
#: Length of ``--source synthetic`` without ``--duration``.
SYNTHETIC_DEFAULT_S = 10.0
WINDOW_TITLE = "Mobile-VideoGPT coach"


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="python -m runtime.webcam", description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="0", help="camera index, video file path, or 'synthetic' (default 0)")
    parser.add_argument(
        "--config", type=Path, default=None, help="streaming config YAML (default streaming_config.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set decision.min_feedback_interval_s=6 (repeatable)",
    )
    parser.add_argument("--backend", default=None, help="pytorch | onnxruntime | tensorrt (default: config)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: config backend.device)")
    parser.add_argument("--engines", default=None, help="engines directory (default: config backend.engines_dir)")
    parser.add_argument("--model", default=None, help="checkpoint directory for the pytorch backend")
    parser.add_argument("--clip", default=None, help="CLIP directory for the pytorch backend")
    parser.add_argument("--headless", action="store_true", help="no window (the terminal lines and outputs stay)")
    parser.add_argument(
        "--duration",
        type=positive_seconds,
        default=None,
        help="seconds: the length of the 'synthetic' stream (default 10); for a camera or file, stop after this much "
        "wall-clock time",
    )
    parser.add_argument(
        "--paced",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="release file/synthetic frames in real time (default), or read them as fast as inference takes them: "
        "every window in order (implies window.latest_wins=false)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_output_arguments(parser)
    return parser


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The output and speech options; each is an override of an ``output.*`` / ``speech.*`` key."""
    group = parser.add_argument_group("output and speech (docs/demo.md)")
    group.add_argument("--jsonl", action="store_true",
                       help="JSONL events on stdout instead of readable lines, JSON summary on stderr (scripts)")
    group.add_argument("--events", metavar="FILE", default=None, help="also write the JSONL events to FILE")
    group.add_argument("--out", metavar="DIR", default=None,
                       help="write events.jsonl, summary.json, timeline.png and (files, synthetic) annotated.mp4")
    group.add_argument("--speak", action="store_true", help="speak each feedback (speech.engine, espeak-ng)")
    group.add_argument("--speak-wav", metavar="DIR", default=None,
                       help="keep every utterance as a WAV file in DIR (implies --speak)")


def output_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The ``output.*`` / ``speech.*`` overrides the output options stand for."""
    overrides: dict[str, object] = {}
    if args.jsonl:
        overrides["output.terminal"] = "jsonl"
    if args.events is not None:
        overrides["output.events_file"] = args.events
    if args.out is not None:
        overrides["output.dir"] = args.out
    if args.speak or args.speak_wav is not None:
        overrides["speech.enabled"] = True
    if args.speak_wav is not None:
        overrides["speech.wav_dir"] = args.speak_wav
    return overrides


def build_outputs(cfg: StreamingConfig, args: argparse.Namespace, source: FrameSource) -> RunOutputs:
    """The run's outputs; file and synthetic sources can be replayed for the annotated video, cameras cannot."""
    replay = None if isinstance(source, CameraSource) else (lambda: build_source(args, cfg, paced=False))
    return RunOutputs(cfg, source.description, bool(args.paced) and not isinstance(source, CameraSource), replay)


def display_problem() -> str:
    """Why no OpenCV window can open here (with how to get one and the headless modes), or ``""``."""
    gui = next((line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
                if line.strip().startswith("GUI:")), "")
    if gui.upper() == "NONE":
        why = "this OpenCV build has no GUI support (opencv-python-headless, what the runtime installs)"
        fix = ("For a window, swap in the GUI build: pip uninstall -y opencv-python-headless && pip install "
               "\"opencv-python>=4.9\"  (the gui extra; make gui; docs/demo.md)")
    elif sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        why = f"no display to open a window on (DISPLAY and WAYLAND_DISPLAY are unset; OpenCV GUI: {gui})"
        fix = "For a window, run it in a desktop session (or with X forwarding: ssh -X)"
    else:
        # Probed in a child process: OpenCV's Qt backend aborts the whole process when it cannot reach the display.
        probe = "import cv2; cv2.namedWindow('probe'); cv2.destroyAllWindows()"
        try:
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            done = None
        if done is not None and done.returncode == 0:
            return ""
        detail = (done.stderr.strip().splitlines() or ["no message"])[0] if done is not None else "timed out"
        why = f"OpenCV ({gui}) cannot open a window here: {detail}"
        fix = "For a window, check that the display is reachable (DISPLAY / WAYLAND_DISPLAY)"
    return (
        f"no window: {why}.\n  {fix}.\n"
        "  Or run with --headless: readable lines; add --jsonl for JSON events (scripts), --out DIR for the annotated "
        "video and timeline of a file or synthetic source, --speak to hear the feedback"
    )


def positive_seconds(text: str) -> float:
    """``--duration``: a finite number of seconds > 0.

    Raises:
        argparse.ArgumentTypeError: Otherwise (argparse exits 2 with the message).
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds > 0")
    return value


def resolve_config(args: argparse.Namespace) -> StreamingConfig:
    """The config file plus ``--set`` and the backend flags (which are overrides of ``backend.*``).

    Raises:
        ConfigError: Naming the bad key or value.
    """
    if args.model is not None and args.clip is None:
        raise ConfigError("--model needs --clip (the CLIP directory that goes with the checkpoint)")
    overrides: dict[str, object] = dict(parse_overrides(args.overrides))
    overrides.update(output_overrides(args))
    for key, value in (
        ("backend.name", args.backend),
        ("backend.device", args.device),
        ("backend.engines_dir", args.engines),
        ("backend.model_dir", args.model),
        ("backend.clip_dir", args.clip),
    ):
        if value is not None:
            overrides[key] = value
    return apply_overrides(load_config(args.config), overrides)


def build_source(args: argparse.Namespace, cfg: StreamingConfig, paced: bool | None = None) -> FrameSource:
    """The ``--source`` (unopened); ``synthetic`` lasts ``--duration`` seconds of stream (default 10).

    Args:
        args: The parsed command line.
        cfg: The configuration (``camera.*`` for a camera).
        paced: Real-time pacing; ``None`` takes ``--paced``.

    Raises:
        SourceError: For an empty spec or a negative camera index.
    """
    paced = args.paced if paced is None else paced
    if args.source.strip().lower() == "synthetic":
        duration = args.duration if args.duration is not None else SYNTHETIC_DEFAULT_S
        return SyntheticSource(duration_s=duration, paced=paced)
    return source_from_spec(args.source, paced=paced, camera=cfg.camera)


def offline_when_unpaced(cfg: StreamingConfig, args: argparse.Namespace, source: FrameSource) -> StreamingConfig:
    """``--no-paced`` on a file or the synthetic scene: read as fast as inference takes frames, every window in order.

    Latest-wins would decode flat out and throw most windows away; nothing is live, so nothing is behind.

    Raises:
        ConfigError: If ``--set window.latest_wins=true`` asks for the opposite.
    """
    if args.paced or isinstance(source, CameraSource):
        return cfg
    asked = parse_overrides(args.overrides).get("window.latest_wins")
    if asked is not None and yaml.safe_load(asked) is True:
        raise ConfigError(
            "--no-paced with --set window.latest_wins=true: an unpaced file has no live edge to keep up with; "
            "use --paced for latest-wins, or drop the --set"
        )
    if cfg.window.latest_wins:
        logger.info("--no-paced: every window in order (window.latest_wins=false), capture waits for inference")
    return apply_overrides(cfg, {"window.latest_wins": False})


def check_engines_flag(args: argparse.Namespace, cfg: StreamingConfig) -> None:
    """An explicit ``--engines`` must hold engines; the pytorch backend would otherwise run the default checkpoint.

    Raises:
        ConfigError: Naming the directory and what to give instead.
    """
    if args.engines is None or args.model is not None or cfg.backend.name != "pytorch":
        return
    if not (Path(args.engines) / "manifest.json").is_file():
        raise ConfigError(
            f"--engines {args.engines} holds no exported engines (no manifest.json): the pytorch backend runs the "
            "checkpoint their manifest records; export first (python -m export), or give --model and --clip"
        )


def exit_code(summary: RunSummary) -> int:
    """The documented exit code of a run that ended with ``summary``."""
    return EXIT_BY_END.get(summary.ended_by, EXIT_INTERNAL)


def report_failure(engine: StreamingEngine, outputs: RunOutputs, label: str, exc: BaseException, code: int) -> int:
    """One line for an error that ended the stream, the summary, and ``code`` (traceback only at DEBUG)."""
    print(f"{label}: {exc}", file=sys.stderr)
    logger.debug("%s", label, exc_info=exc)
    finish_outputs(outputs, engine.summary())
    return code


def finish_outputs(outputs: RunOutputs, summary: RunSummary) -> bool:
    """The summary and the run's files through ``outputs``; ``False`` (and one line) if a file cannot be written."""
    try:
        outputs.finish(summary)
    except OutputError as exc:
        print(f"output error: {exc}", file=sys.stderr)
        return False
    return True


def report_output_closed(engine: StreamingEngine | None) -> int:
    """stdout was closed (``| head``): the run stops; the summary still goes to stderr."""
    try:  # later writes (and the interpreter's final flush) must not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError) as exc:  # stdout without a file descriptor (embedded, captured)
        logger.debug("could not redirect stdout to %s: %s", os.devnull, exc)
    print("output closed: stdout was closed by its reader; stopping", file=sys.stderr)
    if engine is not None:
        print_summary(engine.summary(), sys.stderr)
    return EXIT_OUTPUT_CLOSED


def print_summary(summary: RunSummary, stream: TextIO) -> None:
    """Writes the headline and the JSON summary (when stdout, where the outputs write, is gone)."""
    stream.write(summary.headline() + "\n")
    stream.write(json.dumps({"summary": summary.to_dict()}, indent=1) + "\n")
    stream.flush()


def run_window(engine: StreamingEngine, state: OverlayState, duration_s: float | None, height: int = 720) -> str:
    """Shows the live view until ``q``, the end of the stream, ``duration_s`` or Ctrl-C; returns why it ended."""
    deadline = None if duration_s is None else time.monotonic() + duration_s
    reason = "end_of_stream"
    engine.start()
    try:
        while not engine.done:
            frame = engine.latest_frame()
            if frame is not None:
                view = state.view(frame.timestamp - (state.origin() or 0.0), fps=engine.capture_fps())
                cv2.imshow(WINDOW_TITLE, draw_overlay(frame.image, view, height))
            if (cv2.waitKey(15) & 0xFF) == ord("q"):
                reason = "stopped"
                break
            if deadline is not None and time.monotonic() >= deadline:
                reason = "duration"
                break
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM under sigterm_as_interrupt
        reason = stop_reason(exc)
    finally:
        engine.stop(reason)
        cv2.destroyAllWindows()
    engine.finish()
    return reason


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (the table in the module docstring)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    limit_heap_growth()
    with sigterm_as_interrupt():
        try:
            return run_cli(args)
        except KeyboardInterrupt as exc:  # before streaming started (model load, source open)
            reason = stop_reason(exc)
            print(f"{reason} while starting: nothing was streamed", file=sys.stderr)
            return EXIT_TERMINATED if reason == "terminated" else EXIT_INTERRUPTED
        except BrokenPipeError:
            return report_output_closed(None)
        except Exception as exc:  # noqa: BLE001 - the last resort: one line and a documented code, not a traceback
            print(f"internal error: {type(exc).__name__}: {exc} (run with --log-level DEBUG for the traceback)",
                  file=sys.stderr)
            logger.debug("internal error", exc_info=True)
            return EXIT_INTERNAL


def run_cli(args: argparse.Namespace) -> int:
    """Runs the parsed command line; returns the exit code (Ctrl-C / SIGTERM before streaming propagates)."""
    try:
        cfg = resolve_config(args)
        check_engines_flag(args, cfg)
        source = build_source(args, cfg)
        cfg = offline_when_unpaced(cfg, args, source)
        source.open()  # fail fast, before loading the model, with the device or path in the message
        try:
            check_ring_buffer(cfg, source.nominal_fps, source.description)
        except ConfigError:
            source.close()
            raise
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SourceError as exc:
        print(f"source error: {exc}", file=sys.stderr)
        return EXIT_SOURCE

    engine: StreamingEngine | None = None
    outputs = build_outputs(cfg, args, source)
    try:
        if not args.headless:
            problem = display_problem()
            if problem:
                print(problem, file=sys.stderr)
                return EXIT_DISPLAY
        try:
            outputs.prepare()  # before the model loads: an unwritable --out or a missing espeak-ng fails fast
        except (OutputError, SpeechError) as exc:
            print(f"{'speech' if isinstance(exc, SpeechError) else 'output'} error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            backend = backend_from_config(cfg.backend, prefer_checkpoint=args.model is not None)
            tokenizer = backend.load_tokenizer()
        except BackendError as exc:
            print(f"backend error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if backend.random_weights:
            logger.warning("the model has RANDOM WEIGHTS: its actions and feedback text are meaningless")

        bus = EventBus()
        try:
            engine = StreamingEngine(cfg, backend, source, bus, tokenizer)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        attach_outputs(outputs, bus, engine)
        wall_limit = None if isinstance(source, SyntheticSource) else args.duration  # synthetic: its length
        try:
            if args.headless:
                summary = engine.run(wall_limit)
            else:
                run_window(engine, outputs.overlay, wall_limit, cfg.output.video_height)
                summary = engine.summary()
        except ConfigError as exc:  # checked when the source is open
            print(f"config error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except SourceError as exc:
            return report_failure(engine, outputs, "source error", exc, EXIT_SOURCE)
        except BrokenPipeError:
            return report_output_closed(engine)
        except Exception as exc:  # noqa: BLE001 - whatever the backend or a stage raised while streaming
            return report_failure(engine, outputs, f"inference error ({type(exc).__name__})", exc, EXIT_INFERENCE)
        finally:
            if not engine.threads_alive:  # an abandoned window may still be inside the backend
                backend.close()
        if not finish_outputs(outputs, summary):
            return EXIT_CONFIG
        return exit_code(summary)
    finally:
        outputs.close()
        if engine is None or not engine.threads_alive:  # a capture stuck in read() owns the source until exit
            source.close()


def attach_outputs(outputs: RunOutputs, bus: EventBus, engine: StreamingEngine) -> None:
    """Subscribes the terminal, JSONL, overlay, recorder and speaker to ``bus`` (before the engine starts)."""
    b = engine.backend
    outputs.attach(bus, engine.buffer, f"{b.name}/{b.precision}/{b.device}", bool(b.random_weights))


if __name__ == "__main__":
    sys.exit(main())
