"""The README's main job on a fresh machine: ``python -m runtime.demo`` (``make demo`` exports the engines first).

1. Checks that the configured engines exist (``backend.engines_dir``, default ``engines/tiny``; ``make demo`` runs
   ``python -m export`` for them first: the runtime never runs the exporter itself).
2. Writes the synthetic exercise video (16 s) to ``artifacts/sample.mp4`` if it is missing.
3. Streams it headless, in real time, through the configured backend (default ``onnxruntime``), printing one
   readable line per decision and feedback, and writes ``artifacts/demo/``: ``annotated.mp4`` (the video with the
   coach's overlay burned in), ``timeline.png`` (the whole run in one picture), ``events.jsonl`` and
   ``summary.json``. With a synthetic checkpoint both pictures say RANDOM WEIGHTS.

No camera, GPU or network is needed. Extra arguments are passed to ``runtime.webcam``: ``--speak`` speaks each
feedback (espeak-ng), ``--jsonl`` prints JSON events instead of lines, ``--set k=v`` overrides a config key.
Exit codes are ``runtime.webcam``'s (its module docstring has the table); the demo's own checks exit 2 (no
engines, bad configuration) or 3 (the sample video cannot be written).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engine_format.manifest import Manifest, ManifestError
from runtime import webcam
from runtime.config import ConfigError, apply_overrides, load_config
from runtime.sources import SourceError, write_sample_video


SAMPLE_VIDEO = Path("artifacts/sample.mp4")
OUT_DIR = Path("artifacts/demo")
# Two 8 s exercise cycles: long enough for the default every-4th-window policy to speak at least once on 2 CPUs.
SAMPLE_DURATION_S = 16.0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (those of ``runtime.webcam``)."""
    parser = argparse.ArgumentParser(prog="python -m runtime.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=None, help="streaming config YAML (default streaming_config.yaml)"
    )
    parser.add_argument("--video", type=Path, default=SAMPLE_VIDEO, help="video to stream (written if missing)")
    parser.add_argument("--engines", default=None, help="engines directory (default: config backend.engines_dir)")
    parser.add_argument("--backend", default=None, help="pytorch | onnxruntime | tensorrt (default: config)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"where the run's files go (default {OUT_DIR})")
    args, extra = parser.parse_known_args(argv)
    # The readable lines are the demo's output; the library's INFO log only with --log-level INFO.
    level = next((a.split("=", 1)[1] for a in extra if a.startswith("--log-level=")), None)
    if "--log-level" in extra and extra.index("--log-level") + 1 < len(extra):
        level = extra[extra.index("--log-level") + 1]
    logging.basicConfig(level=level or "WARNING", format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        overrides = {k: v for k, v in (("backend.engines_dir", args.engines), ("backend.name", args.backend)) if v}
        cfg = apply_overrides(load_config(args.config), overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return webcam.EXIT_CONFIG
    engines = Path(cfg.backend.engines_dir)
    have_engines = True
    try:
        Manifest.load(engines)
    except ManifestError as exc:
        if cfg.backend.name != "pytorch":
            print(f"demo: {exc}\nexport the engines first: make export (python -m export)", file=sys.stderr)
            return webcam.EXIT_CONFIG
        have_engines = False  # the pytorch backend runs the configured checkpoint (backend.model_dir)
    say = sys.stderr if "--jsonl" in extra else sys.stdout  # stdout is the JSONL stream then
    if not args.video.is_file():
        try:
            write_sample_video(args.video, duration_s=SAMPLE_DURATION_S)
        except SourceError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return webcam.EXIT_SOURCE
        print(f"demo: wrote the synthetic exercise video {args.video} ({SAMPLE_DURATION_S:g} s)", file=say)
    webcam_args = ["--source", str(args.video), "--headless", "--paced"]
    webcam_args += ["--engines", str(engines)] if have_engines else []
    webcam_args += ["--backend", cfg.backend.name, "--out", str(args.out)]
    if level is None:
        webcam_args += ["--log-level", "WARNING"]
    if args.config is not None:
        webcam_args += ["--config", str(args.config)]
    print(f"demo: streaming {args.video} in real time through {cfg.backend.name} ({engines}); one line per "
          "decision, then the files", file=say, flush=True)
    code = webcam.main([*webcam_args, *extra])
    if code == webcam.EXIT_OK and (args.out / "annotated.mp4").is_file():
        print(f"demo: watch {args.out / 'annotated.mp4'} (VLC, mpv or ffplay) and open {args.out / 'timeline.png'}",
              file=say)
    return code


if __name__ == "__main__":
    sys.exit(main())
