"""Answer a question about a video file with the PyTorch reference (the release's README inference path).

``python -m mobile_videogpt.generate --model DIR --clip DIR --video FILE --question TEXT``

Frames are sampled as the release samples them, both preprocessing branches run, the visual rows are spliced into the
ChatML prompt and greedy decoding runs with the KV cache. Output of a synthetic checkpoint is labelled random weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from mobile_videogpt.checkpoint import load_model
from mobile_videogpt.facts import stop_token_ids
from mobile_videogpt.prompt import chatml_prompt, tokenize_prompt
from mobile_videogpt.synthetic import is_synthetic
from mobile_videogpt.video_io import pad_pixels, read_video_frames

logger = logging.getLogger(__name__)


def answer_video(model_dir: Path, clip_dir: Path, video: Path, question: str, max_new_tokens: int) -> dict[str, object]:
    """Runs the reference end to end on a video file.

    Args:
        model_dir: Checkpoint directory (with tokenizer files).
        clip_dir: CLIP directory.
        video: Video file.
        question: Question text.
        max_new_tokens: Generation budget.

    Returns:
        A dict with the answer text, ids, selected frames, prompt length and timings.
    """
    t0 = time.perf_counter()
    model = load_model(model_dir, clip_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    t_load = time.perf_counter()
    frames = read_video_frames(video, model.config.pipeline.num_frames)
    video_px, context_px = model.preprocess(frames)
    n = model.config.pipeline.num_frames
    visual = model.encode_clip(pad_pixels(video_px, n), pad_pixels(context_px, n))
    prompt = tokenize_prompt(tokenizer, chatml_prompt(question, num_images=min(len(frames), n)))
    embeds = model.build_inputs_embeds(prompt.prefix_ids, visual.visual_tokens, prompt.suffix_ids)
    t_vis = time.perf_counter()
    ids, _ = model.generate(embeds, max_new_tokens, stop_token_ids(model_dir, model.lm.config.eos_token_id))
    t_gen = time.perf_counter()
    return {
        "answer": tokenizer.decode(ids, skip_special_tokens=True).strip(),
        "ids": ids,
        "random_weights": is_synthetic(model_dir),
        "selected_frames": visual.selected_frames.tolist(),
        "prompt_tokens": int(embeds.shape[0]),
        "seconds": {"load": t_load - t0, "visual_and_prompt": t_vis - t_load, "generate": t_gen - t_vis},
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments.

    Returns:
        Exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--clip", type=Path, required=True, help="CLIP directory")
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--question", default="Describe the person's exercise form.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = answer_video(args.model, args.clip, args.video, args.question, args.max_new_tokens)
    label = " (random weights: the text is meaningless)" if result["random_weights"] else ""
    print(f"answer{label}: {result['answer']!r}")
    print(json.dumps({k: v for k, v in result.items() if k != "answer"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
