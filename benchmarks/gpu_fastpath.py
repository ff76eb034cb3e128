"""The GPU fast path measured against the eager path in one run (part of ``benchmarks.gpu``; docs/gpu.md).

Nothing here is a pipeline of its own: every variant is a ``pytorch`` backend from ``runtime.backends.create_backend``
with one more fast-path setting than the rung before it (the **ladder**), each stage is one ``ModelBackend`` call
timed interleaved with the other rungs (``benchmarks.common.time_interleaved``, CUDA synchronised), and the session
numbers come from ``benchmarks.stream.measure_runs`` (``StreamingEngine`` running ``StreamSession``):

==================  ================================================================================================
rung                settings (each adds one to the rung above)
==================  ================================================================================================
eager               the reference path: ``scan_impl: chunked``, ``preprocess: cpu``, no graphs, ``attention: sdpa``
+triton             ``scan_impl: triton``
+device_preprocess  ``preprocess: device``
+cuda_graphs        ``cuda_graphs: true``
fast                ``attention: sdpa_causal`` (every fast-path setting)
==================  ================================================================================================

Also measured: one selective scan at the 0.5B shape (one direction of one layer: ref, chunked, triton), fp32 vs
fp16 on the fast path, and the numerics of the fast fp16 path against the fp32 reference on a set of scene windows
(per-stage cosine, action-logit arg-max). The issue's goals are reported as met or not, with the gap. On a CPU
(``--device cpu --quick``, the dry run) the rungs that need CUDA (Triton, CUDA graphs) are skipped with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import fmt_ms, markdown_table, paired_ratio, summarize_ms, time_interleaved
from benchmarks.fixtures import bench_config, prompt_for, scene_frames, window_segments
from benchmarks.stages import prepare_window
from runtime.backends import create_backend
from runtime.backends.base import ModelBackend
from runtime.config import StreamingConfig

logger = logging.getLogger(__name__)

#: (rung, the settings it adds); each rung keeps the settings of the rungs above it.
LADDER: tuple[tuple[str, dict[str, Any]], ...] = (
    ("eager", {}),
    ("+triton", {"scan_impl": "triton"}),
    ("+device_preprocess", {"preprocess": "device"}),
    ("+cuda_graphs", {"cuda_graphs": True}),
    ("fast", {"attention": "sdpa_causal"}),
)
CUDA_ONLY = {"scan_impl": "triton", "cuda_graphs": True}
#: The issue's goals (H100/H200, 0.5B, fp16, batch 1).
GOALS = {"window_p95_ms": (50.0, 25.0), "ttft_p50_ms": (60.0, None), "tokens_per_s_p50": (500.0, None),
         "min_stage_cosine": (0.999, None)}
LADDER_STAGES = ("preprocess", "image_encoder_16", "image_encoder_12", "video_encoder", "decoder_append",
                 "decode_step")


@dataclass
class Rung:
    """One ladder variant.

    Attributes:
        name: ``<precision>:<rung>``.
        options: Its fast-path settings.
        backend: The backend (``None`` when skipped).
        skipped: Why it was not run.
    """

    name: str
    options: dict[str, Any]
    backend: ModelBackend | None = None
    skipped: str = ""
    calls: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = field(default_factory=dict)


def ladder_options(device: str) -> list[tuple[str, dict[str, Any], str]]:
    """``(rung, cumulative settings, skip reason)``; a rung whose new setting needs CUDA is skipped off CUDA."""
    out, options = [], {}
    for name, adds in LADDER:
        options = {**options, **adds}
        needs_cuda = [k for k, v in adds.items() if CUDA_ONLY.get(k) == v]
        reason = f"{', '.join(needs_cuda)} needs CUDA" if needs_cuda and not device.startswith("cuda") else ""
        if reason:  # later rungs then build on the rung below (the setting stays off)
            options = {k: v for k, v in options.items() if k not in needs_cuda}
        out.append((name, dict(options), reason))
    return out


def build_ladder(precision: str, device: str, model_dir: Path, clip_dir: Path, threads: int) -> list[Rung]:
    """The ladder's backends at one precision (skipped rungs have none)."""
    rungs = []
    for name, options, reason in ladder_options(device):
        rung = Rung(f"{precision}:{name}", options, skipped=reason)
        if not reason:
            rung.backend = create_backend("pytorch", model_dir=model_dir, clip_dir=clip_dir, precision=precision,
                                          device=device, threads=threads, **options)
        rungs.append(rung)
    return rungs


