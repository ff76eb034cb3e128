"""Answer a question about a video file with the PyTorch reference (the release's README inference path).

``python -m mobile_videogpt.generate --model DIR --clip DIR --video FILE --question TEXT``

Frames are sampled as the release samples them, both preprocessing branches run, the visual rows are spliced into the
ChatML prompt and greedy decoding runs with the KV cache, under the checkpoint's ``generation_config.json``: its stop
ids and repetition penalty (over the generated ids, as HF applies it) and its ``max_new_tokens``. A flag given here
wins over the file, the file over the defaults (32 tokens, penalty 1.0; the release's README passes 1024 tokens).
Sampling fields of the file are logged once as ignored (greedy). Output of a synthetic checkpoint is labelled random
weights. ``--model`` and ``--clip`` may be Hugging Face cache paths.

Exit codes: 0 answered; 2 bad arguments or checkpoint (missing or corrupt config.json, weights, shard index,
generation config); 3 the video cannot be read; 1 an unexpected error (a bug: rerun with ``--log-level DEBUG`` for
the traceback); 130 interrupted. Every failure is one line on stderr; the traceback only with ``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from engine_format import FormatError
from engine_format.generation import load_generation_config
from mobile_videogpt.checkpoint import CheckpointError, load_model, resolve_checkpoint_dir
from mobile_videogpt.config import ModelConfigError
from mobile_videogpt.facts import stop_token_ids
from mobile_videogpt.prompt import chatml_prompt, tokenize_prompt
from mobile_videogpt.synthetic import is_synthetic
from mobile_videogpt.video_io import VideoReadError, pad_pixels, read_video_frames

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CHECKPOINT = 2
EXIT_VIDEO = 3
EXIT_INTERRUPTED = 130
DEFAULT_MAX_NEW_TOKENS = 32
"""Budget when neither ``--max-new-tokens`` nor the checkpoint's generation config sets one."""


@dataclass(frozen=True)
class ReferenceGeneration:
    """The reference CLI's greedy-decoding settings and where each came from.

    Attributes:
        max_new_tokens: Token budget.
        repetition_penalty: HF repetition penalty over the generated ids (1.0 = none).
        stop_ids: Ids that end the answer.
        sources: ``{"max_new_tokens" | "repetition_penalty": "flag" | "checkpoint" | "default"}``.
    """

    max_new_tokens: int
    repetition_penalty: float
    stop_ids: tuple[int, ...]
    sources: dict[str, str]


