"""Live coaching from a camera, a video file or the synthetic scene.

``python -m runtime.webcam --source 0`` opens an OpenCV window (a GUI OpenCV build: the ``gui`` extra, docs/demo.md)
with the action, its confidence, the streamed feedback text, capture FPS and latency drawn over the live frames; ``q``
or Ctrl-C quits. ``--headless`` runs without a window. Either way the terminal shows one readable line per decision,
feedback and skip, then the summary; ``--jsonl`` prints one JSON event per line on stdout instead (and the JSON summary
on stderr), ``--events FILE`` also writes them to a file, ``--out DIR`` writes the run's events, summary, timeline
picture and (file and synthetic sources) annotated video, and ``--speak`` speaks each feedback (espeak-ng).

Exit codes: 0 done, 2 bad configuration / backend / arguments / output path / speech engine missing, 3 source error
(missing camera, unreadable file), 4 no window possible (OpenCV without GUI, or no display: use ``--headless``),
130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2

from runtime.backends import BackendError, backend_from_config
from runtime.config import ConfigError, StreamingConfig, apply_overrides, load_config
from runtime.engine import StreamingEngine
from runtime.events import EventBus
from runtime.outputs import OutputError, RunOutputs
from runtime.overlay import OverlayState, draw_overlay
from runtime.sources import CameraSource, FrameSource, SourceError, source_from_spec
from runtime.tts import SpeechError

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_CONFIG, EXIT_SOURCE, EXIT_DISPLAY, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
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
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (wall clock)")
    parser.add_argument(
        "--paced",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="release file/synthetic frames in real time (default) or as fast as they decode",
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
    replay = None if isinstance(source, CameraSource) else (lambda: source_from_spec(args.source, paced=False))
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
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        engine.stop(reason)
        cv2.destroyAllWindows()
    engine.join()
    return reason


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = resolve_config(args)
        source = source_from_spec(args.source, paced=args.paced, camera=cfg.camera)
        source.open()  # fail fast, before loading the model, with the device or path in the message
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SourceError as exc:
        print(f"source error: {exc}", file=sys.stderr)
        return EXIT_SOURCE

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
        try:
            if args.headless:
                summary = engine.run(args.duration)
            else:
                run_window(engine, outputs.overlay, args.duration, cfg.output.video_height)
                summary = engine.summary()
        except SourceError as exc:
            print(f"source error: {exc}", file=sys.stderr)
            return EXIT_SOURCE
        finally:
            backend.close()
        try:
            outputs.finish(summary)
        except OutputError as exc:
            print(f"output error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return EXIT_INTERRUPTED if summary.ended_by == "interrupted" else EXIT_OK
    finally:
        outputs.close()
        source.close()


def attach_outputs(outputs: RunOutputs, bus: EventBus, engine: StreamingEngine) -> None:
    """Subscribes the terminal, JSONL, overlay, recorder and speaker to ``bus`` (before the engine starts)."""
    b = engine.backend
    outputs.attach(bus, engine.buffer, f"{b.name}/{b.precision}/{b.device}", bool(b.random_weights))


if __name__ == "__main__":
    sys.exit(main())
