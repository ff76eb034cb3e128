"""``python -m export``: a Mobile-VideoGPT checkpoint -> ONNX graphs (fp32 + fp16) and, optionally, TensorRT engines.

Usage::

    python -m export                                   # synthetic tiny checkpoint (checkpoints/tiny, written offline)
    python -m export --preset 0.5b                     # real 0.5B geometry, random weights
    python -m export --model DIR --clip DIR --name coach [--precision fp32,fp16] [--tensorrt]

Output: ``<out>/<name>/`` with ``manifest.json``, ``tokenizer/`` (tokenizer files extended with ``<image>`` and the
action tokens, plus ``action_tokens.json``), ``onnx/<precision>/<graph>.onnx`` (+ ``.onnx.data``, ``.json``) and, with
``--tensorrt``, ``tensorrt/<precision>/<graph>.plan`` (+ ``.json``, ``timing.cache``). The action tokens are added to
the model (vocabulary extension with mean-initialised, tied rows) before export; their ids are recorded, and so is
the checkpoint's ``generation_config.json`` (the manifest's ``generation`` section: stop ids, repetition penalty,
budget, ignored fields). ``--model``/``--clip`` may be Hugging Face cache paths (resolved to their snapshot).

Exit codes: 0 success, 2 bad arguments or checkpoint (the loader's message is printed), 3 TensorRT unavailable.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from engine_format import FormatError
from engine_format.generation import load_generation_config
from engine_format.manifest import (
    FORMAT_VERSION,
    TOKENIZER_DIR,
    checkpoint_fingerprint,
    library_versions,
    utc_now,
    write_manifest,
)
from engine_format.prompt import DEFAULT_INSTRUCTION
from export import graphs
from export.onnx_export import OPSET, PRECISIONS, ExportedGraph, export_all
from mobile_videogpt.checkpoint import CheckpointError, load_model
from mobile_videogpt.checkpoint_files import hf_cache_repo_id, resolve_checkpoint_dir
from mobile_videogpt.config import ModelConfigError
from mobile_videogpt.facts import model_facts
from mobile_videogpt.model import MobileVideoGPT
from mobile_videogpt.prompt import streaming_prompt_ids
from mobile_videogpt.selective_scan import SCAN_IMPLS
from mobile_videogpt.synthetic import PRESETS, ensure_synthetic_checkpoint, is_synthetic
from mobile_videogpt.vocab import (
    ACTION_TOKENS,
    IMAGE_TOKEN,
    ActionTokenIds,
    extend_tokenizer,
    load_action_tokens,
    plan_action_token_ids,
    save_action_tokens,
)

logger = logging.getLogger("export")

DEFAULT_PRESET = "tiny"
DEFAULT_SCAN_IMPL = "chunked"
"""Selective-scan formulation exported for VideoMamba (standard ops, fp32, no unrolled 1569-step loop);
see docs/selective_scan.md and docs/export.md."""
EXIT_USAGE = 2
EXIT_TENSORRT = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses and validates the command line.

    Args:
        argv: Arguments (defaults to sys.argv).

    Returns:
        The namespace, with ``precisions`` a list.
    """
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n\n")[0])
    src = parser.add_argument_group("source (default: the synthetic tiny preset)")
    src.add_argument("--model", type=Path, help="checkpoint directory (config.json, safetensors, tokenizer files)")
    src.add_argument("--clip", type=Path, help="CLIP directory (with --model)")
    src.add_argument(
        "--preset",
        choices=sorted(p for p in PRESETS if p != "tiny-golden"),
        help="synthetic random-weight checkpoint, written under --checkpoints/<preset> when missing",
    )
    src.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="where presets live")
    parser.add_argument("--name", help="engines name (default: the preset, or the checkpoint directory's name)")
    parser.add_argument("--out", type=Path, default=Path("engines"), help="parent of the engines directory")
    parser.add_argument("--precision", default="fp32,fp16", help="comma-separated subset of fp32,fp16")
    parser.add_argument(
        "--scan-impl",
        default=DEFAULT_SCAN_IMPL,
        choices=[k for k in SCAN_IMPLS if k != "ref"],
        help="VideoMamba selective-scan formulation to export",
    )
    parser.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (needs tensorrt + CUDA)")
    parser.add_argument("--max-context", type=int, default=12288, help="TensorRT decoder: largest past + sequence")
    parser.add_argument("--max-sequence", type=int, default=4096, help="TensorRT decoder: largest sequence per call")
    parser.add_argument("--threads", type=int, default=0, help="torch threads while tracing (0 = torch's default)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if (args.model is None) != (args.clip is None):
        parser.error("--model and --clip go together")
    if args.model is not None and args.preset is not None:
        parser.error("give either --model/--clip or --preset, not both")
    args.precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    bad = [p for p in args.precisions if p not in PRECISIONS]
    if bad or not args.precisions:
        parser.error(f"--precision {args.precision!r}: choose a comma-separated subset of {','.join(PRECISIONS)}")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    return args


def resolve_source(args: argparse.Namespace) -> tuple[Path, Path, str | None, str]:
    """Finds (or writes) the checkpoint.

    Returns:
        ``(model_dir, clip_dir, preset or None, engines name)``.
    """
    if args.model is not None:
        name = args.name or _default_name(args.model)
        # HF cache paths resolve to their snapshot: the files (and the manifest's source) are there.
        return resolve_checkpoint_dir(args.model), resolve_checkpoint_dir(args.clip), None, name
    preset = args.preset or DEFAULT_PRESET
    model_dir, clip_dir = ensure_synthetic_checkpoint(preset, args.checkpoints / preset)
    return model_dir, clip_dir, preset, args.name or preset


def _default_name(model: Path) -> str:
    """The engines name for a checkpoint path: its folder, the parent of ``model/``, or an HF cache repo's name."""
    repo = hf_cache_repo_id(model)
    if repo is not None:
        return repo.split("/", 1)[1]
    return model.parent.name if model.name == "model" else model.name


def prepare_tokenizer(model_dir: Path, action_ids: ActionTokenIds, out: Path) -> PreTrainedTokenizerFast:
    """Loads the checkpoint's tokenizer, adds ``<image>`` and the action tokens at their ids, and saves it to ``out``.

    Raises:
        CheckpointError: If the checkpoint has no tokenizer files or they do not fit the embedding rows.
    """
    if not (model_dir / "tokenizer.json").is_file():
        raise CheckpointError(f"{model_dir} has no tokenizer.json: the engines need the model's tokenizer")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    try:
        extend_tokenizer(tokenizer, action_ids.next)
    except ValueError as exc:
        raise CheckpointError(f"{model_dir}: tokenizer does not fit the action tokens: {exc}") from exc
    if out.exists():
        shutil.rmtree(out)
    tokenizer.save_pretrained(str(out))
    save_action_tokens(out, action_ids)
    return tokenizer


def build_tensorrt(
    root: Path, results: dict[str, dict[str, ExportedGraph]], model: MobileVideoGPT, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Builds a TensorRT engine for every exported graph and precision.

    Returns:
        The manifest's ``tensorrt`` section.
    """
    from export.tensorrt_builder import BuildSettings, EngineBuilder, graph_profiles

    settings = BuildSettings(max_context=args.max_context, max_sequence=min(args.max_sequence, args.max_context))
    builder = EngineBuilder(timing_cache=root / "tensorrt" / "timing.cache", workspace_gib=settings.workspace_gib)
    tables = graphs.io_tables(model)
    section: dict[str, dict[str, Any]] = {}
    for precision, exported in results.items():
        for name, graph in exported.items():
            engine = root / "tensorrt" / precision / f"{name}.plan"
            inputs, _ = tables[name].with_precision(precision)
            sidecar = builder.build(graph.onnx_path, engine, inputs, graph_profiles(name, settings), precision)
            section.setdefault(precision, {})[name] = {
                "file": engine.relative_to(root).as_posix(),
                "sidecar": engine.with_suffix(".json").relative_to(root).as_posix(),
                "profiles": sidecar["profiles"],
                "tensorrt": sidecar["tensorrt"],
                "bytes": sidecar["bytes"],
                "build_seconds": sidecar["build_seconds"],
            }
    return section


def print_summary(
    root: Path, results: dict[str, dict[str, ExportedGraph]], total_s: float, random_weights: bool
) -> None:
    """Prints the written files (CLI output)."""
    print(f"engines: {root}{'  [RANDOM WEIGHTS]' if random_weights else ''}")
    print(f"{'graph':<16}{'precision':<11}{'MB':>10}{'seconds':>10}{'nodes':>8}")
    for precision, exported in results.items():
        for name, g in exported.items():
            print(f"{name:<16}{precision:<11}{g.nbytes / 1e6:>10.1f}{g.seconds:>10.1f}{g.nodes:>8}")
    print(f"total {total_s:.1f} s")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (defaults to sys.argv).

    Returns:
        Exit code.
    """
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model_dir, clip_dir, preset, name = resolve_source(args)
        recorded = load_action_tokens(model_dir)
        model = load_model(model_dir, clip_dir, scan_impl=args.scan_impl, extend_vocab=True)
        action_ids = recorded or plan_action_token_ids(model.vocab_size - len(ACTION_TOKENS))
        if action_ids.vocab_size != model.vocab_size:
            raise CheckpointError(f"action-token ids {action_ids.as_dict()} do not end at the {model.vocab_size} rows")
        root = args.out / name
        root.mkdir(parents=True, exist_ok=True)
        for stale in ("onnx", "tensorrt"):
            if (root / stale).is_dir():
                shutil.rmtree(root / stale)
        tokenizer = prepare_tokenizer(model_dir, action_ids, root / TOKENIZER_DIR)
        generation = load_generation_config(model_dir)  # logs the fields greedy decoding ignores, once
    except (CheckpointError, ModelConfigError, FormatError, ValueError, OSError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Export attention as explicit MatMul/Softmax nodes (the fp32 islands must be visible nodes).
    model.lm.set_attn_implementation("eager")
    model.clip.vision_model.set_attn_implementation("eager")
    random_weights = is_synthetic(model_dir)
    fingerprint = checkpoint_fingerprint(model_dir, clip_dir)
    source = {"model_dir": str(model_dir), "clip_dir": str(clip_dir), "preset": preset, **fingerprint}
    results = export_all(
        model,
        root,
        args.precisions,
        source={k: source[k] for k in ("model_dir", "clip_dir", "preset", "sha256")},
        scan_impl=args.scan_impl,
    )
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": utc_now(),
        "random_weights": random_weights,
        "source": source,
        "libraries": library_versions(),
        "export": {
            "opset": OPSET,
            "exporter": "torch.onnx.export(dynamo=False) (TorchScript)",
            "attention": "eager",
            "scan_impl": args.scan_impl,
            "fp16_policy": "fp16 weight products (MatMul/Gemm/Conv with constant weights, their bias Add) and KV "
            "cache; everything else fp32 (export/fp16.py)",
            "torch_threads": torch.get_num_threads(),
        },
        "model": model_facts(
            model, model_dir, len(tokenizer), int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        ).as_dict(),
        "generation": generation.as_dict(),
        "clip_preprocess": model.clip_preprocess.as_dict(),
        "action_tokens": action_ids.as_dict(),
        "prompt": {
            "instruction": DEFAULT_INSTRUCTION,
            "ids": streaming_prompt_ids(tokenizer, DEFAULT_INSTRUCTION).as_dict(),
        },
        "tokenizer_dir": TOKENIZER_DIR,
        "precisions": list(results),
        "graphs": {p: {g: e.as_dict(root) for g, e in exported.items()} for p, exported in results.items()},
    }
    if args.tensorrt:
        from export.tensorrt_builder import TensorRTUnavailable

        try:
            manifest["tensorrt"] = build_tensorrt(root, results, model, args)
        except TensorRTUnavailable as exc:
            write_manifest(root, manifest)
            print(f"export: ONNX written to {root}, but --tensorrt failed: {exc}", file=sys.stderr)
            return EXIT_TENSORRT
    write_manifest(root, manifest)
    print_summary(root, results, time.perf_counter() - start, random_weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
