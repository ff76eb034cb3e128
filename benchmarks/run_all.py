"""The standard CPU benchmark set (``make bench``): tiny streaming loop and ratios, decode and allocation studies,
reduced 0.5B timings, the runtime's install footprint.

Usage::

    python -m benchmarks.run_all --out artifacts/bench [--budget-min 15] [--skip-0.5b] [--skip-footprint] [--quick]
        [--memory-min 10]

Steps (each benchmark runs in its own process, so each peak RSS is its own; the JSON of each step records the
command that reproduces it):

1. setup: the synthetic tiny checkpoint, the tiny ONNX engines (``python -m export --preset tiny`` when
   ``engines/tiny`` is missing; its time is recorded) and a 20 s sample video of the synthetic exercise scene;
2. ``components`` at the tiny preset: every stage for ``pytorch:fp32``, ``onnxruntime:fp32`` and
   ``onnxruntime:fp16`` timed interleaved, with the ratios (ONNX Runtime / PyTorch per stage, fp16 / fp32, cached vs
   uncached frame encoding at 0.5 s overlap, append vs re-prefill) and the scaling curves;
3. ``stream`` at the tiny preset on ONNX Runtime fp32 over the sample video: unpaced and paced, 20 s of stream;
4. ``decode`` at the tiny preset: greedy-generation step in the session's feedback loop vs an isolated decode step,
   ``pytorch:fp32`` and ``onnxruntime:fp32``, same context, interleaved;
5. ``allocations`` at the tiny preset on ONNX Runtime fp32: bytes allocated per decoded token at three context
   lengths;
6. the 0.5B geometry (random weights), reduced, never exporting (exporting 0.5B takes minutes and 12 GB): ``decode``
   on ``pytorch:fp32`` (plus ``onnxruntime:fp32`` and ``allocations`` when ``engines/0.5b`` already exists), and
   ``components`` per backend: frame selection, image encoder vs batch (1, 4), decoder append of 256 rows and decode
   step vs context length (55, 1024, 2048). One whole 0.5B window (16-frame CLIP, VideoMamba's 32 blocks, a
   2418-row append) takes minutes on 2 cores, so those calls are left to ``benchmarks.stream --preset 0.5b`` by hand;
7. ``footprint``: installed size and import time of the runtime-only install vs the full install, in throwaway venvs
   under ``artifacts/venvs`` (built on first use, minutes; reused afterwards);
8. ``memory`` (last, when the budget allows: ``--memory-min`` minutes of stream take about half as long on 2 cores):
   the webcam CLI over a long unpaced synthetic stream, peak RSS and the RSS / KV slopes per hour of stream
   (``make bench-memory`` runs it alone, with the arena comparison).

A step is skipped (and the summary says so) when less than its estimate is left of ``--budget-min``; a step that
overruns it is killed. ``--quick`` runs the smallest sizes: no 0.5B components, a minimal 0.5B decode, and the
footprint only with existing venvs. Writes ``summary.json`` (every step's report, its wall time and exit status) and
``summary.md`` (rendered by ``benchmarks.report``) under ``--out``, next to each step's own JSON, Markdown and plots.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, command_line, report_header, write_json

logger = logging.getLogger("benchmarks.run_all")

SAMPLE_VIDEO_S = 20.0
#: Rough cost of one variant's reduced 0.5B components step on the 2-core development machine under other users' load
#: (two variants in one step took 351 s and, on a busier run, more than 600 s); a step is skipped with less time left.
ESTIMATE_05B_S = 240.0
#: Extra time when the 0.5B random-weight checkpoint has to be written first.
ESTIMATE_05B_CHECKPOINT_S = 120.0
#: The 0.5B decode step per variant: a 2418-row window append per round (about 15 s on 2 cores) plus the steps.
ESTIMATE_05B_DECODE_S = 120.0
#: The footprint step with both venvs built, and when they have to be built (pip installs, torch included).
ESTIMATE_FOOTPRINT_S = (90.0, 600.0)
#: The report file each kind of step writes (the step name starts with the kind).
REPORT_FILES = {"components": "components.json", "stream": "stream.json", "decode": "decode.json",
                "allocations": "allocations.json", "footprint": "footprint.json", "memory": "memory.json"}
#: Wall seconds per stream minute of the memory step on the 2-core machine (tiny engines, unpaced; measured ~35 s).
ESTIMATE_MEMORY_S_PER_STREAM_MIN = 40.0


def checkpoint_05b_missing() -> bool:
    """Whether the 0.5B random-weight checkpoint still has to be written."""
    return not (REPO / "checkpoints" / "0.5b" / "model" / "synthetic.json").is_file()


def estimate_05b() -> float:
    """Seconds the reduced 0.5B components step is expected to take, including writing its checkpoint when missing."""
    return ESTIMATE_05B_S + (ESTIMATE_05B_CHECKPOINT_S if checkpoint_05b_missing() else 0.0)


def estimate_footprint(venvs: Path) -> float:
    """Seconds the footprint step is expected to take (reusing the venvs when both exist)."""
    from benchmarks.footprint import venv_ready

    ready = all(venv_ready(venvs / kind) for kind in ("runtime", "full"))
    return ESTIMATE_FOOTPRINT_S[0 if ready else 1]


def display_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (the children run from the repository root)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path.resolve())


def run_step(name: str, args: list[str], out: Path, timeout_s: float, steps: dict[str, Any]) -> bool:
    """Runs one benchmark module in a child process and records its outcome.

    Args:
        name: Step name.
        args: ``[module, *arguments]`` (run as ``python -m``).
        out: The step's output folder (its ``--out``).
        timeout_s: Wall-clock limit; the child is killed after it.
        steps: Outcome record, updated in place.

    Returns:
        Whether the step succeeded.
    """
    shown = display_path(out)
    cmd = [sys.executable, "-m", *args, "--out", shown]
    logger.info("step %s: %s", name, " ".join(cmd[1:]))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, timeout=max(1.0, timeout_s), capture_output=True, text=True, check=False)
        status, rc = ("ok" if proc.returncode == 0 else "failed"), proc.returncode
        tail = (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired as exc:
        status, rc = "timeout", None
        tail = str(exc.stdout or "")[-1500:] + str(exc.stderr or "")[-1500:]
    wall = time.perf_counter() - start
    steps[name] = {"status": status, "returncode": rc, "wall_s": wall, "out": shown,
                   "command": shlex.join(["python", "-m", *args, "--out", shown])}
    if status != "ok":
        steps[name]["log_tail"] = tail
        logger.error("step %s %s after %.0f s:\n%s", name, status, wall, tail)
    else:
        logger.info("step %s done in %.0f s", name, wall)
    return status == "ok"


def setup(out: Path, steps: dict[str, Any], timeout_s: float) -> Path:
    """Checkpoint, tiny engines and the sample video.

    Args:
        out: Output folder.
        steps: Outcome record.
        timeout_s: Limit for the export.

    Returns:
        The sample video.
    """
    from mobile_videogpt.synthetic import ensure_synthetic_checkpoint  # torch: the pytorch variants need it anyway
    from runtime.sources import write_sample_video

    start = time.perf_counter()
    ensure_synthetic_checkpoint("tiny", REPO / "checkpoints" / "tiny")
    steps["checkpoint_tiny"] = {"status": "ok", "wall_s": time.perf_counter() - start}
    if (REPO / "engines" / "tiny" / "manifest.json").is_file():
        steps["export_tiny"] = {"status": "existing", "wall_s": 0.0, "out": "engines/tiny"}
    else:
        cmd = [sys.executable, "-m", "export", "--preset", "tiny"]
        logger.info("exporting the tiny engines: %s", " ".join(cmd[1:]))
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, timeout=timeout_s)
        steps["export_tiny"] = {"status": "ok", "wall_s": time.perf_counter() - start, "out": "engines/tiny",
                                "command": "python -m export --preset tiny"}
    video = out / "sample.mp4"
    if not video.is_file():
        write_sample_video(video, duration_s=SAMPLE_VIDEO_S)
    return video


def run(out: Path, budget_s: float, skip_05b: bool, quick: bool, command: str,
        skip_footprint: bool = False, memory_min: float = 10.0) -> dict[str, Any]:
    """Runs every step within the budget.

    Args:
        out: Output folder.
        budget_s: Wall-clock budget of the whole set.
        skip_05b: Leave the 0.5B steps out.
        quick: Smallest sizes (see the module docstring).
        command: Command line for the summary.
        skip_footprint: Leave the footprint step out.
        memory_min: Minutes of stream of the memory step (0 leaves it out).

    Returns:
        The summary.
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    summary = report_header("run_all", command, preset="tiny,0.5b", backend="pytorch,onnxruntime",
                            precision="fp32,fp16", threads=2)
    steps: dict[str, Any] = {}
    summary["steps"] = steps

    def left() -> float:
        return budget_s - (time.perf_counter() - start)

    video = setup(out, steps, left())

    if quick:
        comp = ["--repeats", "1", "--batch-sizes", "1,2", "--cache-windows", "2", "--contexts", "70,600"]
        stream = ["--duration", "3.5", "--every-n", "1", "--max-new-tokens", "4", "--warmup-windows", "0"]
        decode = ["--rounds", "3", "--new-tokens", "8", "--isolated-calls", "4"]
        decode_05b = ["--rounds", "2", "--new-tokens", "6", "--isolated-calls", "3"]
        alloc = ["--windows", "1,2", "--steps", "32"]
    else:
        comp = ["--repeats", "5", "--curve-repeats", "3", "--batch-sizes", "1,2,4,8,16", "--cache-windows", "4"]
        stream = ["--duration", str(SAMPLE_VIDEO_S), "--every-n", "2"]
        decode = ["--rounds", "8", "--new-tokens", "16", "--isolated-calls", "8"]
        decode_05b = ["--rounds", "3", "--new-tokens", "8", "--isolated-calls", "4"]
        alloc = ["--windows", "1,2,4", "--steps", "64"]

    def budgeted(name: str, estimate: float, args: list[str], skip_reason: str | None = None) -> None:
        if skip_reason:
            steps[name] = {"status": "skipped", "reason": skip_reason}
        elif left() < estimate:
            steps[name] = {"status": "skipped",
                           "reason": f"{left():.0f} s of the budget left, the step needs ~{estimate:.0f} s"}
        else:
            run_step(name, args, out / name, left(), steps)
            return
        logger.warning("skipping %s: %s", name, steps[name]["reason"])

    run_step("components_tiny", ["benchmarks.components", "--preset", "tiny",
                                 "--variants", "pytorch:fp32,onnxruntime:fp32,onnxruntime:fp16", *comp],
             out / "components_tiny", left(), steps)
    run_step("stream_tiny_onnxruntime", ["benchmarks.stream", "--preset", "tiny", "--backend", "onnxruntime",
                                         "--precision", "fp32", "--source", display_path(video), *stream],
             out / "stream_tiny_onnxruntime", left(), steps)
    run_step("decode_tiny", ["benchmarks.decode", "--preset", "tiny", "--variants", "pytorch:fp32,onnxruntime:fp32",
                             *decode], out / "decode_tiny", left(), steps)
    run_step("allocations_tiny", ["benchmarks.allocations", "--preset", "tiny", "--variants", "onnxruntime:fp32",
                                  *alloc], out / "allocations_tiny", left(), steps)

    engines_05b = (REPO / "engines" / "0.5b" / "manifest.json").is_file()
    no_05b = "--skip-0.5b" if skip_05b else None
    decode_variants = "pytorch:fp32,onnxruntime:fp32" if engines_05b else "pytorch:fp32"
    budgeted("decode_0.5b", ESTIMATE_05B_DECODE_S * len(decode_variants.split(","))
             + (ESTIMATE_05B_CHECKPOINT_S if checkpoint_05b_missing() else 0.0),
             ["benchmarks.decode", "--preset", "0.5b", "--variants", decode_variants, *decode_05b], no_05b)
    budgeted("allocations_0.5b", 120.0,
             ["benchmarks.allocations", "--preset", "0.5b", "--variants", "onnxruntime:fp32", *alloc],
             no_05b or (None if engines_05b else "engines/0.5b not exported (python -m export --preset 0.5b)"))
    for variant in ["pytorch:fp32"] + (["onnxruntime:fp32"] if engines_05b else []):
        budgeted(f"components_0.5b_{variant.split(':')[0]}", estimate_05b(),
                 ["benchmarks.components", "--preset", "0.5b", "--variants", variant,
                  "--stages", "frame_selection,embed_tokens", "--ratios", "none", "--repeats", "2",
                  "--batch-sizes", "1,4", "--contexts", "55,1024,2048", "--append-tokens", "256"],
                 no_05b or ("--quick" if quick else None))

    venvs = REPO / "artifacts" / "venvs"
    budgeted("footprint", estimate_footprint(venvs) if not quick else ESTIMATE_FOOTPRINT_S[0],
             ["benchmarks.footprint", "--venvs", display_path(venvs),
              *(["--reuse-only", "--runs", "2"] if quick else [])],
             "--skip-footprint" if skip_footprint else None)
    minutes = 1.0 if quick else memory_min
    budgeted("memory_tiny", 30.0 + ESTIMATE_MEMORY_S_PER_STREAM_MIN * minutes,
             ["benchmarks.memory", "--stream-min", f"{minutes:g}", *(["--warmup-s", "10"] if quick else [])],
             "--memory-min 0" if memory_min <= 0 else None)

    summary["reports"] = {}
    for name, step in steps.items():
        kind = name.split("_")[0]  # components_tiny, components_0.5b_pytorch, stream_tiny_onnxruntime, ...
        if step.get("status") == "ok" and kind in REPORT_FILES:
            summary["reports"][name] = json.loads((REPO / step["out"] / REPORT_FILES[kind]).read_text())
    summary["wall_s"] = time.perf_counter() - start
    summary["budget_s"] = budget_s
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        0 when every step that ran succeeded, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    parser.add_argument("--budget-min", type=float, default=15.0, help="wall-clock budget of the whole set")
    parser.add_argument("--skip-0.5b", dest="skip_05b", action="store_true", help="leave the 0.5B steps out")
    parser.add_argument("--skip-footprint", action="store_true", help="leave the venv footprint step out")
    parser.add_argument("--quick", action="store_true", help="smallest sizes, minimal 0.5B, footprint only with venvs")
    parser.add_argument("--memory-min", type=float, default=10.0,
                        help="stream minutes of the long-run memory step, run last within the budget (0: leave out)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run(args.out, args.budget_min * 60, args.skip_05b, args.quick,
                  command_line("benchmarks.run_all", argv), args.skip_footprint, args.memory_min)
    write_json(args.out / "summary.json", summary)
    from benchmarks.report import render_summary

    text = render_summary(summary)
    (args.out / "summary.md").write_text(text)
    print(text)
    print(f"run_all: {summary['wall_s'] / 60:.1f} min; written {args.out / 'summary.json'} and "
          f"{args.out / 'summary.md'}")
    return 0 if all(s.get("status") in ("ok", "existing", "skipped") for s in summary["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
