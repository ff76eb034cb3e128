"""Shared measurement helpers of the benchmarks: machine description, timers, percentiles, A/B ratios, reports.

These are the benchmarks' only timers and machine description (every benchmark module, the selective-scan study
included, uses them). Depends only on the standard library and numpy: torch is never imported here (its version is
read from package metadata, its thread count and GPU only when the benchmark already imported it), so an ONNX Runtime
run is not measured with torch loaded.

Method (every benchmark follows it):

* **warm up, synchronize, then time**: ``warmup`` untimed calls first; on CUDA the device is synchronized before the
  clock starts and before it stops (``sync``);
* **percentiles, not means**: every latency is summarised as p50/p95/p99 (numpy linear interpolation; with n < 20
  samples p95/p99 lie between the two largest samples, so look at ``n``) plus min/max/mean;
* **A/B in one run**: variants compared to each other are timed interleaved, round by round, alternating which goes
  first (ABAB.. then BABA..), so a burst of load from other users hits both alike. The ratio reported is the median
  of the per-round ratios ``a_i / b_i`` with its 10th-90th percentile spread, next to the ratio of the medians.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]

#: Version of the JSON layout written by the benchmarks (bump on incompatible changes). 2: the lean runtime's
#: interfaces (GPU reports from the session and stages instead of a model-side loop; decode, allocations, footprint).
SCHEMA_VERSION = 2

#: Distributions whose versions every report records (``None`` when not installed).
VERSIONED_PACKAGES = (
    "torch",
    "transformers",
    "numpy",
    "tokenizers",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "safetensors",
    "opencv-python-headless",
)


# --------------------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def package_versions(names: Sequence[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (read from package metadata; nothing is imported).

    Args:
        names: Distribution names.

    Returns:
        Name -> version, ``None`` for a distribution that is not installed.
    """
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _loaded_torch() -> Any | None:
    """The torch module when this process already imported it (never imported here), else ``None``."""
    return sys.modules.get("torch")


def gpu_info() -> dict[str, Any] | None:
    """Name, memory and CUDA version of GPU 0 via torch, or ``None`` when torch is not loaded or sees no CUDA device."""
    torch = _loaded_torch()
    if torch is None or not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU model and cores, GPU if any, OS, Python and library versions.

    Args:
        threads: Intra-op threads the benchmark asked for (recorded as given).

    Returns:
        The machine dict of every report (``torch_threads`` is ``None`` when torch is not loaded).
    """
    torch = _loaded_torch()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "threads": threads,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "gpu": gpu_info(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def git_revision() -> str | None:
    """The checkout's commit plus ``-dirty`` when it has local changes, or ``None`` outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces a run, e.g. ``python -m benchmarks.stream --preset tiny``.

    Args:
        module: The benchmark's module name.
        argv: Its arguments (``None``: ``sys.argv[1:]``).

    Returns:
        A shell-quoted command line.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", "-m", module, *args])


