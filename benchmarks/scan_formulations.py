"""Benchmark of selective-scan formulations: ONNX Runtime (CPU) and PyTorch, one direction of one layer.

Usage::

    .venv/bin/python -m benchmarks.scan_formulations --out artifacts/scan_formulations.json
    python3 -m benchmarks.scan_formulations --skip-onnx --device cuda --graph-chunks 8,16   # GPU machine
    .venv/bin/python -m benchmarks.scan_formulations --skip-onnx --skip-eager --encoder-depth 4  # whole encoder

ONNX part: builds every formulation of ``export/scan_formulations.py`` (traced ``chunked`` at several c, guarded and
sequential chunk ``Scan``, and the marker -> Scan rewrite), then times each in a fresh process per round (ORT CPU EP,
intra_op 2, inter_op 1), the models interleaved round by round so that load from other users hits all of them alike.
Per model: node count (top / including subgraphs), file size, build time, latency median/min/p95 over all timed runs
after warm-up on normal inputs and the median on stress inputs, peak RSS rise over the child's baseline, max abs
error against a float64 sequential loop on the probe's normal and stress inputs, and the count of non-finite outputs.
PyTorch part (in this process, CPU or CUDA): ``ref`` and ``chunked`` per c, optionally ``torch.compile`` and CUDA
graphs. ``--encoder-depth`` also exports a VideoMamba-M encoder per scan choice and times it in ORT.
Writes JSON (machine, versions, date, load averages, command) and prints Markdown tables.

torch is imported lazily: the ORT child processes import only numpy and onnxruntime, so their RSS stays clean.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, command_line, machine_line, report_header, summarize, write_json

logger = logging.getLogger("benchmarks.scan_formulations")

THREADS = 2


def _summary_ms(seconds: list[float]) -> dict[str, float]:
    """``benchmarks.common.summarize`` of samples in seconds, with the median under the key this study's tables use."""
    s = summarize([t * 1e3 for t in seconds], "_ms")
    return {"median_ms": s["p50_ms"], "min_ms": s["min_ms"], "p95_ms": s["p95_ms"], "n": s["n"]}


# ---------------------------------------------------------------------------------------------------------------------
# Child process: one model, one round. Imports only numpy + onnxruntime so its RSS baseline is small and clean.
# ---------------------------------------------------------------------------------------------------------------------


