"""PyTorch reference on a CUDA GPU: fp16 vs fp32 numerics of every stage, overflow checks, and stage timings.

``python -m benchmarks.gpu_reference --preset 0.5b --out DIR`` (random weights written on the spot, no tokenizer).

Runs the whole visual path and the decoder once in fp32 and once in fp16 (the release's LLM/projector precision) on
the same frames, compares each stage (max abs error, min/mean per-token cosine, NaN/Inf, max |activation|), checks
greedy agreement, and times each stage with CUDA synchronisation after warm-up. Writes ``gpu_reference.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mobile_videogpt import frame_selection
from mobile_videogpt.checkpoint import load_model
from mobile_videogpt.synthetic import ensure_synthetic_checkpoint

logger = logging.getLogger(__name__)


def _timed(fn: Callable[[], object], repeats: int, device: torch.device) -> dict[str, float]:
    """Median/min ms of ``fn`` after one warm-up, synchronising CUDA around each call."""
    fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "n": repeats}


def _compare(ref: torch.Tensor, test: torch.Tensor) -> dict[str, float]:
    """Error statistics of ``test`` against ``ref`` over the last dimension as tokens."""
    r, t = ref.float().reshape(-1, ref.shape[-1]), test.float().reshape(-1, test.shape[-1])
    cos = torch.nn.functional.cosine_similarity(r, t, dim=-1)
    return {
        "max_abs_error": float((r - t).abs().max()),
        "max_abs_ref": float(r.abs().max()),
        "max_abs_test": float(t.abs().max()),
        "min_token_cosine": float(cos.min()),
        "mean_token_cosine": float(cos.mean()),
        "nonfinite_test": int((~torch.isfinite(t)).sum()),
    }


def run_chain(model, frames: np.ndarray, decode_steps: int) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Runs every stage; returns the intermediates (the frame selection of this precision)."""
    video_px, context_px = model.preprocess(frames)
    vis = model.encode_clip(video_px, context_px)
    embeds = model.build_inputs_embeds(list(range(100, 114)), vis.visual_tokens, list(range(200, 212)))
    logits, past = model.decode_step(embeds[None])
    ids, step_logits, _ = model.generate(embeds, decode_steps)
    return {
        "clip_features": vis.clip_features, "frame_scores": vis.frame_scores, "selected_frames": vis.selected_frames,
        "videomamba_tokens": vis.videomamba_tokens, "video_projected": vis.video_projected,
        "image_projected": vis.image_projected, "last_logits": logits, "greedy_ids": torch.tensor(ids),
        "step_logits": step_logits,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="0.5b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-steps", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("artifacts/gpu_reference"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device)
    model_dir, clip_dir = ensure_synthetic_checkpoint(args.preset, Path("checkpoints") / args.preset, with_tokenizer=False)
    frames = np.random.default_rng(0).integers(0, 256, (16, 240, 320, 3), dtype=np.uint8)
    report: dict[str, object] = {
        "preset": args.preset, "random_weights": True, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    outputs, timings = {}, {}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        model = load_model(model_dir, clip_dir, dtype=dtype, device=device, scan_impl="chunked")
        if name == "fp16":  # the release keeps CLIP and VideoMamba in fp32; the LLM and projectors run in fp16
            model.clip.float()
            model.lm.model.vision_tower.float()
        outputs[name] = run_chain(model, frames, args.decode_steps)
        video_px, context_px = model.preprocess(frames)
        feats = model.encode_images(context_px)
        clip = frame_selection.gather_selected_frames(video_px, model.select_frames(model.score_frames(feats)).cpu())
        vis = model.encode_clip(video_px, context_px)
        embeds = model.build_inputs_embeds(list(range(100, 114)), vis.visual_tokens, list(range(200, 212)))
        _, past = model.decode_step(embeds[None])
        step = model.embed_tokens([5])[None]
        timings[name] = {
            "clip_16_frames": _timed(lambda: model.encode_images(context_px), args.repeats, device),
            "frame_selection": _timed(lambda: model.select_frames(model.score_frames(feats)), args.repeats, device),
            "videomamba_8_frames_chunked_scan": _timed(lambda: model.encode_video(clip), args.repeats, device),
            "projectors": _timed(lambda: (model.project_images(feats), model.project_video(model.pool_video(model.encode_video(clip)))), 1, device),
            f"prefill_{embeds.shape[0]}_tokens": _timed(lambda: model.decode_step(embeds[None]), args.repeats, device),
            "append_window_onto_1_window": _timed(lambda: model.decode_step(embeds[None], past), args.repeats, device),
            "decode_step": _timed(lambda: model.decode_step(step, past), args.repeats * 4, device),
        }
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ref, half = outputs["fp32"], outputs["fp16"]
    report["numerics_fp16_vs_fp32"] = {
        k: _compare(ref[k], half[k]) for k in ("clip_features", "frame_scores", "videomamba_tokens", "video_projected", "image_projected", "last_logits")
    }
    report["selected_frames_equal"] = bool(torch.equal(ref["selected_frames"].cpu(), half["selected_frames"].cpu()))
    report["greedy_ids_fp32"] = ref["greedy_ids"].tolist()
    report["greedy_ids_fp16"] = half["greedy_ids"].tolist()
    report["step_top1_agreement_teacher_free"] = float((ref["step_logits"].argmax(-1) == half["step_logits"].argmax(-1)).float().mean())
    report["timings_ms"] = timings
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_reference.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