def _stage_calls(backend: ModelBackend, config: StreamingConfig) -> dict[str, tuple[Callable[[], object],
                                                                                   Callable[[], object] | None]]:
    """One backend call per ladder stage, on the inputs the runtime's stages produce for scene window 0."""
    window, frames = scene_frames(config, 0)
    p = prepare_window(backend.name, backend, backend.load_tokenizer(), config, window, frames)
    images = [f.image for f in frames]
    f = backend.facts

    def preprocess() -> object:
        uploaded = backend.upload_frames(images)
        return backend.preprocess_images(uploaded, range(f.num_frames)), backend.preprocess_video(
            uploaded, range(f.selected_frames))

    kv = p.kv
    assert kv is not None
    return {
        "preprocess": (preprocess, None),
        "image_encoder_16": (lambda: backend.encode_images(p.context_pixels), None),
        "image_encoder_12": (lambda: backend.encode_images(p.context_pixels[:12]), None),
        "video_encoder": (lambda: backend.encode_video(p.video_pixels), None),
        "decoder_append": (lambda: backend.decode(p.segments, kv), lambda: kv.truncate(p.system_tokens)),
        "decode_step": (lambda: backend.decode([[p.step_token]], kv), lambda: kv.truncate(p.context_tokens)),
    }


def measure_ladder(rungs: Sequence[Rung], config: StreamingConfig, repeats: int, warmup: int,
                   sync: Callable[[], None]) -> dict[str, Any]:
    """Times every ladder stage on every rung, interleaved; ratios of each rung to the one above and to ``eager``.

    Returns:
        ``{"stages": {stage: {rung: summary}}, "ratios": {"<a> / <b>": {stage: paired ratio}}, "skipped": {...}}``.
    """
    live = [r for r in rungs if r.backend is not None]
    for r in live:
        r.calls = _stage_calls(r.backend, config)  # type: ignore[arg-type]
    stages: dict[str, dict[str, Any]] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    for stage in LADDER_STAGES:
        logger.info("ladder stage %s", stage)
        calls = {r.name: r.calls[stage][0] for r in live}
        before = {r.name: r.calls[stage][1] for r in live if r.calls[stage][1] is not None}
        samples[stage] = time_interleaved(calls, repeats, warmup, sync, before)  # type: ignore[arg-type]
        stages[stage] = {name: summarize_ms(x) for name, x in samples[stage].items()}
    ratios: dict[str, dict[str, Any]] = {}
    pairs = [(b.name, a.name) for a, b in zip(live, live[1:])] + [(live[-1].name, live[0].name)]
    for a, b in dict.fromkeys(pairs):
        if a != b:
            ratios[f"{a} / {b}"] = {s: paired_ratio(samples[s][a], samples[s][b]) for s in LADDER_STAGES}
    return {"stages": stages, "ratios": ratios, "skipped": {r.name: r.skipped for r in rungs if r.skipped}}


def measure_scan(device: str, repeats: int, warmup: int, sync: Callable[[], None], quick: bool) -> dict[str, Any]:
    """One selective scan, one direction of one layer, at the 0.5B shape (D 1152, L 1569, N 16; probe inputs):
    ``ref`` (1 timed call: the golden loop), ``chunked`` and ``triton`` (CUDA), with the error against ``ref``."""
    import torch

    from export.scan_formulations import make_scan_inputs
    from mobile_videogpt.selective_scan import get_scan_impl

    dim, length = (64, 256) if quick else (1152, 1569)
    x = {k: v.to(device) for k, v in make_scan_inputs("normal", length=length, dim=dim).items()}
    impls = ["ref", "chunked"] + (["triton"] if device.startswith("cuda") else [])
    with torch.no_grad():
        ref = get_scan_impl("ref")(**x, delta_softplus=True)
        out: dict[str, Any] = {"shape": {"D": dim, "L": length, "N": 16}, "impls": {}}
        for name in impls:
            fn = get_scan_impl(name)
            n = 1 if name == "ref" else repeats
            times = time_interleaved({name: lambda fn=fn: fn(**x, delta_softplus=True)}, n, min(warmup, 1), sync)
            err = float((fn(**x, delta_softplus=True) - ref).abs().max())
            out["impls"][name] = {**summarize_ms(times[name]), "max_abs_err_vs_ref": err}
    if not device.startswith("cuda"):
        out["skipped"] = {"triton": "needs CUDA"}
    return out