def _proc_status_kb(field: str) -> int:
    """A ``/proc/self/status`` memory field in kB (VmRSS: now; VmHWM: peak since start or the last reset)."""
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss_kb() -> int:
    """Resets the peak-RSS mark (so loading the inputs does not count) and returns the current RSS in kB.

    ``getrusage().ru_maxrss`` is useless here: Linux carries it over from the parent across fork + exec.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError as exc:
        logger.warning("cannot reset the peak RSS mark (%s); the RSS rise includes loading the inputs", exc)
    return _proc_status_kb("VmRSS")


def run_child(model: Path, inputs: Path, outputs: Path, warmup: int, runs: int) -> dict[str, Any]:
    """Times one ONNX model in ORT and saves its outputs on the normal and stress inputs.

    Args:
        model: The ``.onnx`` file.
        inputs: ``.npz`` with ``normal/<name>`` and ``stress/<name>`` arrays.
        outputs: ``.npz`` to write ``normal`` and ``stress`` outputs to.
        warmup: Untimed runs first.
        runs: Timed runs.

    Returns:
        Timings (s) on normal and stress inputs, session-creation time and peak RSS rise (MB) over the baseline
        taken before the session.
    """
    import onnxruntime as ort

    data = np.load(inputs)
    feeds = {
        kind: {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(kind + "/")}
        for kind in ("normal", "stress")
    }
    base_kb = _reset_peak_rss_kb()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    start = time.perf_counter()
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    session_s = time.perf_counter() - start
    out = {"stress": sess.run(None, feeds["stress"])[0]}
    for _ in range(warmup):
        sess.run(None, feeds["normal"])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        y = sess.run(None, feeds["normal"])[0]
        times.append(time.perf_counter() - start)
    out["normal"] = y
    stress_times = []  # the guarded Scan takes its slow branch more often on stress inputs
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feeds["stress"])
        stress_times.append(time.perf_counter() - start)
    np.savez(outputs, **out)
    peak_kb = _proc_status_kb("VmHWM")
    return {
        "times_s": times,
        "stress_times_s": stress_times,
        "session_s": session_s,
        "rss_rise_mb": (peak_kb - base_kb) / 1024,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------------------------------


def _errors(y: np.ndarray, ref64: np.ndarray) -> dict[str, float]:
    finite = np.isfinite(y)
    diff = np.abs(y.astype(np.float64) - ref64)
    return {
        "max_abs_err": float(diff[finite].max()) if finite.any() else float("nan"),
        "rel_err": float(diff[finite].max() / np.abs(ref64).max()) if finite.any() else float("nan"),
        "non_finite": int((~finite).sum()),
    }


def build_models(
    workdir: Path,
    inputs: dict[str, Any],
    traced_chunks: list[int],
    scan_chunks: list[int],
    seq_scan_chunks: list[int],
    marker_chunk: int | None,
) -> dict[str, dict[str, Any]]:
    """Exports/builds every formulation into ``workdir``; returns per-model build facts."""
    import onnx

    from export.scan_formulations import (
        build_scan_model,
        count_nodes,
        export_traced_scan,
        op_types,
        register_scan_marker_symbolic,
        replace_scan_markers,
    )

    models: dict[str, dict[str, Any]] = {}
    for c in traced_chunks:
        name = f"traced chunked c={c}"
        path = workdir / f"traced_chunked_c{c}.onnx"
        build_s = export_traced_scan(path, inputs, "chunked", chunk_size=c)
        models[name] = {"path": path, "build_s": build_s, "how": "torch.onnx.export(dynamo=False, opset 17)"}
    for body, chunks in (("guarded", scan_chunks), ("sequential", seq_scan_chunks)):
        for c in chunks:
            name = f"{body} Scan c={c}"
            path = workdir / f"{body}_scan_c{c}.onnx"
            start = time.perf_counter()
            model = build_scan_model(c, body=body)
            onnx.save(model, str(path))
            how = "onnx.helper (Scan + If)" if body == "guarded" else "onnx.helper (Scan, unrolled body)"
            models[name] = {"path": path, "build_s": time.perf_counter() - start, "how": how}
    if marker_chunk:
        # The export path a whole model would take: trace with scan_impl="scan_marker", then rewrite the markers.
        name = f"traced marker -> guarded Scan c={marker_chunk}"
        path = workdir / f"marker_scan_c{marker_chunk}.onnx"
        register_scan_marker_symbolic()
        build_s = export_traced_scan(path, inputs, "scan_marker")
        start = time.perf_counter()
        onnx.save(replace_scan_markers(onnx.load(str(path)), chunk_size=marker_chunk), str(path))
        models[name] = {"path": path, "build_s": build_s + time.perf_counter() - start,
                        "how": "torch.onnx.export(dynamo=False) + replace_scan_markers"}  # fmt: skip
    for info in models.values():
        graph = onnx.load(str(info["path"])).graph
        top, total = count_nodes(graph)
        info.update(
            nodes_top=top,
            nodes_total=total,
            file_kb=info["path"].stat().st_size / 1024,
            custom_ops=sorted(t for t in op_types(graph) if "::" in t),
        )
    return models


def _eager_impls(
    chunks: list[int], compile_chunks: list[int], graph_chunks: list[int], device: str
) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """Named PyTorch callables on one input dict: ref, chunked per c, and optionally torch.compile / CUDA graphs."""
    import torch

    from mobile_videogpt.selective_scan import selective_scan_chunked, selective_scan_ref

    impls: dict[str, Callable[[dict[str, Any]], Any]] = {
        "eager ref (sequential loop)": lambda x: selective_scan_ref(**x, delta_softplus=True)
    }
    for c in chunks:
        impls[f"eager chunked c={c}"] = partial(_call_chunked, selective_scan_chunked, c)
    for c in compile_chunks:
        compiled = torch.compile(selective_scan_chunked, dynamic=False)
        impls[f"torch.compile chunked c={c}"] = partial(_call_chunked, compiled, c)
    if device == "cuda":
        for c in graph_chunks:
            impls[f"CUDA graph chunked c={c}"] = _CudaGraphCall(partial(_call_chunked, selective_scan_chunked, c))
    return impls


def _call_chunked(fn: Callable[..., Any], chunk: int, x: dict[str, Any]) -> Any:
    return fn(**x, delta_softplus=True, chunk_size=chunk)


class _CudaGraphCall:
    """Captures ``fn`` once per input dict (static buffers) and replays it: the launch-overhead-free lower bound."""

    def __init__(self, fn: Callable[[dict[str, Any]], Any]) -> None:
        self.fn = fn
        self.graphs: dict[int, tuple[Any, Any]] = {}

    def __call__(self, x: dict[str, Any]) -> Any:
        import torch

        key = id(x)
        if key not in self.graphs:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self.fn(x)  # warm-up outside the capture, as the CUDA graph docs require
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.fn(x)
            self.graphs[key] = (graph, out)
        graph, out = self.graphs[key]
        graph.replay()
        return out


def time_eager(
    inputs: dict[str, dict[str, Any]],
    ref64: dict[str, np.ndarray],
    impls: dict[str, Callable[[dict[str, Any]], Any]],
    warmup: int,
    runs: int,
    ref_runs: int,
    device: str,
) -> dict[str, dict[str, Any]]:
    """Times PyTorch implementations (synchronising on CUDA) and scores them against float64."""
    import torch

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    torch.set_num_threads(THREADS)
    on_device = {kind: {k: v.to(device) for k, v in x.items()} for kind, x in inputs.items()}
    results = {}
    with torch.inference_mode():
        for name, fn in impls.items():
            start = time.perf_counter()
            outs = {kind: fn(on_device[kind]).float().cpu().numpy() for kind in ("normal", "stress")}
            first_s = time.perf_counter() - start  # includes compilation / graph capture
            for _ in range(warmup):
                fn(on_device["normal"])
            sync()
            times = []
            for _ in range(ref_runs if name.startswith("eager ref") else runs):
                start = time.perf_counter()
                fn(on_device["normal"])
                sync()
                times.append(time.perf_counter() - start)
            results[name] = {
                **_summary_ms(times),
                "first_call_s": first_s,
                "device": device,
                "normal": _errors(outs["normal"], ref64["normal"]),
                "stress": _errors(outs["stress"], ref64["stress"]),
            }
            logger.info("%s: median %.2f ms", name, results[name]["median_ms"])
    return results


def run_onnx(
    inputs: dict[str, dict[str, Any]],
    ref64: dict[str, np.ndarray],
    traced_chunks: list[int],
    scan_chunks: list[int],
    seq_scan_chunks: list[int],
    marker_chunk: int | None,
    rounds: int,
    warmup: int,
    runs: int,
    workdir: Path | None,
) -> dict[str, dict[str, Any]]:
    """Builds the ONNX formulations and times each in a fresh ORT process per round, models interleaved."""
    with tempfile.TemporaryDirectory(prefix="scan_formulations_") as tmp:
        workdir = workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        input_file = workdir / "inputs.npz"
        np.savez(input_file, **{f"{k}/{n}": v.numpy() for k in inputs for n, v in inputs[k].items()})
        models = build_models(workdir, inputs["normal"], traced_chunks, scan_chunks, seq_scan_chunks, marker_chunk)
        per_model: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
        for rnd in range(rounds):
            for name, info in models.items():
                out_file = workdir / f"{info['path'].stem}_out.npz"
                cmd = [sys.executable, "-m", "benchmarks.scan_formulations", "--warmup", str(warmup),
                       "--runs", str(runs), "--child", str(info["path"]), str(input_file), str(out_file)]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
                if proc.returncode != 0:
                    raise RuntimeError(f"child for {name!r} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                if rnd == 0:
                    outs = np.load(out_file)
                    info["normal"] = _errors(outs["normal"], ref64["normal"])
                    info["stress"] = _errors(outs["stress"], ref64["stress"])
                per_model[name].append(result)
                logger.info(
                    "round %d %s: median %.1f ms (stress %.1f ms)", rnd, name,
                    1e3 * statistics.median(result["times_s"]), 1e3 * statistics.median(result["stress_times_s"]),
                )  # fmt: skip
    report = {}
    for name, info in models.items():
        results = per_model[name]
        report[name] = {
            **{k: v for k, v in info.items() if k != "path"},
            "file": info["path"].name,
            **_summary_ms([t for r in results for t in r["times_s"]]),
            "stress_median_ms": 1e3 * statistics.median(t for r in results for t in r["stress_times_s"]),
            "round_medians_ms": [1e3 * statistics.median(r["times_s"]) for r in results],
            "rss_rise_mb": max(r["rss_rise_mb"] for r in results),
            "session_s": statistics.median(r["session_s"] for r in results),
        }
    return report


def time_encoder(depth: int, runs: int, workdir: Path | None) -> dict[str, dict[str, Any]]:
    """Exports a VideoMamba-M encoder of ``depth`` layers (full geometry, random Mamba-style init) per scan choice.

    Rows: ``scan_impl="chunked"`` traced as is, and ``scan_impl="scan_marker"`` traced then rewritten by
    ``replace_scan_markers`` (guarded and sequential bodies, c=16). Each is timed in ORT (in process, 2 threads)
    and compared with the eager ``"ref"`` encoder.
    """
    import onnx
    import onnxruntime as ort
    import torch

    from export.scan_formulations import (
        count_nodes,
        make_scan_inputs,
        register_scan_marker_symbolic,
        replace_scan_markers,
    )
    from mobile_videogpt.config import VideoMambaConfig
    from mobile_videogpt.videomamba import VideoMamba

    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    cfg = VideoMambaConfig(depth=depth)
    encoder = VideoMamba(cfg).eval()
    with torch.no_grad():
        # A, dt bias and D as Mamba initialises them (zeros would make every decay 1), from the probe's recipe.
        scan_params = make_scan_inputs("normal", length=1, dim=cfg.d_inner, n_state=cfg.d_state)
        for layer in encoder.layers:
            mixer = layer.mixer
            for a_log, dt_proj in ((mixer.A_log, mixer.dt_proj), (mixer.A_b_log, mixer.dt_proj_b)):
                a_log.copy_(torch.log(-scan_params["A"]))
                dt_proj.bias.copy_(scan_params["delta_bias"])
        encoder.cls_token.normal_()
        encoder.pos_embed.normal_(std=0.02)
    clip = torch.randn(cfg.num_frames, 3, cfg.img_size, cfg.img_size)
    with torch.inference_mode():
        start = time.perf_counter()
        want = encoder(clip).numpy()
        ref_s = time.perf_counter() - start
    register_scan_marker_symbolic()
    variants = {
        "chunked (traced)": ("chunked", None),
        "scan_marker -> guarded Scan c=16": ("scan_marker", "guarded"),
        "scan_marker -> sequential Scan c=16": ("scan_marker", "sequential"),
    }
    results: dict[str, dict[str, Any]] = {"eager ref": {"depth": depth, "eager_s": ref_s}}
    with tempfile.TemporaryDirectory(prefix="scan_encoder_") as tmp:
        folder = workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name, (impl, body) in variants.items():
            encoder.set_scan_impl(impl)
            path = folder / f"videomamba_d{depth}_{impl}_{body}.onnx"
            start = time.perf_counter()
            with torch.no_grad():
                torch.onnx.export(encoder, (clip,), str(path), input_names=["clip"], output_names=["x_vis"],
                                  opset_version=17, dynamo=False)  # fmt: skip
            if body is not None:
                onnx.save(replace_scan_markers(onnx.load(str(path)), chunk_size=16, body=body), str(path))
            export_s = time.perf_counter() - start
            top, total = count_nodes(onnx.load(str(path)).graph)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = THREADS
            opts.inter_op_num_threads = 1
            start = time.perf_counter()
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            session_s = time.perf_counter() - start
            got = sess.run(None, {"clip": clip.numpy()})[0]
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                sess.run(None, {"clip": clip.numpy()})
                times.append(time.perf_counter() - start)
            results[name] = {
                "depth": depth,
                "export_s": export_s,
                "nodes_top": top,
                "nodes_total": total,
                "file_mb": path.stat().st_size / 2**20,
                "session_s": session_s,
                **_summary_ms(times),
                "max_abs_err_vs_eager_ref": float(np.abs(got - want).max()),
                "max_abs_y": float(np.abs(want).max()),
            }
            logger.info("encoder %s: %s", name, results[name])
    return results


def encoder_table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown table of :func:`time_encoder`."""
    depth = rows["eager ref"]["depth"]
    lines = [
        f"| VideoMamba depth {depth} (x2 scans each) | export s | nodes (top / all) | file MB | ORT session s "
        "| ORT ms median (min) | max abs err vs eager ref |",
        "|---|---|---|---|---|---|---|",
        f"| eager ref (PyTorch, sequential scan) | – | – | – | – | {rows['eager ref']['eager_s'] * 1e3:.0f} "
        "| 0 |",
    ]
    for name, r in rows.items():
        if name == "eager ref":
            continue
        lines.append(
            f"| {name} | {r['export_s']:.1f} | {r['nodes_top']} / {r['nodes_total']} | {r['file_mb']:.1f} "
            f"| {r['session_s']:.2f} | {r['median_ms']:.0f} ({r['min_ms']:.0f}) | {r['max_abs_err_vs_eager_ref']:.2e} |"
        )
    return "\n".join(lines)


