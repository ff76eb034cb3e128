"""Streaming benchmark: the real StreamingEngine over a video, unpaced (throughput) and paced (skips).

Usage::

    python -m benchmarks.stream --preset tiny --backend onnxruntime --source synthetic --duration 20 --out DIR
    python -m benchmarks.stream --preset 0.5b --backend pytorch --source clip.mp4 --duration 3.5 --out DIR

Runs ``runtime.engine.StreamingEngine`` (capture thread, ring buffer, scheduler, and on the inference thread the
``runtime.session.StreamSession``: feature cache, stages, decoder context, policy, feedback generation; the code the
webcam CLI and the demo run) on one backend, after an untimed warm-up window; :func:`measure_runs` is also what
``benchmarks.gpu`` runs for PyTorch on CUDA:

* **unpaced**: frames are decoded as fast as possible and every window is processed in order
  (``window.latest_wins: false``, a ring buffer that holds the whole stream), so the run measures throughput:
  sustained input FPS (stream frames per wall second) and real-time factor (processing time / stream time; < 1 means
  the backend keeps up with a live camera);
* **paced**: frames are released at the source's frame rate and the scheduler is latest-wins, as with a camera, so
  the run measures how many windows a live stream would skip.

Feedback is forced with the ``every_n`` policy (``--every-n``, no minimum interval) so every run measures the time to
first token and tokens/s. Per window it records each stage's latency (``WindowDecided.latency_ms``, the stage names
of ``runtime.stats.STAGES``: frame decode, preprocessing, image encoder with its image ETP, frame selection, video
encoder with pooling and video ETP, decoder append, action decision; the projectors are inside the encoders' graphs
in the backend API, and ``components.py`` times them apart on the reference), the KV-cache bytes, and the process's
peak RSS.

``--duration`` is seconds of *stream*; a window covers 2 s every 1.5 s, so N windows need ``2 + 1.5 (N - 1)`` s.
At the 0.5B geometry on a 2-core CPU one window takes minutes (VideoMamba's 32 blocks dominate): use
``--duration 3.5`` (2 windows) there and read the result as a latency measurement, not a streaming one.

Writes ``stream.json``, ``stream.md`` and ``stream_latency.png`` (stacked p50 per stage) under ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import (
    command_line,
    current_rss_mb,
    fmt_ms,
    machine_line,
    markdown_table,
    peak_rss_mb,
    report_header,
    summarize,
    summarize_ms,
    write_json,
)
from benchmarks.fixtures import SYNTHETIC_FPS, Variant, build_backend
from runtime.backends.base import ModelBackend
from runtime.config import StreamingConfig, apply_overrides, load_config
from runtime.engine import StreamingEngine
from runtime.events import (
    ContextCleared,
    ContextEvicted,
    Event,
    EventBus,
    FeedbackFinished,
    FeedbackStarted,
    WindowDecided,
    WindowSkipped,
)
from runtime.frames import Frame
from runtime.sources import FrameSource, SyntheticSource, VideoFileSource
from runtime.stats import STAGES
from runtime.windowing import WindowScheduler

logger = logging.getLogger("benchmarks.stream")

#: Stages drawn in the stacked bar (``total`` is their sum plus bookkeeping, so it is not stacked).
STACKED_STAGES = tuple(s for s in STAGES if s != "total")


class LimitedSource(FrameSource):
    """Ends another source after ``duration_s`` of stream time (a video file is usually longer than a run).

    Args:
        inner: The source to read.
        duration_s: Stream seconds to deliver, counted from the first frame's timestamp.
    """

    def __init__(self, inner: FrameSource, duration_s: float) -> None:
        super().__init__()
        if not duration_s > 0:
            raise ValueError(f"duration_s = {duration_s}: must be > 0")
        self.inner, self.duration_s = inner, duration_s
        self._t0: float | None = None

    @property
    def nominal_fps(self) -> float:
        """The inner source's frame rate."""
        return self.inner.nominal_fps

    @property
    def description(self) -> str:
        """The inner source's name and the limit."""
        return f"{self.inner.description} (first {self.duration_s:g} s)"

    def _open(self) -> None:
        self._t0 = None
        self.inner.open()

    def _read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None:
            return None
        if self._t0 is None:
            self._t0 = frame.timestamp
        # Half a frame of tolerance: index / fps timestamps are not exact binary fractions.
        if frame.timestamp - self._t0 > self.duration_s + 0.5 / self.nominal_fps:
            return None
        return frame

    def _close(self) -> None:
        self.inner.close()


