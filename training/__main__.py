"""``python -m training``: fine-tune the action tokens on videos with timed corrections.

Usage::

    python -m training --model CKPT/model --clip CKPT/clip --gt train.jsonl --videos DIR --out OUT \\
        [--config streaming_config.yaml] [--set context.max_windows=2] [--features DIR] \\
        [--device cpu|cuda] [--precision fp32|bf16|fp16] [--batch 4] [--gradient-checkpointing] [--context-grad full]

``--gt`` is simple JSONL ground truth (``evaluation.annotations``); each episode's video is ``DIR/<episode>.mp4``.
The streaming configuration must be the one the runtime will run with: the training sequences follow its window,
context, decision-gate and generation settings (see :mod:`training.sequences`). The result ``OUT/model`` +
``OUT/clip`` is a checkpoint in the official layout: ``python -m export --model OUT/model --clip OUT/clip``.

The same command fine-tunes the 0.5B/1.5B checkpoints on a GPU (``--device cuda --precision bf16``, larger
``--batch``, ``--context-grad full --gradient-checkpointing``); only the tiny model on CPU is tested here.

Exit codes: 0 done, 2 bad arguments, configuration, checkpoint or ground truth, 3 unreadable video.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from engine_format.manifest import checkpoint_fingerprint
from engine_format.prompt import streaming_prompt_ids
from evaluation.annotations import AnnotationError, load_ground_truth
from runtime.backends import BackendError
from runtime.config import ConfigError, apply_overrides, load_config, parse_overrides
from runtime.sources import SourceError
from training.export_checkpoint import SAVE_DTYPES, write_checkpoint
from training.features import FeatureStore, episode_windows
from training.sequences import LabelError, build_samples, feedback_stop_id, label_windows
from training.trainer import ADAPTERS, CONTEXT_GRADS, PRECISIONS, TrainSettings

logger = logging.getLogger("training")

EXIT_OK, EXIT_USAGE, EXIT_SOURCE = 0, 2, 3


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    d = TrainSettings()
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint directory to fine-tune")
    parser.add_argument("--clip", type=Path, required=True, help="its CLIP directory")
    parser.add_argument("--gt", type=Path, required=True, help="ground truth (simple JSONL)")
    parser.add_argument("--videos", type=Path, required=True, help="directory of <episode>.mp4")
    parser.add_argument("--out", type=Path, required=True, help="output checkpoint (OUT/model, OUT/clip)")
    parser.add_argument("--config", type=Path, default=None, help="streaming config YAML the runtime will use")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a streaming config key (repeatable)")
    parser.add_argument("--features", type=Path, default=None, help="visual-row cache (default OUT/../features)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default=d.precision, help="autocast dtype")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--adapters", choices=ADAPTERS, default=d.adapters,
                        help="query: last-layer query-side LoRA + <feedback>/<correct> rows, context KV computed once "
                        "(exact, fast); all: LoRA on every decoder projection, context recomputed per step")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--lr", type=float, default=d.lr, help="LoRA learning rate")
    parser.add_argument("--rows-lr", type=float, default=d.rows_lr, help="action-row learning rate")
    parser.add_argument("--lora-rank", type=int, default=d.lora_rank, help="0 trains the action rows only")
    parser.add_argument("--lora-alpha", type=float, default=d.lora_alpha)
    parser.add_argument("--text-weight", type=float, default=d.text_weight)
    parser.add_argument("--batch", type=int, default=d.batch, help="samples per optimiser step")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--context-grad", choices=CONTEXT_GRADS, default=d.context_grad,
                        help="adapters all: none = stop-gradient on the context, full = back-propagate through it")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--save-dtype", choices=sorted(SAVE_DTYPES), default="float16")
    parser.add_argument("--max-episodes", type=int, default=None, help="use only the first N episodes (smoke runs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    started = time.perf_counter()
    settings = TrainSettings(
        adapters=args.adapters, epochs=args.epochs, lr=args.lr, rows_lr=args.rows_lr, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, text_weight=args.text_weight, batch=args.batch, seed=args.seed,
        context_grad=args.context_grad, precision=args.precision, gradient_checkpointing=args.gradient_checkpointing,
    )
    try:
        settings.check()
        overrides = parse_overrides(args.overrides)
        cfg = apply_overrides(load_config(args.config), overrides)
        gt = load_ground_truth(args.gt)
        from runtime.backends.torch_backend import TorchBackend  # torch only once the arguments are good

        backend = TorchBackend(args.model, args.clip, device=args.device, threads=args.threads)
        tokenizer = backend.load_tokenizer()
        prompt = streaming_prompt_ids(tokenizer.encode, cfg.generation.instruction)
        stop_id = feedback_stop_id(backend, tokenizer, cfg)
        store = FeatureStore(args.features or args.out.parent / "features", backend,
                             checkpoint_fingerprint(args.model, args.clip)["sha256"], cfg)
        episodes = sorted(gt)[: args.max_episodes]
        samples, features = [], {}
        for episode in episodes:
            video = args.videos / f"{episode}.mp4"
            windows = episode_windows(episode, video, cfg)
            features[episode] = store.rows(windows, video)
            labels = label_windows(episode, windows.windows, gt[episode].items, cfg)
            samples += build_samples(episode, windows.windows, labels, prompt, tokenizer.encode, cfg, backend.facts,
                                     backend.action_token_ids, stop_id)
    except (ConfigError, AnnotationError, LabelError, BackendError, ValueError) as exc:
        print(f"training: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SourceError as exc:
        print(f"training: {exc}", file=sys.stderr)
        return EXIT_SOURCE
    n_feedback = sum(s.action == "<feedback>" for s in samples)
    logger.info("%d episodes, %d windows (%d feedback), features: %d computed, %d from %s", len(episodes),
                len(samples), n_feedback, store.computed, store.loaded, store.root)
    from training.trainer import ActionTokenTrainer

    trainer = ActionTokenTrainer(backend.model, backend.action_token_ids, settings)
    history = trainer.fit(samples, features)
    provenance = {
        "base_model": str(args.model), "base_clip": str(args.clip), "ground_truth": str(args.gt),
        "episodes": episodes, "windows": len(samples), "feedback_windows": n_feedback,
        "streaming_config": cfg.to_dict(), "settings": trainer.settings_dict(), "history": history,
        "random_weights_base": bool(backend.random_weights), "seconds": round(time.perf_counter() - started, 1),
    }
    model_dir, clip_dir = write_checkpoint(trainer.merged_state(), args.model, args.clip, args.out,
                                           backend.action_token_ids, provenance, args.save_dtype)
    print(json.dumps(history[-1]))
    print(f"wrote {model_dir} and {clip_dir}{'  [random-weight base]' if backend.random_weights else ''}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