def _cosine(a: Any, b: Any) -> float:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30))


def window_outputs(backend: ModelBackend, config: StreamingConfig, index: int) -> dict[str, Any]:
    """Scene window ``index`` through the runtime's stages, then decoded onto the system prompt: image tokens, video
    tokens, selected frames and the window's logits (host arrays)."""
    window, frames = scene_frames(config, index)
    p = prepare_window(backend.name, backend, backend.load_tokenizer(), config, window, frames, decoder=False)
    prompt = prompt_for(backend.load_tokenizer(), config)
    kv = backend.allocate_kv(len(prompt.system_ids) + p.window_tokens + 8)
    backend.decode([list(prompt.system_ids)], kv)
    logits = backend.decode(window_segments(prompt, [p.work.image_tokens, p.work.video_tokens]), kv)
    return {"image_tokens": backend.to_host(p.work.image_tokens), "video_tokens": backend.to_host(p.work.video_tokens),
            "selected": np.asarray(p.work.selected).tolist(), "logits": logits,
            "action_logits": logits[list(backend.action_token_ids.ids)]}


def measure_numerics(reference: ModelBackend, fast: ModelBackend, config: StreamingConfig, windows: int
                     ) -> dict[str, Any]:
    """The fast path against the fp32 reference on ``windows`` scene windows (the parity set; random weights):
    per-stage cosine, selected frames and the arg-max of the three action logits."""
    rows = []
    for i in range(windows):
        ref, got = window_outputs(reference, config, i), window_outputs(fast, config, i)
        rows.append({
            "window": i,
            "cosine": {k: _cosine(ref[k], got[k]) for k in ("image_tokens", "video_tokens", "logits")},
            "same_selection": ref["selected"] == got["selected"],
            "action_top1_equal": int(np.argmax(ref["action_logits"])) == int(np.argmax(got["action_logits"])),
            "action_logits": {"reference": ref["action_logits"].tolist(), "fast": got["action_logits"].tolist()},
        })
    worst = {k: min(r["cosine"][k] for r in rows) for k in rows[0]["cosine"]}
    return {"windows": rows, "min_cosine": worst,
            "action_top1_identical": all(r["action_top1_equal"] for r in rows),
            "selection_identical": all(r["same_selection"] for r in rows)}


def goal_rows(stream: dict[str, Any], numerics: dict[str, Any] | None) -> dict[str, Any]:
    """Each goal with the measured value, met or not and the gap (value minus goal; tokens/s and cosine: goal minus
    value), from the fast variant's session run."""
    run = stream["runs"]["unpaced"]
    fb = run["feedback"]
    measured = {
        "window_p95_ms": run["stages"]["total"]["p95_ms"] if "total" in run["stages"] else None,
        "ttft_p50_ms": fb["ttft"]["p50_ms"] if fb["ttft"] else None,
        "tokens_per_s_p50": fb["tokens_per_s"]["p50"] if fb["tokens_per_s"] else None,
        "min_stage_cosine": min(numerics["min_cosine"].values()) if numerics else None,
    }
    out = {}
    for key, (goal, stretch) in GOALS.items():
        value = measured[key]
        higher_is_better = key in ("tokens_per_s_p50", "min_stage_cosine")
        if value is None:
            out[key] = {"value": None, "goal": goal, "met": None, "gap": None}
            continue
        met = value >= goal if higher_is_better else value <= goal
        gap = goal - value if higher_is_better else value - goal
        row = {"value": value, "goal": goal, "met": bool(met), "gap": 0.0 if met else gap}
        if stretch is not None:
            row["stretch"], row["stretch_met"] = stretch, bool(value <= stretch)
        out[key] = row
    if numerics:
        out["action_top1_identical"] = {"value": numerics["action_top1_identical"], "goal": True,
                                        "met": numerics["action_top1_identical"]}
    return out