def make_source(spec: str, duration_s: float, paced: bool) -> FrameSource:
    """The benchmark's frame source.

    Args:
        spec: ``synthetic`` or a video file path.
        duration_s: Stream seconds.
        paced: Release frames at the source's frame rate.

    Returns:
        An unopened source that ends after ``duration_s``.
    """
    if spec == "synthetic":
        return SyntheticSource(fps=SYNTHETIC_FPS, duration_s=duration_s, paced=paced)
    return LimitedSource(VideoFileSource(spec, paced=paced), duration_s)


def stream_config(base: StreamingConfig, *, paced: bool, fps: float, duration_s: float, every_n: int,
                  max_new_tokens: int, threads: int) -> StreamingConfig:
    """The engine configuration of one run: the repository's config with the benchmark's overrides.

    Args:
        base: The loaded ``streaming_config.yaml``.
        paced: Live-like run (latest-wins) or throughput run (every window, buffer holds the whole stream).
        fps: Source frame rate.
        duration_s: Stream seconds.
        every_n: Feedback on every n-th processed window.
        max_new_tokens: Feedback length cap.
        threads: Intra-op threads.

    Returns:
        The validated configuration.
    """
    overrides: dict[str, Any] = {
        "policy.name": "every_n",
        "policy.every_n.n": every_n,
        "decision.min_feedback_interval_s": 0.0,
        "decision.suppress_repeats": False,
        "generation.max_new_tokens": max_new_tokens,
        "backend.intra_op_threads": threads,
        "window.latest_wins": paced,
    }
    if not paced:
        overrides["capture.ring_buffer_frames"] = max(base.capture.ring_buffer_frames, math.ceil((duration_s + 1) * fps))
    return apply_overrides(base, overrides)


def complete_windows(stream_s: float, window_s: float, stride_s: float, min_tail_s: float = 0.25) -> int:
    """Windows a stream of ``stream_s`` seconds that ended accounts for (the scheduler's rule, decided or skipped):
    the grid windows complete by its end, plus one for the time after the last of them (its final window, or a
    ``short_tail`` skip when shorter than ``min_tail_s``); a stream shorter than one window has one.

    Args:
        stream_s: Stream time covered (``RunSummary.stream_s``: to the end of the last frame).
        window_s: Window length.
        stride_s: Window stride.
        min_tail_s: ``window.min_tail_s``.

    Returns:
        The count.
    """
    scheduler = WindowScheduler(window_s, window_s - stride_s, latest_wins=False, min_tail_s=min_tail_s)
    scheduler.set_origin(0.0)
    return len(scheduler.end_windows(stream_s)) + (scheduler.tail_skipped(stream_s) is not None)


def run_once(
    cfg: StreamingConfig, backend: ModelBackend, tokenizer: Any, source: FrameSource, max_wall_s: float | None
) -> dict[str, Any]:
    """One engine run; collects its events and summary.

    Args:
        cfg: Engine configuration.
        backend: The backend (shared between runs).
        tokenizer: Its tokenizer.
        source: Frame source.
        max_wall_s: Wall-clock cap (``None``: until the stream ends).

    Returns:
        The run's measurements.
    """
    events: list[Event] = []
    received: list[tuple[float, Event]] = []  # arrival time of each event, for the feedback durations
    bus = EventBus()
    bus.subscribe(events.append)
    bus.subscribe(lambda e: received.append((time.perf_counter(), e)))
    rss_before = current_rss_mb()
    engine = StreamingEngine(cfg, backend, source, bus, tokenizer)
    summary = engine.run(max_wall_s)
    decided = [e for e in events if isinstance(e, WindowDecided)]
    skipped = [e for e in events if isinstance(e, WindowSkipped)]
    feedback = [e for e in events if isinstance(e, FeedbackFinished)]
    stages = {s: summarize_ms([e.latency_ms[s] for e in decided]) for s in STAGES if decided and s in decided[0].latency_ms}
    window_ms = sum(e.latency_ms.get("total", 0.0) for e in decided)
    # Feedback generation runs on the inference thread between windows: it is processing time too.
    started_at = {e.window_index: t for t, e in received if isinstance(e, FeedbackStarted)}
    feedback_ms = sum((t - started_at[e.window_index]) * 1e3 for t, e in received
                      if isinstance(e, FeedbackFinished) and e.window_index in started_at)
    stride = cfg.window.window_s - cfg.window.overlap_s
    stream_s = summary.stream_s
    return {
        "paced": cfg.window.latest_wins,
        "latest_wins": cfg.window.latest_wins,
        "ended_by": summary.ended_by,
        "wall_s": summary.wall_s,
        "stream_s": stream_s,
        "frames_captured": summary.frames_captured,
        "frames_overwritten": summary.frames_overwritten,
        "sustained_input_fps": summary.frames_captured / summary.wall_s if summary.wall_s > 0 else 0.0,
        "processing_s": (window_ms + feedback_ms) / 1e3,
        "real_time_factor": (window_ms + feedback_ms) / 1e3 / stream_s if stream_s > 0 else None,
        "wall_over_stream": summary.wall_s / stream_s if stream_s > 0 else None,
        "windows": {
            "complete": complete_windows(stream_s, cfg.window.window_s, stride, cfg.window.min_tail_s),
            "processed": len(decided),
            "skipped": len(skipped),
            "skipped_by_reason": dict(Counter(e.reason for e in skipped)),
        },
        "stages": stages,
        "feedback": {
            "count": len(feedback),
            "ttft": summarize_ms([e.ttft_ms for e in feedback]) if feedback else None,
            "tokens_per_s": summarize([e.tokens_per_s for e in feedback if e.tokens_per_s > 0])
            if any(e.tokens_per_s > 0 for e in feedback) else None,
            "tokens": [e.n_tokens for e in feedback],
            "generation_ms_total": feedback_ms,
        },
        "kv_bytes": {
            "max": summary.kv_bytes_max,
            "last": summary.kv_bytes_last,
            "per_window": [e.kv_bytes for e in decided],
            "context_tokens_per_window": [e.context_tokens for e in decided],
        },
        "context": {
            "evictions": sum(isinstance(e, ContextEvicted) for e in events),
            "clears": sum(isinstance(e, ContextCleared) for e in events),
        },
        "cache_hit_rate": summary.cache_hit_rate,
        "lag_s": summarize([e.lag_s for e in decided]) if decided else None,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "engine_summary": summary.to_dict(),
    }