def generation_settings(
    model_dir: Path, config_eos: int | list[int] | None, max_new_tokens: int | None, repetition_penalty: float | None
) -> ReferenceGeneration:
    """Flag if given, else the checkpoint's ``generation_config.json``, else the defaults.

    Raises:
        FormatError: If generation_config.json is invalid.
    """
    record = load_generation_config(model_dir)  # logs its sampling fields once, as ignored
    sources: dict[str, str] = {}
    if max_new_tokens is not None:
        budget, sources["max_new_tokens"] = max_new_tokens, "flag"
    elif record.max_new_tokens is not None:
        budget, sources["max_new_tokens"] = record.max_new_tokens, "checkpoint"
    else:
        budget, sources["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS, "default"
    if repetition_penalty is not None:
        penalty, sources["repetition_penalty"] = repetition_penalty, "flag"
    elif record.repetition_penalty is not None:
        penalty, sources["repetition_penalty"] = record.repetition_penalty, "checkpoint"
    else:
        penalty, sources["repetition_penalty"] = 1.0, "default"
    return ReferenceGeneration(budget, float(penalty), tuple(stop_token_ids(model_dir, config_eos)), sources)


def answer_video(
    model_dir: Path,
    clip_dir: Path,
    video: Path,
    question: str,
    max_new_tokens: int | None = None,
    repetition_penalty: float | None = None,
) -> dict[str, object]:
    """Runs the reference end to end on a video file.

    Args:
        model_dir: Checkpoint directory (with tokenizer files), or an HF cache path.
        clip_dir: CLIP directory, or an HF cache path.
        video: Video file.
        question: Question text.
        max_new_tokens: Generation budget (None: the checkpoint's, else 32).
        repetition_penalty: Repetition penalty (None: the checkpoint's, else 1.0).

    Returns:
        A dict with the answer text, ids, generation settings, selected frames, prompt length and timings.

    Raises:
        CheckpointError, ModelConfigError, FormatError: For an unloadable checkpoint.
        VideoReadError: For an unreadable video.
    """
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    model_dir, clip_dir = resolve_checkpoint_dir(model_dir), resolve_checkpoint_dir(clip_dir)
    model = load_model(model_dir, clip_dir)
    settings = generation_settings(model_dir, model.lm.config.eos_token_id, max_new_tokens, repetition_penalty)
    if not (model_dir / "tokenizer.json").is_file():
        raise CheckpointError(f"{model_dir} has no tokenizer.json: the answer cannot be tokenized or decoded")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    t_load = time.perf_counter()
    frames = read_video_frames(video, model.config.pipeline.num_frames)
    video_px, context_px = model.preprocess(frames)
    n = model.config.pipeline.num_frames
    visual = model.encode_clip(pad_pixels(video_px, n), pad_pixels(context_px, n))
    prompt = tokenize_prompt(tokenizer, chatml_prompt(question, num_images=min(len(frames), n)))
    embeds = model.build_inputs_embeds(prompt.prefix_ids, visual.visual_tokens, prompt.suffix_ids)
    t_vis = time.perf_counter()
    ids, _ = model.generate(embeds, settings.max_new_tokens, settings.stop_ids, settings.repetition_penalty)
    t_gen = time.perf_counter()
    return {
        "answer": tokenizer.decode(ids, skip_special_tokens=True).strip(),
        "ids": ids,
        "random_weights": is_synthetic(model_dir),
        "generation": {
            "max_new_tokens": settings.max_new_tokens,
            "repetition_penalty": settings.repetition_penalty,
            "stop_ids": list(settings.stop_ids),
            "sources": settings.sources,
        },
        "selected_frames": visual.selected_frames.tolist(),
        "prompt_tokens": int(embeds.shape[0]),
        "seconds": {"load": t_load - t0, "visual_and_prompt": t_vis - t_load, "generate": t_gen - t_vis},
    }


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return value


def _penalty(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number > 0 (1.0 = none)")
    return value


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments.

    Returns:
        Exit code (see the module docstring).
    """
    parser = argparse.ArgumentParser(prog="python -m mobile_videogpt.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint directory (or HF cache path)")
    parser.add_argument("--clip", type=Path, required=True, help="CLIP directory (or HF cache path)")
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--question", default="Describe the person's exercise form.")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=None,
                        help=f"generation budget (default: the checkpoint's, else {DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--repetition-penalty", type=_penalty, default=None,
                        help="HF repetition penalty over generated ids (default: the checkpoint's, else 1.0)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        type=str.upper, help="DEBUG also prints the traceback of a failure")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = answer_video(
            args.model, args.clip, args.video, args.question, args.max_new_tokens, args.repetition_penalty
        )
    except KeyboardInterrupt:
        print("generate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line and a documented code
        code, line = failure_line(exc)
        if args.log_level == "DEBUG":
            traceback.print_exception(exc, file=sys.stderr)
        print(line, file=sys.stderr)
        return code
    label = " (random weights: the text is meaningless)" if result["random_weights"] else ""
    print(f"answer{label}: {result['answer']!r}")
    print(json.dumps({k: v for k, v in result.items() if k != "answer"}, indent=1))
    return EXIT_OK


def failure_line(exc: Exception) -> tuple[int, str]:
    """The exit code and the one stderr line for a failure (see the module docstring)."""
    if isinstance(exc, VideoReadError):
        return EXIT_VIDEO, f"generate: video: {exc}"
    if isinstance(exc, (CheckpointError, ModelConfigError, FormatError, OSError)):
        return EXIT_CHECKPOINT, f"generate: checkpoint: {exc}"
    return EXIT_INTERNAL, (
        f"generate: unexpected {type(exc).__name__}: {exc} (a bug: rerun with --log-level DEBUG for the traceback)"
    )


if __name__ == "__main__":
    sys.exit(main())