def ladder_markdown(ladder: dict[str, Any]) -> str:
    """p50 / p95 per stage and rung, then the step ratios."""
    names = list(next(iter(ladder["stages"].values())))
    rows = [[s, *[f"{fmt_ms(per[n]['p50_ms'])} / {fmt_ms(per[n]['p95_ms'])}" for n in names]]
            for s, per in ladder["stages"].items()]
    out = [markdown_table(["stage (p50 / p95 ms)", *names], rows)]
    if ladder["ratios"]:
        pairs = list(ladder["ratios"])
        out += ["", "Ratios (median of per-round ratios; < 1: the first is faster):", "",
                markdown_table(["stage", *pairs], [[s, *[f"{ladder['ratios'][p][s]['ratio_p50']:.2f}" for p in pairs]]
                                                   for s in ladder["stages"]])]
    if ladder["skipped"]:
        out += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in ladder["skipped"].items())]
    return "\n".join(out)


def goals_markdown(goals: dict[str, Any]) -> str:
    """The goals table: value, goal, met, gap."""
    rows = []
    for key, g in goals.items():
        value = g["value"]
        shown = "-" if value is None else f"{value:.4g}" if not isinstance(value, bool) else str(value)
        met = "-" if g["met"] is None else "met" if g["met"] else f"not met (gap {g['gap']:.4g})"
        if "stretch" in g and value is not None:
            met += f"; stretch {g['stretch']:g}: {'met' if g['stretch_met'] else 'not met'}"
        rows.append([key, shown, str(g["goal"]), met])
    return markdown_table(["goal", "measured", "goal", "result"], rows)


