"""Renders benchmark JSON reports as Markdown (and plots), so no figure in the docs or README is typed by hand.

Usage::

    python -m benchmarks.report artifacts/bench/summary.json              # full Markdown of any report JSON
    python -m benchmarks.report artifacts/bench/summary.json --readme     # the compact README table (or of a gpu.json)
    python -m benchmarks.report artifacts/bench_gpu/gpu.json --plots DIR  # + PNG plots of a GPU report
    python -m benchmarks.report --update-doc docs/benchmarks.md           # re-render the doc's generated blocks
    python -m benchmarks.report --check-doc docs/benchmarks.md            # exit 1 if a generated block is stale

A generated block in a Markdown file names its JSON and mode and is replaced wholesale::

    <!-- BEGIN benchmarks.report benchmarks/results/cpu/summary.json full -->
    ...
    <!-- END benchmarks.report -->
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, fmt_ms, machine_line, markdown_table

logger = logging.getLogger("benchmarks.report")

#: Benchmarks whose module renders its own report (``benchmarks.<name>.to_markdown``).
RENDERERS = ("components", "stream", "gpu", "decode", "allocations", "footprint", "memory")

BLOCK = re.compile(
    r"(<!-- BEGIN benchmarks\.report (?P<path>\S+) (?P<mode>full|readme|headline) -->\n)(?P<body>.*?)(<!-- END benchmarks\.report -->)",
    re.DOTALL,
)


def _ratio(r: dict[str, Any]) -> str:
    return f"{r['ratio_p50']:.2f} [{r['ratio_p10']:.2f}-{r['ratio_p90']:.2f}]"


def _p(s: dict[str, Any] | None) -> str:
    return f"{fmt_ms(s['p50_ms'])} / {fmt_ms(s['p95_ms'])} / {fmt_ms(s['p99_ms'])}" if s else "-"


def render(report: dict[str, Any]) -> str:
    """Full Markdown of any benchmark report (dispatch on its ``benchmark`` field).

    Args:
        report: A report JSON.

    Returns:
        Markdown.

    Raises:
        ValueError: For an unknown benchmark.
    """
    kind = report.get("benchmark")
    if kind == "run_all":
        return render_summary(report)
    if kind == "gpu" and report.get("schema_version", 1) < 2:
        return gpu_v1_markdown(report)
    if kind not in RENDERERS:
        raise ValueError(f"unknown benchmark {kind!r} in report")
    module = importlib.import_module(f"benchmarks.{kind}")
    return module.to_markdown(report)


def headline(summary: dict[str, Any]) -> str:
    """The key table of a ``run_all`` summary: per-stage latency of the tiny variants, the side-by-side ratios, the
    streaming run and the 0.5B points.

    Args:
        summary: ``run_all``'s summary.

    Returns:
        Markdown.
    """
    reports = summary["reports"]
    out = [f"Machine: {machine_line(summary)}; run_all took {summary['wall_s'] / 60:.1f} min "
           f"(budget {summary['budget_s'] / 60:.0f} min). Random weights: latency only, outputs are meaningless.", ""]
    comp = reports.get("components_tiny")
    if comp:
        variants = comp["variants"]
        rows = [[s, *([_p(per["host"])] + ["(host)"] * (len(variants) - 1) if "host" in per
                      else [_p(per.get(v)) for v in variants])] for s, per in comp["stages"].items()]
        out += [f"**Stages, tiny preset** (one 16-frame window; p50 / p95 / p99 ms over {comp['repeats']} "
                "interleaved rounds):", "", markdown_table(["stage", *variants], rows), ""]
        ratio_rows = []
        for name, per in comp.get("ratios", {}).get("stages", {}).items():
            for stage, r in per.items():
                ratio_rows.append([name, stage, _ratio(r)])
        c = comp.get("ratios", {}).get("cache")
        if c:
            ratio_rows.append([f"cached / uncached frame encoding ({c['variant']})",
                               f"{c['frames_encoded_per_window']['cached']:.0f} vs "
                               f"{c['frames_encoded_per_window']['uncached']:.0f} frames per window", _ratio(c["ratio"])])
        for a in comp.get("ratios", {}).get("append_vs_reprefill", []):
            ratio_rows.append([f"append / re-prefill ({a['variant']})",
                               f"+{a['appended_tokens']} onto {a['context_tokens']} tokens", _ratio(a["ratio"])])
        if ratio_rows:
            out += ["**Side-by-side ratios** (same run, interleaved; median of per-round ratios [p10-p90]; "
                    "< 1: the first is faster):", "", markdown_table(["comparison", "stage / detail", "ratio"], ratio_rows), ""]
    st = reports.get("stream_tiny_onnxruntime")
    if st:
        rows = []
        for mode, r in st["runs"].items():
            fb = r["feedback"]
            rows.append([mode, f"{r['sustained_input_fps']:.1f}", f"{r['real_time_factor']:.2f}",
                         f"{r['windows']['processed']} / {r['windows']['skipped']} (of {r['windows']['complete']})",
                         _p(r["stages"].get("total")),
                         fmt_ms(fb["ttft"]["p50_ms"]) if fb["ttft"] else "-",
                         f"{fb['tokens_per_s']['p50']:.0f}" if fb["tokens_per_s"] else "-",
                         f"{r['kv_bytes']['max'] / 2**20:.1f}", f"{r['peak_rss_mb']:.0f}"])
        out += [f"**Streaming, tiny, {st['backend']} {st['precision']}** ({st['source']['duration_s']:g} s of "
                f"{Path(st['source']['spec']).name}):", "",
                markdown_table(["run", "input FPS", "RTF", "processed / skipped", "window p50/p95/p99 ms",
                                "TTFT p50 ms", "tokens/s p50", "KV max MiB", "peak RSS MiB"], rows), ""]
    out += runtime_path_sections(reports)
    mem = reports.get("memory_tiny")
    if mem and mem.get("variants"):
        from benchmarks.memory import readme_line

        out += [f"**Long-run memory**: {readme_line(mem)}", ""]
    for name, big in reports.items():
        if not name.startswith("components_0.5b"):
            continue
        rows = []
        for v, cv in big.get("curves", {}).items():
            for a, d in zip(cv["append_vs_context"], cv["decode_step_vs_context"]):
                rows.append([v, a["context_tokens"], f"{fmt_ms(a['p50_ms'])} (+{a['appended_tokens']})",
                             fmt_ms(d["p50_ms"]), f"{a['kv_bytes'] / 2**20:.1f}"])
        stage_rows = [[s, *[_p(per.get(v)) for v in big["variants"]]] for s, per in big["stages"].items()]
        out += [f"**0.5B geometry, reduced, {', '.join(big['variants'])}** (stages over {big['repeats']} rounds, "
                f"curve points {big.get('curve_repeats', big['repeats'])} calls each; p50 / p95 / p99 ms):", "",
                markdown_table(["stage", *big["variants"]], stage_rows), "",
                markdown_table(["variant", "context tokens", "append p50 ms", "decode step p50 ms", "KV MiB"], rows)]
        batch = [[v, p["batch"], fmt_ms(p["p50_ms"]), fmt_ms(p["per_frame_p50_ms"])]
                 for v, cv in big.get("curves", {}).items() for p in cv["image_encoder_vs_batch"]]
        if batch:
            out += ["", markdown_table(["variant", "image batch", "p50 ms", "per frame ms"], batch)]
        out.append("")
    skipped = {k: v.get("reason") for k, v in summary["steps"].items() if v.get("status") == "skipped"}
    failed = {k: v.get("status") for k, v in summary["steps"].items() if v.get("status") in ("failed", "timeout")}
    if skipped or failed:
        out += ["", "Not measured in this run: " + "; ".join(
            [f"{k} ({r})" for k, r in skipped.items()] + [f"{k} ({s})" for k, s in failed.items()]) + "."]
    return "\n".join(out) + "\n"


def runtime_path_sections(reports: dict[str, Any]) -> list[str]:
    """The decode, allocation and footprint tables of a summary (empty when those steps did not run)."""
    from benchmarks import allocations, decode, footprint

    out: list[str] = []
    rows = [row for name, r in reports.items() if name.startswith("decode_") for row in decode.table_rows(r)]
    if rows:
        goal = next(r["goal_ratio"] for name, r in reports.items() if name.startswith("decode_"))
        out += [f"**Greedy-generation step vs isolated decode step** (the session's `FeedbackStage` loop vs one "
                f"`backend.decode` call on the same context, interleaved; goal on the CPU <= {goal:.2f}):", "",
                markdown_table(decode.TABLE_HEADER, rows), ""]
    rows = [row for name, r in reports.items() if name.startswith("allocations_")
            for row in allocations.table_rows(r)]
    if rows:
        out += ["**Bytes allocated per decoded token** (Python/numpy allocations per `backend.decode` call, "
                "tracemalloc; RSS growth over consecutive steps):", "",
                markdown_table(allocations.TABLE_HEADER, rows), ""]
    fp = reports.get("footprint")
    if fp and fp.get("status") == "measured":
        out += ["**Install footprint and import time** (throwaway venvs; imports in fresh interpreters):", "",
                markdown_table(footprint.TABLE_HEADER, footprint.table_rows(fp)), ""]
    elif fp:
        out += [f"Install footprint not measured: {fp.get('reason')}.", ""]
    return out


def render_summary(summary: dict[str, Any]) -> str:
    """Full Markdown of a ``run_all`` summary: the headline, the steps, then every step's own tables.

    Args:
        summary: ``run_all``'s summary.

    Returns:
        Markdown.
    """
    steps = markdown_table(["step", "status", "wall s", "command"], [
        [name, s["status"], f"{s.get('wall_s', 0):.0f}", f"`{s['command']}`" if s.get("command") else "-"]
        for name, s in summary["steps"].items()])
    parts = ["## CPU benchmark summary", "", headline(summary), "### Steps", "", steps, ""]
    for report in summary["reports"].values():
        parts += [render(report), ""]
    return "\n".join(parts)


def readme_table(summary: dict[str, Any]) -> str:
    """The compact README table: headline latencies and ratios of a ``run_all`` summary.

    Args:
        summary: ``run_all``'s summary.

    Returns:
        Markdown.
    """
    reports = summary["reports"]
    rows: list[list[str]] = []
    comp = reports.get("components_tiny")
    if comp:
        for stage in ("image_encoder", "video_encoder", "decoder_append", "decode_step"):
            per = comp["stages"].get(stage, {})
            rows.append([f"tiny {stage} p50 ms", *[fmt_ms(per[v]["p50_ms"]) if v in per else "-" for v in comp["variants"]]])
        header = ["measure", *comp["variants"]]
    else:
        header = ["measure", "value"]
    st = reports.get("stream_tiny_onnxruntime")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    notes = []
    if st and "unpaced" in st["runs"]:
        u = st["runs"]["unpaced"]
        notes.append(f"streaming (tiny, onnxruntime fp32): {u['sustained_input_fps']:.1f} input FPS, "
                     f"RTF {u['real_time_factor']:.2f}")
    if st and "paced" in st["runs"]:
        p = st["runs"]["paced"]
        notes.append(f"paced: {p['windows']['processed']} windows processed, {p['windows']['skipped']} skipped")
    if comp and "cache" in comp.get("ratios", {}):
        notes.append(f"frame cache saves {1 - comp['ratios']['cache']['ratio']['ratio_p50']:.0%} of image-encoding time")
    ratios = [f"{r['preset']} {v} {x['ratio']['ratio_p50']:.2f}" for name, r in reports.items()
              if name.startswith("decode_") for v, x in r["variants"].items()]
    if ratios:
        notes.append("greedy step / isolated decode step: " + ", ".join(ratios))
    fp = reports.get("footprint")
    if fp and fp.get("status") == "measured":
        v = fp["venvs"]
        sizes = " vs ".join(f"{k} {e['site_packages_bytes'] / 2**20:.0f} MiB" for k, e in v.items())
        imports = ", ".join(f"{k} {e['imports']['runtime.webcam']['wall']['p50_ms']:.0f} ms" for k, e in v.items()
                            if "runtime.webcam" in e["imports"])
        notes.append(f"install {sizes}; `import runtime.webcam` {imports}")
    text = "\n".join(lines)
    if notes:
        text += "\n\n" + "; ".join(notes) + "."
    return text + f"\n\n{machine_line(summary)}. Random weights.\n"


def gpu_readme_table(report: dict[str, Any]) -> str:
    """The compact README table of a ``benchmarks.gpu`` report: per-stage p50 per variant, decode and the session run.

    Args:
        report: ``benchmarks.gpu``'s report (any schema version).

    Returns:
        Markdown.
    """
    if report.get("schema_version", 1) < 2:
        return gpu_v1_readme_table(report)
    variants = report["variants"]
    rows = [[stage, *[fmt_ms((per.get(v) or per["host"])["p50_ms"]) for v in variants]]
            for stage, per in report["stages"].items()]
    gpu = report["machine"]["gpu"]["name"] if report["machine"].get("gpu") else report["device"]
    notes = []
    for name, d in report["decode"]["variants"].items():
        notes.append(f"{name}: greedy step p50 {fmt_ms(d['greedy_step']['p50_ms'])} ms vs isolated "
                     f"{fmt_ms(d['isolated']['p50_ms'])} ms ({d['ratio']['ratio_p50']:.2f})")
    for name, st in report["stream"].items():
        r = st["runs"]["unpaced"]
        per_s = r["windows"]["processed"] / r["processing_s"] if r["processing_s"] > 0 else 0.0
        notes.append(f"{name}: StreamSession {per_s:.2f} windows/s (RTF {r['real_time_factor']:.2f})")
    return (markdown_table(["stage p50 ms", *variants], rows)
            + f"\n\n{report['preset']} on {gpu}: " + "; ".join(notes) + f". {machine_line(report)}. Random weights.\n")


#: Caption of reports written by the GPU script before the lean runtime (schema 1).
GPU_V1_NOTE = ("Schema 1 report (before the lean runtime): stages through the reference model's own methods, decode "
               "steps on its rebuilt `DynamicCache`, and a model-side streaming loop that reset the context after "
               "`max_windows` (not the runtime's `StreamSession`); `make bench-gpu` now measures the runtime itself.")


def gpu_v1_markdown(report: dict[str, Any]) -> str:
    """Full Markdown of a schema-1 GPU report (``benchmarks/results/gpu_h200/gpu.json`` until it is re-measured)."""
    precisions = report["precision"].split(",")
    rows = []
    for stage, per in report["stages"].items():
        cells = [_p(per.get(p) or per.get("cpu")) for p in precisions]
        ratio = "; ".join(f"{k}: {_ratio(r[stage])}" for k, r in report["ratios"].items() if stage in r)
        rows.append([stage, *cells, ratio or "-"])
    out = [f"### GPU stages ({report['preset']}, {report['device']}, random weights)", "",
           f"Machine: {machine_line(report)}", "", GPU_V1_NOTE, "",
           markdown_table(["stage", *[f"{p} p50/p95/p99 ms" for p in precisions], "ratio (median [p10-p90])"], rows)]
    d, st = report["decode"], report["stream"]
    out += ["", f"Decode: {d['tokens_per_s_p50']:.1f} tokens/s (median step {fmt_ms(d['step']['p50_ms'])} ms, "
            f"context {d['context_tokens_start']}). Streaming: {st['windows_per_s']:.2f} windows/s over "
            f"{st['windows']} windows (window p50 {fmt_ms(st['window']['p50_ms'])} ms, real-time factor "
            f"{st['real_time_factor']:.3f}); KV max {st['kv_bytes_max'] / 2**20:.1f} MiB."]
    c = report["curves"]
    out += ["", markdown_table(["context tokens", "append window p50 ms", "decode step p50 ms", "KV MiB"], [
        [a["context_tokens"], fmt_ms(a["p50_ms"]), fmt_ms(b["p50_ms"]), f"{a['kv_bytes'] / 2**20:.1f}"]
        for a, b in zip(c["append_vs_context"], c["decode_step_vs_context"])])]
    out += ["", markdown_table(["prefill tokens", "p50 ms", "tokens/s"], [
        [p["tokens"], fmt_ms(p["p50_ms"]), f"{p['tokens_per_s']:.0f}"] for p in c["prefill_vs_length"]])]
    out += ["", markdown_table(["image batch", "p50 ms", "per frame ms"], [
        [p["batch"], fmt_ms(p["p50_ms"]), fmt_ms(p["per_frame_p50_ms"])] for p in c["image_encoder_vs_batch"]])]
    out += ["", f"TensorRT: {report['tensorrt']['status']}"]
    return "\n".join(out) + "\n"


def gpu_v1_readme_table(report: dict[str, Any]) -> str:
    """The compact README table of a schema-1 GPU report."""
    precisions = report["precision"].split(",")
    rows = [[stage, *[fmt_ms((per.get(p) or per["cpu"])["p50_ms"]) for p in precisions]]
            for stage, per in report["stages"].items()]
    d, st = report["decode"], report["stream"]
    gpu = report["machine"]["gpu"]["name"] if report["machine"].get("gpu") else report["device"]
    return (markdown_table(["stage p50 ms", *precisions], rows)
            + f"\n\n{report['preset']} on {gpu}: decode {d['tokens_per_s_p50']:.1f} tokens/s ({precisions[0]}), "
            f"model-side streaming loop {st['windows_per_s']:.2f} windows/s (RTF {st['real_time_factor']:.2f}). "
            f"{GPU_V1_NOTE} {machine_line(report)}. Random weights.\n")


def render_mode(report: dict[str, Any], mode: str) -> str:
    """Markdown of a report in a block mode: ``full``, ``readme`` or ``headline``."""
    if mode == "full":
        return render(report)
    if mode == "readme" and report.get("benchmark") == "gpu":
        return gpu_readme_table(report)
    if mode == "readme" and report.get("benchmark") == "memory":
        from benchmarks.memory import readme_line

        return readme_line(report)
    if report.get("benchmark") != "run_all":
        raise ValueError(f"mode {mode!r} needs a run_all summary, got a {report.get('benchmark')} report")
    return readme_table(report) if mode == "readme" else headline(report)


def update_doc(path: Path, check: bool = False) -> bool:
    """Re-renders every generated block of a Markdown file from the JSON it names.

    Args:
        path: The Markdown file.
        check: Do not write; only report whether it is up to date.

    Returns:
        Whether the file was already up to date.
    """
    text = path.read_text()

    def replace(m: re.Match[str]) -> str:
        report = json.loads((REPO / m.group("path")).read_text())
        return m.group(1) + render_mode(report, m.group("mode")).rstrip("\n") + "\n" + m.group(5)

    new = BLOCK.sub(replace, text)
    if new != text and not check:
        path.write_text(new)
        logger.info("updated %s", path)
    return new == text


def plot_gpu(report: dict[str, Any], out: Path) -> list[Path]:
    """Plots of a GPU report: per-window stage breakdown of the streaming run(s) and the scaling curves.

    Args:
        report: ``benchmarks.gpu`` report (any schema version).
        out: Folder.

    Returns:
        PNGs written.
    """
    from benchmarks.plots import curves, stacked_latency_bar
    from benchmarks.scaling import curve_panels

    gpu = report["machine"]["gpu"]["name"] if report["machine"].get("gpu") else report["device"]
    if report.get("schema_version", 1) < 2:
        label = f"{report['preset']} {report['precision'].split(',')[0]} (model-side loop, schema 1)"
        bars = {label: {s: v["p50_ms"] for s, v in report["stream"]["stages"].items()}}
        curve_sets = {"pytorch": report["curves"]}
    else:
        from benchmarks.stream import STACKED_STAGES

        bars = {name: {s: r["p50_ms"] for s, r in st["runs"]["unpaced"]["stages"].items() if s in STACKED_STAGES}
                for name, st in report["stream"].items()}
        curve_sets = report["curves"]
    bar = stacked_latency_bar(out / "gpu_stream_latency.png", bars, f"GPU streaming window latency ({gpu})")
    return [bar, curves(out / "gpu_scaling.png", curve_panels(curve_sets),
                        f"GPU scaling, {report['preset']} (random weights)")]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit code (1 when ``--check-doc`` finds a stale block).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, nargs="?", help="a report JSON (summary.json, components.json, ...)")
    parser.add_argument("--readme", action="store_true", help="the compact README table of a summary.json")
    parser.add_argument("--plots", type=Path, default=None, help="write the report's plots to this folder")
    parser.add_argument("--update-doc", type=Path, default=None, help="re-render the generated blocks of a Markdown file")
    parser.add_argument("--check-doc", type=Path, default=None, help="exit 1 if a generated block is stale")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.check_doc:
        fresh = update_doc(args.check_doc, check=True)
        print(f"{args.check_doc}: {'up to date' if fresh else 'STALE: run python -m benchmarks.report --update-doc'}")
        return 0 if fresh else 1
    if args.update_doc:
        update_doc(args.update_doc)
        return 0
    if args.report is None:
        parser.error("give a report JSON, --update-doc or --check-doc")
    report = json.loads(args.report.read_text())
    print(render_mode(report, "readme") if args.readme else render(report))
    if args.plots:
        kind = report.get("benchmark")
        if kind == "gpu":
            plot_gpu(report, args.plots)
        elif kind == "components":
            from benchmarks.components import plot

            plot(report, args.plots)
        elif kind == "stream":
            from benchmarks.stream import plot

            plot(report, args.plots / "stream_latency.png")
        else:
            parser.error(f"--plots: no plots for a {kind} report (its steps have their own)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
