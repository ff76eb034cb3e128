"""Long-run memory benchmark: RSS and KV of the webcam CLI over a long unpaced synthetic stream.

Usage::

    python -m benchmarks.memory --out artifacts/bench/memory [--stream-min 12] [--variants default,arena,before]
        [--arena-ratio-windows 6] [--append-engines engines/0.5b]

Run it from the repository root (the children run there).

Per variant it runs what a user runs, in a child process::

    python -m runtime.webcam --engines engines/tiny --source synthetic --duration S --no-paced --headless ...

(offline: every window in order, the capture waiting for inference), reads its JSONL events (the stream time and KV
bytes of each decision) and samples its RSS (``/proc/PID/statm``) every ``--sample-s`` seconds against the stream time
of the newest decision. Per variant the report has the peak RSS (the child's ``ru_maxrss`` from ``wait4``), the RSS
and KV slopes over stream time after ``--warmup-s`` (least squares, in MB per hour of stream: a leak shows as a
positive slope that does not depend on the run's length), the steady RSS (median of the last quarter), windows
processed and the wall time.

Variants:

* ``default``: the repository's configuration (ONNX Runtime's CPU arena off, 512-row decoder calls, and the CLI's
  ``runtime.memory.limit_heap_growth``);
* ``arena``: ONNX Runtime's CPU arena on (``backend.onnxruntime.cpu_mem_arena=true``), the faster setting;
* ``before``: the arena on and one decoder call per window append (``decode_chunk_rows=0``), the settings before
  issue 9.

Variants run one after the other, so their wall times compare only roughly (``--arena-ratio-windows`` below is the
same-run ratio).

With ``--append-engines DIR`` it also measures the transient memory of one decoder window append, the largest
single allocation peak of a stream: ``--append-rows`` (2421, one window's turn) rows onto ``--append-past`` (7330,
three windows of context) positions, once per ``--append-chunk-rows`` value (``0``: one call; ``512``: the default
``backend.onnxruntime.decode_chunk_rows``), each in its own child process (RSS before the call and the process's peak
after it; the past is zero-filled: memory, not numerics). At the 0.5B geometry::

    python -m benchmarks.memory --out artifacts/bench/memory_05b --variants none --append-engines engines/0.5b

With ``--arena-ratio-windows N`` it also times the arena's speed in one process: two ONNX Runtime backends, arena on
and off (both with 512-row decoder calls), decide the same N synthetic windows alternately (the order rotating), and
the report has each stage's p50 and the median per-window ratio of total time (arena on / off), a same-run ratio.

The policy is ``every_n`` with ``--every-n`` (default 8): the context fills to ``context.max_windows`` (4), evicts
for four windows, then a feedback is generated and the context cleared, so KV growth, eviction, generation and
clearing all repeat many times. Writes ``memory.json``, ``memory.md`` and ``memory.png`` under ``--out``.
Random weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, command_line, machine_line, markdown_table, report_header, write_json

logger = logging.getLogger("benchmarks.memory")

#: Extra ``--set`` overrides of each variant.
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "arena": ["backend.onnxruntime.cpu_mem_arena=true"],
    "before": ["backend.onnxruntime.cpu_mem_arena=true", "backend.onnxruntime.decode_chunk_rows=0"],
}
#: The issue's goal for the tiny stream.
PEAK_GOAL_MB = 1000.0


def slope_per_hour(times_s: list[float], values: list[float], warmup_s: float) -> float | None:
    """Least-squares slope of ``values`` over stream time, per hour, after ``warmup_s`` (``None``: < 3 points).

    Args:
        times_s: Stream seconds of each value.
        values: The values (MB, bytes, ...).
        warmup_s: Points before this stream time are left out (loading, first windows).

    Returns:
        Units of ``values`` per hour of stream.
    """
    pts = [(t, v) for t, v in zip(times_s, values) if t >= warmup_s]
    if len(pts) < 3 or pts[-1][0] - pts[0][0] <= 0:
        return None
    t = np.asarray([p[0] for p in pts]) / 3600.0
    return float(np.polyfit(t, np.asarray([p[1] for p in pts], dtype=np.float64), 1)[0])


def _rss_mb(pid: int) -> float | None:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):  # the child has exited
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_variant(name: str, engines: Path, stream_s: float, every_n: int, sample_s: float, warmup_s: float,
                log_path: Path) -> dict[str, Any]:
    """One CLI run of a variant, sampled.

    Args:
        name: Variant name (:data:`VARIANTS`).
        engines: Engines directory.
        stream_s: Seconds of synthetic stream.
        every_n: Feedback every n-th window.
        sample_s: RSS sampling period (wall seconds).
        warmup_s: Stream seconds left out of the slopes.
        log_path: Where the child's stderr goes.

    Returns:
        The variant's measurements.

    Raises:
        RuntimeError: If the run does not end with exit code 0.
    """
    sets = ["policy.name=every_n", f"policy.every_n.n={every_n}", "backend.intra_op_threads=2", *VARIANTS[name]]
    cmd = [sys.executable, "-m", "runtime.webcam", "--engines", str(engines), "--source", "synthetic",
           "--duration", f"{stream_s:g}", "--no-paced", "--headless", "--jsonl", "--log-level", "WARNING"]
    for item in sets:
        cmd += ["--set", item]
    logger.info("variant %s: %s", name, " ".join(cmd[1:]))
    windows: list[dict[str, float]] = []
    latest = {"t": 0.0}
    started = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)

        def read_events() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                event = json.loads(line)
                if event["type"] == "window_decided":
                    latest["t"] = event["t_end"]
                    windows.append({"t": event["t_end"], "kv_bytes": event["kv_bytes"],
                                    "context_tokens": event["context_tokens"], "wall_s": time.perf_counter() - started})

        reader = threading.Thread(target=read_events, daemon=True)
        reader.start()
        samples: list[dict[str, float]] = []
        while reader.is_alive():
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append({"wall_s": time.perf_counter() - started, "t": latest["t"], "rss_mb": rss})
            reader.join(sample_s)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"variant {name}: the CLI exited {proc.returncode}; see {log_path}")
    peak_mb = usage.ru_maxrss / 1024.0  # kB on Linux
    rss = [s["rss_mb"] for s in samples]
    tail = rss[len(rss) * 3 // 4 :] or rss
    return {
        "overrides": sets,
        "command": " ".join(["python", *cmd[1:]]),
        "stream_s": stream_s,
        "wall_s": wall,
        "windows_processed": len(windows),
        "peak_rss_mb": peak_mb,
        "steady_rss_mb": float(np.median(tail)) if tail else None,
        "rss_slope_mb_per_hour": slope_per_hour([s["t"] for s in samples], rss, warmup_s),
        "kv_max_mb": max((w["kv_bytes"] for w in windows), default=0) / 2**20,
        "kv_slope_mb_per_hour": slope_per_hour([w["t"] for w in windows], [w["kv_bytes"] / 2**20 for w in windows],
                                               warmup_s),
        "max_context_tokens": max((w["context_tokens"] for w in windows), default=0),
        "samples": samples,
        "windows": windows,
    }


def probe_append(engines: Path, past: int, rows: int, chunk_rows: int) -> dict[str, Any]:
    """One decoder append in this process (run as a child by :func:`measure_append`).

    Returns:
        RSS before the call, the process's peak after it and the call's seconds, in MiB / s.
    """
    import resource

    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from runtime.memory import limit_heap_growth, release_free_heap

    limit_heap_growth()  # as the CLI does
    backend = OnnxRuntimeBackend(engines, intra_op_threads=2, decode_chunk_rows=chunk_rows)
    kv = backend.allocate_kv(past + rows + 1)
    kv.record_append(np.arange(past, dtype=np.int64))  # a zero-filled past of `past` positions
    release_free_heap()
    before = _rss_mb(os.getpid())
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    rows_in = np.random.default_rng(0).normal(0, 0.02, size=(rows, backend.hidden_size)).astype(np.float32)
    start = time.perf_counter()
    backend.decode([rows_in], kv)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"chunk_rows": chunk_rows, "past": past, "rows": rows, "heads": backend.facts.num_attention_heads,
            "rss_before_mb": before, "load_peak_mb": load_peak, "peak_mb": peak, "seconds": seconds,
            "scores_matrix_mb": backend.facts.num_attention_heads * rows * (past + rows) * 4 / 2**20}


def arena_ratio(engines: Path, windows: int) -> dict[str, Any]:
    """Interleaved timing of the CPU arena on vs off on the same windows, in this process (see the docstring)."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from runtime.config import apply_overrides, config_from_dict
    from runtime.memory import limit_heap_growth
    from runtime.session import StreamSession
    from runtime.sources import SyntheticSource
    from runtime.windowing import WindowScheduler

    limit_heap_growth()  # as the CLI does
    cfg = apply_overrides(config_from_dict({}), {"policy.every_n.n": 10**6})  # decisions only: context fills, evicts
    sessions = {}
    for name, arena in (("arena_on", True), ("arena_off", False)):
        backend = OnnxRuntimeBackend(engines, intra_op_threads=2, cpu_mem_arena=arena)
        sessions[name] = StreamSession(cfg, backend, backend.load_tokenizer())
        sessions[name].start()
    scheduler = WindowScheduler(cfg.window.window_s, cfg.window.overlap_s, latest_wins=False)
    scheduler.set_origin(0.0)
    with SyntheticSource(duration_s=scheduler.window(windows).t_end) as source:
        frames = list(source)
    latency: dict[str, list[dict[str, float]]] = {name: [] for name in sessions}
    order = list(sessions)
    for k in range(windows + 1):  # window 0 is a warm-up
        window = scheduler.window(k)
        inside = [f for f in frames if window.t_start <= f.timestamp <= window.t_end]
        for name in order[k % 2 :] + order[: k % 2]:
            outcome = sessions[name].step(window, inside)
            if k:
                latency[name].append(outcome.decided.latency_ms)
    stages = ("image_encoder", "video_encoder", "decoder_append", "total")
    ratios = [on["total"] / off["total"] for on, off in zip(latency["arena_on"], latency["arena_off"])]
    return {"windows": windows,
            "p50_ms": {n: {st: float(np.median([r[st] for r in rows])) for st in stages}
                       for n, rows in latency.items()},
            "total_ratio_on_over_off": {"p50": float(np.median(ratios)), "p10": float(np.percentile(ratios, 10)),
                                        "p90": float(np.percentile(ratios, 90))}}


