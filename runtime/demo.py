"""The README's main job on a fresh machine: ``python -m runtime.demo`` (``make demo``).

1. Makes sure the configured engines exist (``backend.engines_dir``, default ``engines/tiny``): if the manifest is
   missing, runs ``python -m export`` (the tiny synthetic model, offline) in a subprocess.
2. Writes the synthetic exercise video (16 s) to ``artifacts/sample.mp4`` if it is missing.
3. Streams it headless, in real time, through the configured backend (default ``onnxruntime``): JSONL events on
   stdout, the run summary on stderr (labelled random weights).

No camera, GPU or network is needed. Extra arguments are passed to ``runtime.webcam`` (e.g. ``--set k=v``).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime import webcam
from runtime.config import ConfigError, load_config
from runtime.sources import write_sample_video

logger = logging.getLogger(__name__)

SAMPLE_VIDEO = Path("artifacts/sample.mp4")
# Two 8 s exercise cycles: long enough for the default every-4th-window policy to speak at least once on 2 CPUs.
SAMPLE_DURATION_S = 16.0
EXPORT_PRESET = "tiny"


class DemoError(RuntimeError):
    """A demo prerequisite could not be produced."""


def ensure_engines(engines_dir: Path, precision: str = "fp32", preset: str = EXPORT_PRESET) -> Path:
    """Exports the engines with ``python -m export`` unless ``engines_dir/manifest.json`` exists.

    Args:
        engines_dir: Where the engines must be (``<out>/<name>``).
        precision: Precision to export (the configured one; ``make export`` builds both).
        preset: Synthetic checkpoint preset to export.

    Returns:
        ``engines_dir``.

    Raises:
        DemoError: If the export package is not installed or the export fails.
    """
    if (engines_dir / "manifest.json").is_file():
        return engines_dir
    if importlib.util.find_spec("export.__main__") is None:
        raise DemoError(
            f"{engines_dir} has no manifest.json and the exporter (python -m export) is not available in this "
            "checkout; export the engines first, or run with --backend pytorch"
        )
    cmd = [
        sys.executable,
        "-m",
        "export",
        "--preset",
        preset,
        "--name",
        engines_dir.name,
        "--out",
        str(engines_dir.parent),
        "--precision",
        precision,
    ]
    logger.info("exporting the engines (%s): %s", engines_dir, " ".join(cmd))
    # stdout of the demo is the JSONL event stream: the exporter's report goes to stderr instead.
    done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
    sys.stderr.write(done.stdout)
    if done.returncode != 0:
        raise DemoError(f"python -m export failed with exit code {done.returncode} (command: {' '.join(cmd)})")
    if not (engines_dir / "manifest.json").is_file():
        raise DemoError(f"python -m export finished but {engines_dir / 'manifest.json'} does not exist")
    return engines_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m runtime.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=None, help="streaming config YAML (default streaming_config.yaml)"
    )
    parser.add_argument("--video", type=Path, default=SAMPLE_VIDEO, help="video to stream (written if missing)")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return webcam.EXIT_CONFIG
    backend_flag = next((extra[i + 1] for i, a in enumerate(extra[:-1]) if a == "--backend"), cfg.backend.name)
    try:
        if backend_flag != "pytorch":
            ensure_engines(Path(cfg.backend.engines_dir), cfg.backend.precision)
    except DemoError as exc:
        print(f"demo error: {exc}", file=sys.stderr)
        return 1
    if not args.video.is_file():
        write_sample_video(args.video, duration_s=SAMPLE_DURATION_S)
        logger.info("wrote the sample video %s", args.video)
    webcam_args = ["--source", str(args.video), "--headless", "--paced"]
    if args.config is not None:
        webcam_args += ["--config", str(args.config)]
    return webcam.main([*webcam_args, *extra])


if __name__ == "__main__":
    sys.exit(main())