def markdown_table(report: dict[str, Any]) -> str:
    """One row per formulation (ONNX first, then eager)."""
    lines = [
        "| formulation | nodes (top / all) | file KB | build s | ms median (min, p95) | ms stress | x64 s "
        "| RSS rise MB | err normal | err stress | non-finite |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report.get("onnx", {}).items():
        lines.append(
            f"| {name} | {m['nodes_top']} / {m['nodes_total']} | {m['file_kb']:.0f} | {m['build_s']:.2f} "
            f"| {m['median_ms']:.0f} ({m['min_ms']:.0f}, {m['p95_ms']:.0f}) | {m['stress_median_ms']:.0f} "
            f"| {m['median_ms'] * 64 / 1e3:.1f} "
            f"| {m['rss_rise_mb']:.0f} | {m['normal']['max_abs_err']:.2e} | {m['stress']['max_abs_err']:.2e} "
            f"| {m['normal']['non_finite'] + m['stress']['non_finite']} |"
        )
    for name, m in report["eager"].items():
        lines.append(
            f"| {name} ({m['device']}) | – | – | – | {m['median_ms']:.3g} ({m['min_ms']:.3g}, {m['p95_ms']:.3g}) "
            f"| – | {m['median_ms'] * 64 / 1e3:.3g} | – | {m['normal']['max_abs_err']:.2e} "
            f"| {m['stress']['max_abs_err']:.2e} | {m['normal']['non_finite'] + m['stress']['non_finite']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/scan_formulations.json"))
    parser.add_argument("--length", type=int, default=1569)
    parser.add_argument("--dim", type=int, default=1152)
    parser.add_argument("--n-state", type=int, default=16)
    parser.add_argument("--stress-noise", type=float, default=2.0, help="raw-delta noise scale of the stress inputs")
    parser.add_argument("--traced-chunks", default="16,32,64", help="comma-separated c for the traced chunked form")
    parser.add_argument("--scan-chunks", default="16,32", help="comma-separated c for the guarded Scan")
    parser.add_argument("--seq-scan-chunks", default="16", help="comma-separated c for the Scan with unrolled body")
    parser.add_argument("--marker-chunk", type=int, default=16, help="c of the marker->Scan rewrite row (0 = skip)")
    parser.add_argument("--eager-chunks", default="16,32,64", help="comma-separated c for eager chunked ('' = none)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh ORT processes per model, interleaved")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per round (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--eager-ref-runs", type=int, default=5)
    parser.add_argument("--skip-eager", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true", help="only the PyTorch timings (e.g. on a GPU machine)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the PyTorch timings")
    parser.add_argument("--compile-chunks", default="", help="comma-separated c to also time torch.compile(chunked)")
    parser.add_argument("--graph-chunks", default="", help="comma-separated c to also time as CUDA graphs (cuda)")
    parser.add_argument("--encoder-depth", type=int, default=0,
                        help="also export a VideoMamba-M encoder of this depth per scan choice and time it (0 = skip)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the .onnx files here (default: a temp dir)")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "INPUTS", "OUTPUTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.child:
        result = run_child(Path(args.child[0]), Path(args.child[1]), Path(args.child[2]), args.warmup, args.runs)
        sys.stdout.write(json.dumps(result) + "\n")
        return 0

    from export.scan_formulations import make_scan_inputs, selective_scan_float64

    def ints(text: str) -> list[int]:
        return [int(v) for v in text.split(",") if v.strip()]

    shape = {"length": args.length, "dim": args.dim, "n_state": args.n_state}
    report: dict[str, Any] = report_header("scan_formulations", command_line("benchmarks.scan_formulations", argv),
                                           preset=None, backend="onnxruntime,pytorch", precision="fp32",
                                           threads=THREADS, random_weights=False)
    report.update({
        "setting": {**shape, "batch": 1, "delta_softplus": True, "stress_noise": args.stress_noise,
                    "rounds": args.rounds, "runs": args.runs,
                    "warmup": args.warmup, "ort": "CPUExecutionProvider, intra_op 2, inter_op 1, ORT_ENABLE_ALL"},
    })  # fmt: skip
    inputs = {kind: make_scan_inputs(kind, **shape, stress_noise=args.stress_noise) for kind in ("normal", "stress")}
    ref64 = {kind: selective_scan_float64(**inputs[kind], delta_softplus=True).numpy() for kind in inputs}
    report["inputs"] = {}
    for kind, x in inputs.items():
        delta = np.logaddexp(0.0, (x["delta"] + x["delta_bias"][:, None]).numpy())  # softplus
        report["inputs"][kind] = {
            "delta_max": float(delta.max()),
            "delta_median": float(np.median(delta)),
            "max_abs_delta_A": float((delta[0][:, :, None] * np.abs(x["A"].numpy())[:, None, :]).max()),
            "max_abs_y": float(np.abs(ref64[kind]).max()),
        }

    if not args.skip_onnx:
        report["onnx"] = run_onnx(
            inputs, ref64, ints(args.traced_chunks), ints(args.scan_chunks), ints(args.seq_scan_chunks),
            args.marker_chunk or None,
            args.rounds, args.warmup, args.runs, args.workdir,
        )  # fmt: skip
    if not args.skip_eager:
        impls = _eager_impls(ints(args.eager_chunks), ints(args.compile_chunks), ints(args.graph_chunks), args.device)
        report["eager"] = time_eager(inputs, ref64, impls, args.warmup, args.runs, args.eager_ref_runs, args.device)
    else:
        report["eager"] = {}
    if args.encoder_depth:
        report["encoder"] = time_encoder(args.encoder_depth, args.runs, args.workdir)
    table = markdown_table(report)
    if "encoder" in report:
        table += "\n\n" + encoder_table(report["encoder"])
    report["table_md"] = table
    write_json(args.out, report)  # records the load average at the end beside the one at the start
    m = report["machine"]
    sys.stdout.write(
        f"\n{machine_line(report)}, load {m['load_average_at_start'][0]:.1f} -> {m['load_average_at_end'][0]:.1f}"
        f"\n\n{table}\n\nwritten: {args.out}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