def measure_arena_ratio(engines: Path, windows: int) -> dict[str, Any]:
    """:func:`arena_ratio` in a child process (its memory settings and peak stay out of this process)."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--probe-arena", str(engines), "--arena-ratio-windows",
           str(windows)]
    logger.info("arena ratio: %s", " ".join(cmd[1:]))
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"arena ratio probe exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_append(engines: Path, past: int, rows: int, chunk_rows: list[int]) -> list[dict[str, Any]]:
    """:func:`probe_append` per chunk size, each in a fresh child process (its peak RSS is its own)."""
    results = []
    for c in chunk_rows:
        cmd = [sys.executable, "-m", "benchmarks.memory", "--probe-append", str(engines), "--append-past", str(past),
               "--append-rows", str(rows), "--append-chunk-rows", str(c)]
        logger.info("decoder append probe: %s", " ".join(cmd[1:]))
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"append probe (chunk {c}) exited {done.returncode}: {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["transient_mb"] = result["peak_mb"] - result["rss_before_mb"]
        results.append(result)
    return results


def to_markdown(report: dict[str, Any]) -> str:
    """The memory table."""
    out = [f"### Long-run memory ({report['preset']} engines, onnxruntime fp32, random weights)", "",
           f"Machine: {machine_line(report)}", ""]
    if report["variants"]:
        out += _variants_table(report)
    if report.get("arena_ratio"):
        a = report["arena_ratio"]
        rows = [[n, *[f"{v:.0f}" for v in per.values()]] for n, per in a["p50_ms"].items()]
        r = a["total_ratio_on_over_off"]
        out += [f"**CPU arena speed** ({a['windows']} windows, interleaved in one process; p50 ms):", "",
                markdown_table(["variant", *next(iter(a["p50_ms"].values()))], rows), "",
                f"Window total, arena on / off: {r['p50']:.2f} [{r['p10']:.2f}-{r['p90']:.2f}] (median per-window "
                "ratio [p10-p90]).", ""]
    if report.get("append"):
        a = report["append"]
        rows = [[r["chunk_rows"] or "one call", f"{r['rss_before_mb']:.0f}", f"{r['peak_mb']:.0f}",
                 f"{r['transient_mb']:.0f}", f"{r['scores_matrix_mb']:.0f}", f"{r['load_peak_mb']:.0f}",
                 f"{r['seconds']:.0f}"] for r in a["results"]]
        out += [f"**One decoder append** ({Path(a['engines']).name}: {a['results'][0]['rows']} rows onto "
                f"{a['results'][0]['past']} positions, {a['results'][0]['heads']} heads; one child process each):", "",
                markdown_table(["rows per call", "RSS before MiB", "peak MiB", "transient MiB",
                                "one full scores matrix MiB", "load peak MiB", "seconds"], rows), ""]
    return "\n".join(out) + "\n"


def _variants_table(report: dict[str, Any]) -> list[str]:
    rows = []
    for name, v in report["variants"].items():
        rows.append([name, f"{v['stream_s'] / 60:.1f}", v["windows_processed"], f"{v['peak_rss_mb']:.0f}",
                     f"{v['steady_rss_mb']:.0f}", _slope(v["rss_slope_mb_per_hour"]), f"{v['kv_max_mb']:.1f}",
                     _slope(v["kv_slope_mb_per_hour"]), f"{v['wall_s']:.0f}"])
    return [markdown_table(["variant", "stream min", "windows", "peak RSS MiB", "steady RSS MiB", "RSS slope MB/h",
                            "KV max MiB", "KV slope MB/h", "wall s"], rows), "",
            f"Slopes: least squares over stream time after the first {report['warmup_s']:g} s. "
            + readme_line(report), ""]


def _calls(chunk_rows: int) -> str:
    return "one call" if not chunk_rows else f"{chunk_rows}-row calls"


def _slope(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def readme_line(report: dict[str, Any]) -> str:
    """One paragraph with the measured figures (the README block)."""
    parts = []
    v = report["variants"].get("default")
    if v is not None:
        goal = "within" if v["peak_rss_mb"] <= PEAK_GOAL_MB else "ABOVE"
        parts.append(
            f"{report['preset']} stream, {v['stream_s'] / 60:.0f} min unpaced ({v['windows_processed']} windows): peak "
            f"RSS {v['peak_rss_mb']:.0f} MiB ({goal} the 1 GB goal), steady {v['steady_rss_mb']:.0f} MiB, RSS slope "
            f"{_slope(v['rss_slope_mb_per_hour'])} MB per hour of stream, KV max {v['kv_max_mb']:.1f} MiB (slope "
            f"{_slope(v['kv_slope_mb_per_hour'])} MB/h)")
        for name, o in report["variants"].items():
            if name != "default":
                parts.append(f"{name} ({', '.join(VARIANTS[name])}): peak {o['peak_rss_mb']:.0f} MiB, wall "
                             f"x{o['wall_s'] / v['wall_s']:.2f} of default (sequential runs)")
    ratio = report.get("arena_ratio")
    if ratio:
        r = ratio["total_ratio_on_over_off"]
        parts.append(f"with ONNX Runtime's CPU arena on a window takes {r['p50']:.2f} [{r['p10']:.2f}-{r['p90']:.2f}] "
                     f"of the time (same-process, interleaved, {ratio['windows']} windows)")
    append = report.get("append")
    if append:
        per = ", ".join(f"{r['transient_mb']:.0f} MiB in {_calls(r['chunk_rows'])}" for r in append["results"])
        r0 = append["results"][0]
        parts.append(f"one {Path(append['engines']).name} window append ({r0['rows']} rows onto {r0['past']} "
                     f"positions): transient {per}")
    return "; ".join(parts) + f". {machine_line(report)}. Random weights."


def plot(report: dict[str, Any], path: Path) -> Path:
    """RSS and KV over stream time, one line per variant."""
    from benchmarks.plots import _pyplot, _save

    plt = _pyplot()
    fig, (ax_rss, ax_kv) = plt.subplots(2, 1, figsize=(8.0, 6.0), sharex=True)
    for name, v in report["variants"].items():
        ax_rss.plot([s["t"] / 60 for s in v["samples"]], [s["rss_mb"] for s in v["samples"]], label=name, lw=1)
        ax_kv.plot([w["t"] / 60 for w in v["windows"]], [w["kv_bytes"] / 2**20 for w in v["windows"]], label=name, lw=1)
    ax_rss.axhline(PEAK_GOAL_MB, color="grey", ls="--", lw=0.8, label="1 GB goal")
    ax_rss.set_ylabel("RSS (MiB)")
    ax_kv.set_ylabel("KV cache (MiB)")
    ax_kv.set_xlabel("stream time (min)")
    ax_rss.legend(fontsize=8)
    ax_rss.set_title(f"webcam CLI, {report['preset']} engines, unpaced synthetic stream (random weights)", fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when a variant's run failed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/memory"))
    parser.add_argument("--engines", type=Path, default=Path("engines/tiny"), help="tiny engines directory")
    parser.add_argument("--stream-min", type=float, default=12.0, help="minutes of synthetic stream per variant")
    parser.add_argument("--variants", default="default", help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--every-n", type=int, default=8, help="feedback (and context clear) every n-th window")
    parser.add_argument("--sample-s", type=float, default=0.5, help="RSS sampling period, wall seconds")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="stream seconds left out of the slopes")
    parser.add_argument("--append-engines", type=Path, default=None, help="also probe one decoder append on these")
    parser.add_argument("--append-past", type=int, default=7330, help="positions already cached (3 windows)")
    parser.add_argument("--append-rows", type=int, default=2421, help="rows appended (one window's turn)")
    parser.add_argument("--append-chunk-rows", default="0,512", help="decode_chunk_rows values, one child each")
    parser.add_argument("--arena-ratio-windows", type=int, default=0, help="also time arena on/off (0: no)")
    parser.add_argument("--probe-append", type=Path, default=None, help=argparse.SUPPRESS)  # the children's modes
    parser.add_argument("--probe-arena", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    chunk_rows = [int(c) for c in args.append_chunk_rows.split(",") if c.strip()]
    if args.probe_append is not None:
        print(json.dumps(probe_append(args.probe_append, args.append_past, args.append_rows, chunk_rows[0])))
        return 0
    if args.probe_arena is not None:
        print(json.dumps(arena_ratio(args.probe_arena, args.arena_ratio_windows)))
        return 0
    names = [n.strip() for n in args.variants.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or (not names and args.append_engines is None and not args.arena_ratio_windows):
        parser.error(f"--variants: unknown {unknown or 'none'}; choose from {', '.join(VARIANTS)} (or none with "
                     "--append-engines)")
    wanted = [args.engines] if names or args.arena_ratio_windows else []
    for engines in wanted + ([args.append_engines] if args.append_engines else []):
        if not (engines / "manifest.json").is_file():
            parser.error(f"{engines} holds no exported engines (python -m export --preset {engines.name})")
    args.out.mkdir(parents=True, exist_ok=True)
    args.engines = args.engines.resolve()  # the children run in the repository root
    args.append_engines = args.append_engines.resolve() if args.append_engines else None
    preset = (args.engines if names or args.arena_ratio_windows else args.append_engines).name
    report = report_header("memory", command_line("benchmarks.memory", argv), preset=preset,
                           backend="onnxruntime", precision="fp32", threads=2)
    report.update({"warmup_s": args.warmup_s, "every_n": args.every_n, "variants": {}})
    try:
        for name in names:
            report["variants"][name] = run_variant(name, args.engines, args.stream_min * 60, args.every_n,
                                                   args.sample_s, args.warmup_s, args.out / f"{name}.log")
        if args.arena_ratio_windows > 0:
            report["arena_ratio"] = measure_arena_ratio(args.engines, args.arena_ratio_windows)
        if args.append_engines is not None:
            report["append"] = {"engines": str(args.append_engines),
                                "results": measure_append(args.append_engines, args.append_past, args.append_rows,
                                                          chunk_rows)}
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    write_json(args.out / "memory.json", report)
    (args.out / "memory.md").write_text(to_markdown(report))
    if names:
        plot(report, args.out / "memory.png")
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