def plot(report: dict[str, Any], path: Path) -> Path:
    """Grouped bars: the ladder stages' p50 per rung (log scale), and the session's window p50 / p95 per variant."""
    from benchmarks.plots import _pyplot

    plt = _pyplot()
    fp = report["fast_path"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [3, 1]})
    for ladder_name, ladder in fp["ladder"].items():
        stages = list(ladder["stages"])
        names = list(next(iter(ladder["stages"].values())))
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            ax1.bar([i + j * width for i in range(len(stages))],
                    [ladder["stages"][s][name]["p50_ms"] for s in stages], width, label=name)
        ax1.set_xticks([i + 0.4 - width / 2 for i in range(len(stages))], stages, rotation=20)
        break  # the first precision's ladder
    ax1.set_yscale("log")
    ax1.set_ylabel("p50 ms (log)")
    ax1.set_title(f"Ladder, one setting per rung ({report['preset']}, {report['device']}, random weights)")
    ax1.legend(fontsize=8)
    sessions = fp.get("stream", {})
    labels = list(sessions)
    for k, key in enumerate(("p50_ms", "p95_ms")):
        ax2.bar([i + 0.4 * k for i in range(len(labels))],
                [s["runs"]["unpaced"]["stages"].get("total", {}).get(key, 0.0) for s in sessions.values()], 0.4,
                label=key.replace("_ms", ""))
    ax2.axhline(GOALS["window_p95_ms"][0], color="red", linestyle="--", label="goal p95 50 ms")
    ax2.set_xticks([i + 0.2 for i in range(len(labels))], labels, rotation=20)
    ax2.set_ylabel("window decision ms")
    ax2.set_title("StreamSession window (frames -> action)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def default_config() -> StreamingConfig:
    """The repository's streaming configuration (the benchmarks' base)."""
    return bench_config()


def run_fast_path(
    *,
    precisions: Sequence[str],
    device: str,
    model_dir: Path,
    clip_dir: Path,
    threads: int,
    repeats: int,
    warmup: int,
    sync: Callable[[], None],
    quick: bool,
    stream_kwargs: dict[str, Any],
    numerics_windows: int,
) -> dict[str, Any]:
    """Every fast-path measurement: ladders per precision, the scan, the sessions, the numerics and the goals.

    Args:
        precisions: Ladder precisions (the first is the one the goals are read from: fp16 on CUDA).
        device: ``cuda``/``cuda:N``, or ``cpu`` for the dry run.
        model_dir: Random-weight checkpoint.
        clip_dir: Its CLIP directory.
        threads: torch CPU threads.
        repeats: Timed rounds per stage.
        warmup: Untimed rounds first.
        sync: Device synchronise.
        quick: Smoke sizes.
        stream_kwargs: ``benchmarks.stream.measure_runs`` arguments (duration, modes, feedback period, ...).
        numerics_windows: Scene windows of the parity set.

    Returns:
        The ``fast_path`` section of the GPU report.
    """
    from benchmarks.stream import measure_runs

    config = default_config()
    out: dict[str, Any] = {"ladder_definition": [[n, a] for n, a in LADDER], "ladder": {}, "stream": {}}
    ladders = {p: build_ladder(p, device, model_dir, clip_dir, threads) for p in precisions}
    try:
        for precision, rungs in ladders.items():
            out["ladder"][precision] = measure_ladder(rungs, config, repeats, warmup, sync)
        out["scan"] = measure_scan(device, repeats, warmup, sync, quick)
        first = precisions[0]
        live = [r for r in ladders[first] if r.backend is not None]
        session_variants = {live[0].name: live[0].backend, live[-1].name: live[-1].backend}
        for p in precisions[1:]:
            fast = [r for r in ladders[p] if r.backend is not None][-1]
            session_variants[fast.name] = fast.backend
        for name, backend in session_variants.items():
            logger.info("session run: %s", name)
            out["stream"][name] = measure_runs(backend, config, source_spec="synthetic", **stream_kwargs)
        reference = next((r.backend for r in ladders.get("fp32", []) if r.backend is not None), None)
        if reference is None:
            reference = create_backend("pytorch", model_dir=model_dir, clip_dir=clip_dir, precision="fp32",
                                       device=device, threads=threads)
        fast_backend = live[-1].backend
        assert fast_backend is not None
        out["numerics"] = {"reference": "fp32:eager", "fast": live[-1].name, "random_weights": True,
                           **measure_numerics(reference, fast_backend, config, numerics_windows)}
        out["goals"] = {"variant": live[-1].name, **goal_rows(out["stream"][live[-1].name], out["numerics"])}
    finally:
        for rungs in ladders.values():
            for r in rungs:
                if r.backend is not None:
                    r.backend.close()
    return out


def fast_path_markdown(fp: dict[str, Any]) -> str:
    """The fast-path section of ``gpu.md``: goals, ladders, scan, sessions, numerics."""
    goals = {k: v for k, v in fp["goals"].items() if k != "variant"}
    out = [f"### Fast path: goals ({fp['goals']['variant']}, StreamSession under the StreamingEngine, random weights)",
           "", goals_markdown(goals), ""]
    for precision, ladder in fp["ladder"].items():
        out += [f"#### Ladder, {precision} (one more setting per rung)", "", ladder_markdown(ladder), ""]
    scan = fp["scan"]
    out += [f"#### Selective scan, one direction of one layer (D {scan['shape']['D']}, L {scan['shape']['L']})", "",
            markdown_table(["impl", "p50 ms", "max abs err vs ref"],
                           [[k, fmt_ms(v["p50_ms"]), f"{v['max_abs_err_vs_ref']:.2e}"]
                            for k, v in scan["impls"].items()]),
            ""]
    rows = []
    for name, st in fp["stream"].items():
        r = st["runs"]["unpaced"]
        fb, total = r["feedback"], r["stages"].get("total")
        rows.append([name, str(r["windows"]["processed"]),
                     f"{fmt_ms(total['p50_ms'])} / {fmt_ms(total['p95_ms'])}" if total else "-",
                     fmt_ms(fb["ttft"]["p50_ms"]) if fb["ttft"] else "-",
                     f"{fb['tokens_per_s']['p50']:.0f}" if fb["tokens_per_s"] else "-"])
    out += ["#### Sessions", "", markdown_table(["variant", "windows", "window p50 / p95 ms", "TTFT p50 ms",
                                                 "tokens/s p50"], rows), ""]
    n = fp["numerics"]
    out += [f"#### Numerics: {n['fast']} vs {n['reference']} on {len(n['windows'])} scene windows (random weights)",
            "", "min cosine: " + ", ".join(f"{k} {v:.6f}" for k, v in n["min_cosine"].items())
            + f"; action top-1 identical: {n['action_top1_identical']}; frame selection identical: "
            f"{n['selection_identical']}", ""]
    return "\n".join(out)