def measure_runs(
    backend: ModelBackend,
    base: StreamingConfig,
    *,
    source_spec: str,
    duration_s: float,
    modes: list[str],
    every_n: int,
    max_new_tokens: int,
    warmup_windows: int,
    threads: int,
    max_wall_s: float | None = None,
) -> dict[str, Any]:
    """Warms the backend up with an untimed run, then runs the engine once per mode.

    Args:
        backend: The backend (shared between the runs).
        base: The streaming configuration the runs' overrides apply to.
        source_spec: ``synthetic`` or a video file.
        duration_s: Stream seconds per run.
        modes: ``unpaced`` and/or ``paced``.
        every_n: Feedback period in processed windows.
        max_new_tokens: Feedback length cap.
        warmup_windows: Untimed windows first (0 to skip).
        threads: Intra-op threads (recorded in the config).
        max_wall_s: Wall-clock cap per run.

    Returns:
        ``{"source", "warmup_s", "runs": {mode: run_once's result}, "config"}``.
    """
    tokenizer = backend.load_tokenizer()
    fps = SYNTHETIC_FPS if source_spec == "synthetic" else None
    if fps is None:
        with VideoFileSource(source_spec, paced=False) as probe:
            fps = probe.nominal_fps
    out: dict[str, Any] = {"source": {"spec": source_spec, "fps": fps, "duration_s": duration_s}}
    if warmup_windows:
        warm_s = base.window.window_s + (warmup_windows - 1) * (base.window.window_s - base.window.overlap_s) + 0.1
        cfg = stream_config(base, paced=False, fps=fps, duration_s=warm_s, every_n=1,
                            max_new_tokens=min(4, max_new_tokens), threads=threads)
        logger.info("warm-up: %d window(s), untimed", warmup_windows)
        t = time.perf_counter()
        run_once(cfg, backend, tokenizer, make_source("synthetic", warm_s, paced=False), None)
        out["warmup_s"] = time.perf_counter() - t
    out["runs"] = {}
    for mode in modes:
        paced = mode == "paced"
        cfg = stream_config(base, paced=paced, fps=fps, duration_s=duration_s, every_n=every_n,
                            max_new_tokens=max_new_tokens, threads=threads)
        logger.info("%s run: %.1f s of stream from %s", mode, duration_s, source_spec)
        result = run_once(cfg, backend, tokenizer, make_source(source_spec, duration_s, paced), max_wall_s)
        out["runs"][mode] = result
        logger.info("%s: %d processed, %d skipped in %.1f s", mode, result["windows"]["processed"],
                    result["windows"]["skipped"], result["wall_s"])
    out["config"] = {"every_n": every_n, "max_new_tokens": max_new_tokens, "warmup_windows": warmup_windows,
                     "window_s": base.window.window_s, "overlap_s": base.window.overlap_s,
                     "max_windows_in_context": base.context.max_windows}
    return out


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Builds the backend once and runs :func:`measure_runs` (see :func:`main` for ``args``).

    Returns:
        The report.
    """
    variant = Variant(args.backend, args.precision, args.device)
    report = report_header("stream", command, preset=args.preset, backend=args.backend, precision=args.precision,
                           threads=args.threads)
    report["device"] = args.device
    t = time.perf_counter()
    backend = build_backend(variant, args.preset, engines_dir=args.engines, checkpoint_dir=args.checkpoint_dir,
                            threads=args.threads)
    report["backend_load_s"] = time.perf_counter() - t
    report["random_weights"] = bool(backend.random_weights)
    modes = [m for m in args.modes.split(",") if m]
    try:
        report.update(measure_runs(backend, load_config(args.config), source_spec=args.source,
                                   duration_s=args.duration, modes=modes, every_n=args.every_n,
                                   max_new_tokens=args.max_new_tokens, warmup_windows=args.warmup_windows,
                                   threads=args.threads, max_wall_s=args.max_wall))
    finally:
        backend.close()
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """The stream report's tables.

    Args:
        report: ``run``'s output.

    Returns:
        Markdown text.
    """
    runs = report["runs"]
    modes = list(runs)
    head = (f"### Streaming ({report['preset']}, {report['backend']} {report['precision']}, "
            f"{report['source']['spec']}, {report['source']['duration_s']:g} s of stream, random weights)")
    rows = []
    for mode in modes:
        r = runs[mode]
        fb = r["feedback"]
        rows.append([
            mode, f"{r['sustained_input_fps']:.1f}", f"{r['real_time_factor']:.2f}" if r["real_time_factor"] else "-",
            r["windows"]["complete"], r["windows"]["processed"], r["windows"]["skipped"],
            fmt_ms(fb["ttft"]["p50_ms"]) if fb["ttft"] else "-",
            f"{fb['tokens_per_s']['p50']:.1f}" if fb["tokens_per_s"] else "-",
            f"{r['kv_bytes']['max'] / 2**20:.1f}", f"{r['peak_rss_mb']:.0f}",
        ])
    out = [head, "", f"Machine: {machine_line(report)}", "",
           markdown_table(["run", "input FPS", "RTF", "windows complete", "processed", "skipped", "TTFT p50 ms",
                           "tokens/s p50", "KV max MiB", "peak RSS MiB"], rows), ""]
    stage_rows = []
    for stage in STAGES:
        cells = []
        for mode in modes:
            s = runs[mode]["stages"].get(stage)
            cells.append(f"{fmt_ms(s['p50_ms'])} / {fmt_ms(s['p95_ms'])} / {fmt_ms(s['p99_ms'])}" if s else "-")
        stage_rows.append([stage, *cells])
    out.append(markdown_table(["stage (per window)", *[f"{m} p50/p95/p99 ms" for m in modes]], stage_rows))
    n = {m: runs[m]["stages"]["total"]["n"] for m in modes if "total" in runs[m]["stages"]}
    out += ["", "Windows per percentile: " + ", ".join(f"{m} n={v}" for m, v in n.items())
            + " (with few windows p95/p99 are close to the maximum)."]
    return "\n".join(out) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Stacked bar of each run's per-stage p50 latency per window.

    Args:
        report: ``run``'s output.
        path: Output PNG.

    Returns:
        ``path``.
    """
    from benchmarks.plots import stacked_latency_bar

    bars = {mode: {s: r["stages"][s]["p50_ms"] for s in STACKED_STAGES if s in r["stages"]}
            for mode, r in report["runs"].items()}
    title = f"Streaming window latency: {report['preset']} {report['backend']} {report['precision']} (random weights)"
    return stacked_latency_bar(path, bars, title)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "0.5b", "1.5b"])
    parser.add_argument("--backend", default="onnxruntime", choices=["pytorch", "onnxruntime", "tensorrt"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (pytorch on CUDA; tensorrt needs cuda)")
    parser.add_argument("--source", default="synthetic", help="synthetic or a video file")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of stream per run (see the docstring)")
    parser.add_argument("--modes", default="unpaced,paced", help="comma-separated subset of unpaced,paced")
    parser.add_argument("--every-n", type=int, default=2, help="feedback on every n-th processed window")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="feedback length cap")
    parser.add_argument("--warmup-windows", type=int, default=1, help="untimed windows before the runs")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--engines", type=Path, default=None, help="engines directory (default engines/<preset>)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="pytorch: default checkpoints/<preset>")
    parser.add_argument("--config", type=Path, default=None, help="streaming config (default streaming_config.yaml)")
    parser.add_argument("--max-wall", type=float, default=None, help="wall-clock cap per run in seconds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in ("unpaced", "paced")]
    if bad or not modes:
        parser.error(f"--modes: unknown {bad}; use a comma-separated subset of unpaced,paced")
    if args.duration <= 0 or args.every_n < 1 or args.warmup_windows < 0:
        parser.error("--duration must be > 0, --every-n >= 1, --warmup-windows >= 0")
    report = run(args, command_line("benchmarks.stream", argv))
    write_json(args.out / "stream.json", report)
    text = to_markdown(report)
    (args.out / "stream.md").write_text(text)
    plot(report, args.out / "stream_latency.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
