"""Per-stage latency of the PyTorch reference for one 16-frame call (the release's offline path).

``python -m benchmarks.reference_stages --preset 0.5b --out artifacts/reference_stages_0.5b.json``

Writes a random-weight checkpoint of the preset if missing (checkpoints/<preset>), then times each stage of one
call with warm-up and repeats: preprocessing (both branches), CLIP, frame scoring + top-K, VideoMamba (with each
requested scan implementation), pooling + projectors, prefill of the whole prompt, and single-token decode steps
(the reference's own ``decode_step``, not the runtime: ``benchmarks.components`` times the runtime's backends).
Reports p50/p95/p99 (``benchmarks.common`` timers) and the visual-token count. Numbers come from random weights and
the machine named in the JSON.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import command_line, report_header, summarize_ms, time_call, write_json
from mobile_videogpt import frame_selection
from mobile_videogpt.checkpoint import load_model
from mobile_videogpt.synthetic import ensure_synthetic_checkpoint

logger = logging.getLogger(__name__)


def time_stage(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict[str, float | int]:
    """Times ``fn`` after warm-up (``benchmarks.common`` timers): p50/p95/p99/min/max/mean in ms and ``n``."""
    return summarize_ms(time_call(fn, repeats, warmup))


def run(preset: str, repeats: int, scan_impls: list[str], decode_steps: int, threads: int,
        command: str) -> dict[str, Any]:
    """Measures every stage once per repeat.

    Args:
        preset: Synthetic preset.
        repeats: Timed repeats per stage.
        scan_impls: Selective-scan implementations to time VideoMamba with.
        decode_steps: Decode steps to time.
        threads: torch intra-op threads.
        command: Command line for the report.

    Returns:
        The report dict.
    """
    torch.set_num_threads(threads)
    model_dir, clip_dir = ensure_synthetic_checkpoint(preset, Path("checkpoints") / preset)
    model = load_model(model_dir, clip_dir, scan_impl=scan_impls[0])
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (16, 240, 320, 3), dtype=np.uint8)
    stages: dict[str, dict[str, float]] = {}
    stages["preprocess (both branches, 16 frames)"] = time_stage(lambda: model.preprocess(frames), repeats)
    video_px, context_px = model.preprocess(frames)
    stages["clip image encoder (16 frames)"] = time_stage(lambda: model.encode_images(context_px), repeats)
    feats = model.encode_images(context_px)
    stages["frame scoring + top-4 (2 chunks)"] = time_stage(lambda: model.select_frames(model.score_frames(feats)), repeats)
    selected = model.select_frames(model.score_frames(feats))
    clip = frame_selection.gather_selected_frames(video_px, selected)
    for impl in scan_impls:
        model.lm.model.vision_tower.vision_encoder.set_scan_impl(impl)
        reps = 1 if impl == "ref" else repeats
        stages[f"videomamba (8 frames, scan={impl})"] = time_stage(lambda: model.encode_video(clip), reps, warmup=0 if impl == "ref" else 1)
    tokens = model.encode_video(clip)
    stages["video pooling + video ETP"] = time_stage(lambda: model.project_video(model.pool_video(tokens)), repeats)
    stages["image ETP (16 frames)"] = time_stage(lambda: model.project_images(feats), repeats)
    visual = model.merge_visual(model.project_images(feats), model.project_video(model.pool_video(tokens)))
    prefix, suffix = list(range(1000, 1014)), list(range(2000, 2012))
    embeds = model.build_inputs_embeds(prefix, visual, suffix)
    stages[f"LLM prefill ({embeds.shape[0]} tokens)"] = time_stage(lambda: model.decode_step(embeds[None]), max(1, repeats // 2))
    logits, past = model.decode_step(embeds[None])
    step_embeds = model.embed_tokens([int(logits.argmax())])[None]
    stages[f"LLM decode step (context {embeds.shape[0]})"] = time_stage(
        lambda: model.decode_step(step_embeds, past), decode_steps, warmup=0)
    kv_bytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in past)
    report = report_header("reference_stages", command, preset=preset, backend="pytorch (reference model)",
                           precision="fp32", threads=threads)
    report.update({
        "visual_tokens_per_call": int(visual.shape[0]),
        "prompt_tokens": int(embeds.shape[0]),
        "kv_cache_bytes_fp32": int(kv_bytes),
        "stages": stages,
    })
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """Renders the stage table."""
    lines = ["| stage | p50 ms | min ms | n |", "|---|---|---|---|"]
    for name, s in report["stages"].items():
        lines.append(f"| {name} | {s['p50_ms']:.1f} | {s['min_ms']:.1f} | {s['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="0.5b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scan-impls", default="chunked,ref", help="comma-separated; 'ref' is timed once")
    parser.add_argument("--decode-steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("artifacts/reference_stages.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run(args.preset, args.repeats, args.scan_impls.split(","), args.decode_steps, args.threads,
                 command_line("benchmarks.reference_stages", argv))
    write_json(args.out, report)
    print(to_markdown(report))
    print(f"visual tokens per call: {report['visual_tokens_per_call']}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