def report_header(
    benchmark: str,
    command: str,
    *,
    preset: str | None,
    backend: str | None,
    precision: str | None,
    threads: int | None,
    random_weights: bool = True,
) -> dict[str, Any]:
    """The fields every report JSON starts with.

    Args:
        benchmark: Benchmark name (``stream``, ``components``, ``gpu``, ``run_all``).
        command: The command line that produced the report.
        preset: Model geometry.
        backend: Backend name(s).
        precision: Precision(s).
        threads: Intra-op threads.
        random_weights: Whether the weights are random (always so for synthetic presets).

    Returns:
        The header dict.
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "git": git_revision(),
        "preset": preset,
        "backend": backend,
        "precision": precision,
        "random_weights": random_weights,
        "machine": machine_info(threads),
    }


# --------------------------------------------------------------------------------------------------------- stats


def summarize(values: Sequence[float], suffix: str = "") -> dict[str, float | int]:
    """Percentile summary of samples (any unit).

    Args:
        values: Samples (at least one).
        suffix: Appended to every statistic's key (``"_ms"`` for latencies).

    Returns:
        ``{"p50", "p95", "p99", "min", "max", "mean"}`` (each + ``suffix``) and ``"n"``.

    Raises:
        ValueError: If there are no samples.
    """
    if len(values) == 0:
        raise ValueError("no samples to summarise")
    arr = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    stats = {"p50": p50, "p95": p95, "p99": p99, "min": arr.min(), "max": arr.max(), "mean": arr.mean()}
    out: dict[str, float | int] = {k + suffix: float(v) for k, v in stats.items()}
    out["n"] = int(arr.size)
    return out


def summarize_ms(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """Percentile summary of latency samples in ms: ``p50_ms``, ``p95_ms``, ``p99_ms``, ``min_ms``, ``max_ms``,
    ``mean_ms`` and ``n`` (see :func:`summarize`)."""
    return summarize(samples_ms, "_ms")


def paired_ratio(a_ms: Sequence[float], b_ms: Sequence[float]) -> dict[str, float | int]:
    """Robust ratio ``a / b`` of two interleaved sample series (same round = same index).

    Args:
        a_ms: Samples of variant A.
        b_ms: Samples of variant B, as many as A.

    Returns:
        ``ratio_p50`` (median of per-round ratios), ``ratio_p10``/``ratio_p90`` (their spread),
        ``ratio_of_medians`` and ``n``.

    Raises:
        ValueError: If the series differ in length or are empty.
    """
    if len(a_ms) != len(b_ms) or not a_ms:
        raise ValueError(f"paired_ratio needs two equally long non-empty series, got {len(a_ms)} and {len(b_ms)}")
    ratios = np.asarray(a_ms, dtype=np.float64) / np.asarray(b_ms, dtype=np.float64)
    p10, p50, p90 = np.percentile(ratios, [10, 50, 90])
    return {
        "ratio_p50": float(p50),
        "ratio_p10": float(p10),
        "ratio_p90": float(p90),
        "ratio_of_medians": float(statistics.median(a_ms) / statistics.median(b_ms)),
        "n": len(ratios),
    }


# --------------------------------------------------------------------------------------------------------- timing


def no_sync() -> None:
    """The synchronize function of CPU-only timing."""


def cuda_sync_fn(device: str) -> Callable[[], None]:
    """``torch.cuda.synchronize`` for a CUDA device, a no-op otherwise.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:<i>``.

    Returns:
        The synchronize function to pass to the timers.
    """
    if not device.startswith("cuda"):
        return no_sync
    import torch

    return torch.cuda.synchronize


def time_ms(fn: Callable[[], object], sync: Callable[[], None] = no_sync) -> float:
    """Duration of one call in ms, with the device synchronized before and after.

    Args:
        fn: The call.
        sync: Device synchronize function.

    Returns:
        Milliseconds.
    """
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - start) * 1e3


def time_call(
    fn: Callable[[], object],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] = no_sync,
    before: Callable[[], object] | None = None,
) -> list[float]:
    """Times ``fn`` ``repeats`` times after ``warmup`` untimed calls.

    Args:
        fn: The call.
        repeats: Timed calls (>= 1).
        warmup: Untimed calls first (burn-in, discarded).
        sync: Device synchronize function.
        before: Untimed set-up before every call, warm-up included (e.g. cutting a KV cache back to its length).

    Returns:
        Samples in ms.

    Raises:
        ValueError: If ``repeats`` < 1 or ``warmup`` < 0.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    prepare = before or _nothing
    for _ in range(warmup):
        prepare()
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        prepare()
        samples.append(time_ms(fn, sync))
    return samples


def time_interleaved(
    variants: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] = no_sync,
    before: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Times several variants round by round, alternating their order every round.

    Args:
        variants: Name -> call; all are warmed up first.
        repeats: Rounds (each variant is timed once per round).
        warmup: Untimed calls of each variant first.
        sync: Device synchronize function.
        before: Name -> untimed set-up run before each call of that variant (warm-up included).

    Returns:
        Name -> samples in ms, index i being round i.

    Raises:
        ValueError: If ``repeats`` < 1 or there are no variants.
    """
    if repeats < 1 or not variants:
        raise ValueError(f"time_interleaved needs variants and repeats >= 1, got {len(variants)} and {repeats}")
    names = list(variants)
    prepare = {name: (before or {}).get(name) or _nothing for name in names}
    for _ in range(warmup):
        for name in names:
            prepare[name]()
            variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            prepare[name]()
            samples[name].append(time_ms(variants[name], sync))
    return samples


def _nothing() -> None:
    """The default untimed set-up."""


# --------------------------------------------------------------------------------------------------------- memory + io


def current_rss_mb() -> float | None:
    """Resident set size of this process now, in MiB (``/proc/self/statm``; ``None`` where it does not exist)."""
    statm = Path("/proc/self/statm")
    if not statm.is_file():
        return None
    pages = int(statm.read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``getrusage``; kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def write_json(path: Path, report: Mapping[str, Any]) -> Path:
    """Writes a report as indented JSON, creating the folder; a report with a ``machine`` section gets the load
    average at the end of the run beside the one at its start (other users' load shows in both).

    Args:
        path: Output file.
        report: The report.

    Returns:
        ``path``.
    """
    if isinstance(report.get("machine"), dict) and hasattr(os, "getloadavg"):
        report["machine"]["load_average_at_end"] = list(os.getloadavg())  # type: ignore[index]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    logger.info("wrote %s", path)
    return path


def _json_default(value: object) -> object:
    """numpy scalars and arrays in reports."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def fmt_ms(value: float) -> str:
    """Milliseconds for tables: one decimal under 100 ms, none above."""
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table.

    Args:
        header: Column titles.
        rows: Cells (converted with ``str``).

    Returns:
        The table text.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(report: Mapping[str, Any]) -> str:
    """One line naming the machine, date and command of a report (for table captions)."""
    m = report["machine"]
    gpu = f", GPU {m['gpu']['name']}" if m.get("gpu") else ""
    return (
        f"{m['cpu']} ({m['usable_cores']} usable cores{gpu}), torch {m['versions'].get('torch')}, "
        f"{report['date']}, `{report['command']}`"
    )
