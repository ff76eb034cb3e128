"""Live coaching from a camera, a video file or the synthetic scene.

``python -m runtime.webcam --source 0`` opens an OpenCV window with the action, its confidence, the streamed
feedback text, capture FPS and latency drawn over the live frames; ``q`` or Ctrl-C quits.
``--headless`` prints one JSON event per line on stdout instead and the run summary on stderr.

Exit codes: 0 done, 2 bad configuration / backend / arguments, 3 source error (missing camera, unreadable file),
4 no display for the window (use ``--headless``), 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import cv2

from runtime.backends import BackendError, backend_from_config
from runtime.config import ConfigError, StreamingConfig, apply_overrides, load_config
from runtime.engine import StreamingEngine
from runtime.events import EventBus, JsonlEventWriter
from runtime.overlay import OverlayState, draw_overlay
from runtime.sources import SourceError, source_from_spec
from runtime.stats import RunSummary

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
    parser.add_argument("--headless", action="store_true", help="no window: JSONL events on stdout, summary on stderr")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (wall clock)")
    parser.add_argument(
        "--paced",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="release file/synthetic frames in real time (default) or as fast as they decode",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


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


def print_summary(summary: RunSummary, stream: TextIO) -> None:
    """Writes the headline and the JSON summary."""
    stream.write(summary.headline() + "\n")
    stream.write(json.dumps({"summary": summary.to_dict()}, indent=1) + "\n")
    stream.flush()


def run_window(engine: StreamingEngine, state: OverlayState, duration_s: float | None) -> str:
    """Shows the live view until ``q``, the end of the stream, ``duration_s`` or Ctrl-C; returns why it ended."""
    deadline = None if duration_s is None else time.monotonic() + duration_s
    reason = "end_of_stream"
    engine.start()
    try:
        while not engine.done:
            frame = engine.latest_frame()
            if frame is not None:
                cv2.imshow(WINDOW_TITLE, draw_overlay(frame.image, state.lines(engine.capture_fps())))
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


def _check_display() -> None:
    """Raises cv2.error when OpenCV has no GUI (headless build or no display)."""
    cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_NORMAL)


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

    try:
        if not args.headless:
            try:
                _check_display()
            except cv2.error as exc:
                print(f"no display for the OpenCV window ({exc.err}); run with --headless", file=sys.stderr)
                return EXIT_DISPLAY
        try:
            backend = backend_from_config(cfg.backend, prefer_checkpoint=args.model is not None)
            tokenizer = backend.load_tokenizer()
        except BackendError as exc:
            print(f"backend error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if backend.random_weights:
            logger.warning("the model has RANDOM WEIGHTS: its actions and feedback text are meaningless")

        bus = EventBus()
        state = OverlayState(random_weights=bool(backend.random_weights), backend=backend.name)
        bus.subscribe(state)
        if args.headless:
            bus.subscribe(JsonlEventWriter(sys.stdout))
        try:
            engine = StreamingEngine(cfg, backend, source, bus, tokenizer)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            if args.headless:
                summary = engine.run(args.duration)
            else:
                run_window(engine, state, args.duration)
                summary = engine.summary()
        except SourceError as exc:
            print(f"source error: {exc}", file=sys.stderr)
            return EXIT_SOURCE
        finally:
            backend.close()
        print_summary(summary, sys.stderr)
        return EXIT_INTERRUPTED if summary.ended_by == "interrupted" else EXIT_OK
    finally:
        source.close()


if __name__ == "__main__":
    sys.exit(main())
