"""``python -m validation.parity``: every exported backend against the PyTorch reference, stage by stage and end to end.

Usage::

    python -m validation.parity --engines engines/tiny [--model DIR --clip DIR] [--steps 16] [--out DIR] [--threads N]
                                [--stream-windows 4] [--feedback-tokens 8] [--stream-every-n 3] [--stream-max-windows 2]

Without ``--model`` the checkpoint recorded in the manifest is used (a missing synthetic one is regenerated from its
preset); its fingerprint must equal the manifest's. The reference is the PyTorch model in fp32 with the sequential
selective scan (``--ref-scan ref``, the golden yardstick). Backends come from ``runtime.backends.create_backend``:
ONNX Runtime for every exported precision, TensorRT for every built precision when ``tensorrt`` and a CUDA device are
there (otherwise reported as skipped, with the reason).

Inputs: 16 frames of the synthetic squat scene (``runtime.sources.scene.SquatScene``, 8 fps from t = 3 s, where the
figure moves) and the streaming prompt built with the runtime's own coaching instruction (``runtime.config``'s
``generation.instruction``) from the engines' tokenizer; it is checked against the ids the manifest records. The
reference runs once (:func:`validation.reference.run_trajectory`); each backend stage is then fed the reference's own
inputs, so errors do not compound:

* ``preprocess`` (the CLIP branch with the backend's preprocessing values), ``image_encoder`` (clip_features,
  clip_mean, image_tokens), ``frame_selector`` (scores; the selection must be identical, or differ only at a near
  tie within the score error), ``video_encoder`` (video_tokens), ``embed_tokens`` (rows of the prompt ids);
* ``decoder`` through ``decode(segments, kv)`` on the backend's own KV cache, in the streaming order: the system
  prefill (token ids, past = 0), the window append (prefix ids + the reference's visual rows + suffix ids, past > 0:
  the action query), N - 1 steps teacher-forced on the reference's greedy tokens, N steps teacher-forced on seeded
  probe tokens (from the window state again, ``KVCache.truncate``), and N tokens of free greedy decoding through
  the runtime's one greedy loop (``runtime.generation.greedy_decode``);
* ``stream``: the end-to-end check of :mod:`validation.stream_check` (``StreamSession`` over consecutive windows on
  the PyTorch backend and on each exported one; action logits, decisions, feedback tokens and texts).

Every compared output is one row of one table (:func:`validation.compare.render_table`), printed before the
verdict. Gates: :mod:`validation.tolerances`. Writes ``parity.json`` and ``parity.md`` to ``--out`` (default
``<engines>/parity``).

Exit codes: 0 every backend that ran is within tolerance; 1 a backend is outside tolerance, could not start, or none
could run; 2 usage, manifest, tokenizer or checkpoint problems (nothing compared).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import command_line, machine_info
from engine_format import FormatError
from engine_format.manifest import Manifest, ManifestError, checkpoint_fingerprint, library_versions, utc_now
from engine_format.preprocess import clip_branch
from engine_format.prompt import StreamingPromptIds, streaming_prompt_ids
from engine_format.tokenizer import Tokenizer
from engine_format.vocab import ACTION_TOKENS
from mobile_videogpt.checkpoint import CheckpointError, load_model
from mobile_videogpt.config import ModelConfigError
from mobile_videogpt.synthetic import ensure_synthetic_checkpoint
from runtime.backends import BackendError, ModelBackend, create_backend
from runtime.config import ConfigError, StreamingConfig
from runtime.generation import GreedyState, greedy_decode
from validation.compare import Comparison, all_passed, compare_exact, render_table
from validation.reference import (
    FRAMES_FPS,
    FRAMES_START,
    ReferenceTrajectory,
    compare_trajectory,
    probe_token_ids,
    reference_frames,
    run_trajectory,
)
from validation.stream_check import StreamPlan, StreamRecord, compare_streams, run_stream, stream_config, stream_plan
from validation.tolerances import tolerance_for

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

ORT_FP16_NOTE = (
    "CPU provider: fp16 weights and KV cache, but the fp16 products run in fp32 (onnxruntime drops the fp16 cast "
    "pairs on CPU); fp16 arithmetic is checked by validation/gpu_numerics.py and TensorRT"
)


@dataclass
class DecoderSummary:
    """Decoder facts beside the table rows.

    Attributes:
        steps: N.
        distinct_ref_top1: Distinct reference arg-max tokens over the teacher-forced steps (how discriminating the
            top-1 agreement is).
        ref_tokens: The reference's greedy tokens.
        backend_tokens: The backend's greedy tokens.
        action_probs_ref: Softmax probability of each action token at the action query (reference).
        action_probs_backend: The same for the backend.
    """

    steps: int
    distinct_ref_top1: int
    ref_tokens: list[int]
    backend_tokens: list[int]
    action_probs_ref: dict[str, float]
    action_probs_backend: dict[str, float]


@dataclass
class BackendReport:
    """Everything measured for one backend.

    Attributes:
        backend: ``onnxruntime`` or ``tensorrt``.
        precision: ``fp32`` or ``fp16``.
        skipped: Why it could not run here (None when it ran or failed to start).
        rows: Compared outputs (stages, decoder, stream).
        decoder: Decoder summary.
        stream: Its streaming session's decisions and feedback texts.
        seconds: Wall time of its checks.
        note: Remarks (e.g. CPU fp16 arithmetic).
        passed: Every row passed.
    """

    backend: str
    precision: str
    skipped: str | None = None
    rows: list[Comparison] = field(default_factory=list)
    decoder: DecoderSummary | None = None
    stream: dict[str, Any] | None = None
    seconds: float = 0.0
    note: str = ""
    passed: bool = True

    @property
    def subject(self) -> str:
        """``backend precision``."""
        return f"{self.backend} {self.precision}"


# --------------------------------------------------------------------------------------------------- inputs
def runtime_prompt(manifest: Manifest, config: StreamingConfig) -> tuple[StreamingPromptIds, Comparison]:
    """The streaming prompt the runtime builds (engines' tokenizer, the config's instruction), checked against the
    manifest's recorded ids.

    Raises:
        FormatError: If the engines' tokenizer cannot be read.
    """
    tokenizer = Tokenizer.from_dir(manifest.tokenizer_dir)
    instruction = config.generation.instruction
    prompt = streaming_prompt_ids(tokenizer.encode, instruction)
    if manifest.prompt_instruction != instruction:
        row = Comparison("prompt", "streaming_prompt_ids", "manifest")
        row.note = "the manifest was built with another instruction; not compared"
        return prompt, row
    pieces = ("system_ids", "window_prefix_ids", "window_suffix_ids", "turn_end_ids")
    row = compare_exact(
        "prompt",
        "streaming_prompt_ids",
        [getattr(manifest.prompt_ids, p) for p in pieces],
        [getattr(prompt, p) for p in pieces],
        subject="manifest",
    )
    return prompt, row


# --------------------------------------------------------------------------------------------------- checks
def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x.astype(np.float64) - x.max())
    return z / z.sum()


def run_stages(backend: ModelBackend, ref: ReferenceTrajectory) -> dict[str, Any]:
    """The backend's visual stages and embedding rows on the reference's inputs (host arrays, trajectory names)."""
    images = backend.encode_images(ref.context_pixels)
    scores, selected = backend.select_frames(ref.clip_features)
    return {
        "context_pixels": clip_branch(ref.frames, backend.clip_preprocess),  # the runtime's CLIP preprocessing
        "clip_features": backend.to_host(images.clip_features),
        "clip_mean": images.clip_mean,
        "image_tokens": backend.to_host(images.image_tokens),
        "frame_scores": backend.to_host(scores),
        "selected": np.asarray(selected, dtype=np.int64),
        "video_tokens": backend.to_host(backend.encode_video(ref.selected_pixels)),
        "text_rows": backend.embed_tokens(ref.text_ids),
    }


def run_decoder(backend: ModelBackend, ref: ReferenceTrajectory) -> dict[str, Any]:
    """The backend's decoder in the streaming order on its own KV cache (see the module docstring)."""
    p, steps = ref.prompt, ref.steps
    kv = backend.allocate_kv(ref.system_length + ref.window_length + steps)
    system_logits = backend.decode([list(p.system_ids)], kv)
    window_logits = backend.decode(
        [list(p.window_prefix_ids), ref.image_tokens, ref.video_tokens, list(p.window_suffix_ids)], kv
    )
    after_window = kv.length
    forced = [window_logits] + [backend.decode([[t]], kv) for t in ref.teacher_tokens[: steps - 1]]
    kv.truncate(after_window)
    probes = [backend.decode([[t]], kv) for t in ref.probe_tokens]
    kv.truncate(after_window)
    state = GreedyState()
    greedy = list(greedy_decode(window_logits, lambda ids: backend.decode([list(ids)], kv), steps, (), state))
    return {
        "system_logits": system_logits,
        "window_logits": window_logits,
        "teacher_logits": np.stack(forced),
        "probe_logits": np.stack(probes),
        "greedy_tokens": greedy,
    }


def decoder_summary(ref: ReferenceTrajectory, out: dict[str, Any], action_ids: tuple[int, ...]) -> DecoderSummary:
    """The decoder facts beside the table rows."""
    p_ref, p_out = _softmax(ref.window_logits), _softmax(out["window_logits"])
    return DecoderSummary(
        steps=ref.steps,
        distinct_ref_top1=len(set(np.concatenate([ref.teacher_logits, ref.probe_logits]).argmax(axis=1).tolist())),
        ref_tokens=list(ref.greedy_tokens),
        backend_tokens=list(out["greedy_tokens"]),
        action_probs_ref={n: float(p_ref[i]) for n, i in zip(ACTION_TOKENS, action_ids, strict=True)},
        action_probs_backend={n: float(p_out[i]) for n, i in zip(ACTION_TOKENS, action_ids, strict=True)},
    )


def check_backend(
    backend: ModelBackend, ref: ReferenceTrajectory, stream: tuple[StreamRecord, StreamPlan] | None
) -> BackendReport:
    """Every check of one backend.

    Args:
        backend: The backend under test.
        ref: The reference trajectory.
        stream: The reference's streaming record and the plan it ran on, or None (no end-to-end check).
    """
    tol = tolerance_for(backend.precision)
    report = BackendReport(backend.name, backend.precision)
    start = time.perf_counter()
    out = run_stages(backend, ref) | run_decoder(backend, ref)
    report.rows = compare_trajectory(ref, out, tol, subject=report.subject)
    report.decoder = decoder_summary(ref, out, backend.action_token_ids.ids)
    if stream is not None:
        ref_stream, plan = stream
        record = run_stream(backend, plan)
        report.rows += compare_streams(ref_stream, record, tol)
        report.stream = record.summary()
    report.seconds = time.perf_counter() - start
    report.passed = all_passed(report.rows)
    return report


# --------------------------------------------------------------------------------------------------- backends
def tensorrt_skip_reason(manifest: Manifest, precision: str) -> str | None:
    """Why TensorRT cannot run ``precision`` here, or None (then a failure to start is a failure, not a skip)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not importable (no module named tensorrt; it needs tensorrt>=10 and CUDA)"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    if precision not in manifest.tensorrt_precisions:
        return f"no TensorRT {precision} engines in {manifest.root} (build them: python -m export --tensorrt)"
    return None


def backend_plan(manifest: Manifest) -> list[tuple[str, str, str | None]]:
    """Backends to run: ``(name, precision, skip reason or None)``."""
    plan: list[tuple[str, str, str | None]] = [("onnxruntime", p, None) for p in manifest.precisions]
    for precision in manifest.tensorrt_precisions or manifest.precisions:
        plan.append(("tensorrt", precision, tensorrt_skip_reason(manifest, precision)))
    return plan


# --------------------------------------------------------------------------------------------------- report
def _probs(values: dict[str, float]) -> str:
    return ", ".join(f"{v:.3g}" for v in values.values())


def markdown_report(prompt_row: Comparison, reports: list[BackendReport], ref_stream: StreamRecord | None,
                    header: dict[str, Any]) -> str:
    """The parity report: one table of every compared output, the decoder and stream summaries, the verdict."""
    ran = [r for r in reports if not r.skipped]
    lines = [
        f"# Parity: {header['engines']}",
        "",
        f"- machine: {header['machine']}",
        f"- date: {header['date']}",
        f"- command: `{header['command']}`",
        f"- checkpoint: {header['checkpoint']}{' (RANDOM WEIGHTS)' if header['random_weights'] else ''}",
        f"- reference: PyTorch fp32, scan_impl={header['reference_scan']}; stream reference: the pytorch backend "
        "(runtime scan); tolerances: validation/tolerances.py",
        f"- inputs: {header['inputs']}",
        "",
        "## Compared outputs",
        "",
        render_table([prompt_row] + [row for r in ran for row in r.rows]),
    ]
    skipped = [f"- {r.subject}: skipped: {r.skipped}" for r in reports if r.skipped]
    failed_start = [f"- {r.subject}: **FAIL** {r.note}" for r in ran if not r.rows]
    if skipped or failed_start:
        lines += ["", "## Not compared", "", *skipped, *failed_start]
    decoders = [r for r in ran if r.decoder is not None]
    if decoders:
        lines += [
            "",
            "## Decoder",
            "",
            "| subject | steps (distinct ref top-1) | P(<next>,<feedback>,<correct>) ref | same, backend "
            "| greedy tokens (ref / backend) |",
            "|---|---|---|---|---|",
        ]
        for r in decoders:
            d = r.decoder
            assert d is not None
            lines.append(
                f"| {r.subject} | {d.steps} ({d.distinct_ref_top1}) | {_probs(d.action_probs_ref)} "
                f"| {_probs(d.action_probs_backend)} | {d.ref_tokens} / {d.backend_tokens} |"
            )
    if ref_stream is not None:
        lines += ["", "## Streaming session (end to end)", ""]
        lines += ["| subject | decisions | feedback texts |", "|---|---|---|"]
        for name, summary in [(ref_stream.subject + " (reference)", ref_stream.summary())] + [
            (r.subject, r.stream) for r in ran if r.stream is not None
        ]:
            decisions = ", ".join(f"w{d[0]} {d[1]}" for d in summary["decisions"])  # type: ignore[index, union-attr]
            texts = "; ".join(f"w{k}: {v!r}" for k, v in summary["feedback_texts"].items())  # type: ignore[union-attr]
            lines.append(f"| {name} | {decisions} | {texts or '-'} |".replace("\n", " "))
    notes = [f"- {r.subject}: {r.note}" for r in ran if r.note and r.rows]
    if notes:
        lines += ["", "## Notes", "", *notes]
    verdict = "PASS" if ran and all(r.passed for r in ran) and prompt_row.passed else "FAIL"
    lines += ["", f"**{verdict}**", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- main
def machine_description() -> str:
    """CPU model, usable cores, torch threads and GPU, for the report header."""
    m = machine_info()
    gpu = m["gpu"]["name"] if m["gpu"] else "no GPU"
    return f"{m['cpu']}, {m['usable_cores']} usable cores, {m['torch_threads']} torch threads, {gpu}"


def resolve_checkpoint(manifest: Manifest, model: Path | None, clip: Path | None) -> tuple[Path, Path]:
    """The checkpoint to compare against: the arguments, or the manifest's (regenerating a missing synthetic one).

    Raises:
        CheckpointError: If it is missing and not regenerable, or its fingerprint differs from the manifest's.
    """
    source = manifest.source
    if model is None:
        model, clip = Path(source["model_dir"]), Path(source["clip_dir"])
        if not (model / "config.json").is_file() and source.get("preset"):
            if model.parent != clip.parent or model.name != "model" or clip.name != "clip":
                raise CheckpointError(f"cannot regenerate preset {source['preset']} into {model} / {clip}")
            logger.info("regenerating the synthetic %s checkpoint in %s", source["preset"], model.parent)
            ensure_synthetic_checkpoint(source["preset"], model.parent)
    if clip is None:
        raise CheckpointError("--model needs --clip")
    if not (model / "config.json").is_file():
        raise CheckpointError(f"checkpoint {model} does not exist; pass --model/--clip")
    found = checkpoint_fingerprint(model, clip)["sha256"]
    if found != source.get("sha256"):
        raise CheckpointError(
            f"checkpoint {model} + {clip} has fingerprint {found[:12]}..., but {manifest.root} was exported from "
            f"{str(source.get('sha256', '?'))[:12]}... ({source.get('model_dir')}); "
            "re-export or pass the right --model/--clip"
        )
    return model, clip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line (usage errors exit 2)."""
    parser = argparse.ArgumentParser(prog="python -m validation.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=Path, required=True, help="engines directory (manifest.json)")
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: the manifest's)")
    parser.add_argument("--clip", type=Path, help="CLIP directory (with --model)")
    parser.add_argument("--steps", type=int, default=16, help="decoded tokens compared (>= 1)")
    parser.add_argument("--out", type=Path, help="report directory (default: <engines>/parity)")
    parser.add_argument("--threads", type=int, default=0, help="torch and onnxruntime threads (0 = defaults)")
    parser.add_argument("--ref-scan", default="ref", help="reference selective-scan implementation")
    parser.add_argument("--seed", type=int, default=0, help="synthetic-scene and probe-token seed")
    parser.add_argument("--stream-windows", type=int, default=4, help="windows of the end-to-end check (0 = off)")
    parser.add_argument("--feedback-tokens", type=int, default=8, help="max new tokens of the stream's feedback")
    parser.add_argument(
        "--stream-max-windows",
        type=int,
        default=2,
        help="context.max_windows of the end-to-end check (2: window 2 evicts window 0 and re-bases window 1)",
    )
    parser.add_argument(
        "--stream-every-n",
        type=int,
        default=3,
        help="feedback every n-th window in the end-to-end check (3: the feedback follows an eviction)",
    )
    args = parser.parse_args(argv)
    if (args.model is None) != (args.clip is None):
        parser.error("--model and --clip go together")
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    if args.stream_windows < 0 or args.feedback_tokens < 1:
        parser.error("--stream-windows must be >= 0 and --feedback-tokens >= 1")
    if (args.stream_max_windows is not None and args.stream_max_windows < 1) or args.stream_every_n < 1:
        parser.error("--stream-max-windows and --stream-every-n must be >= 1")
    return args


def _reference_stream(
    manifest: Manifest, checkpoint: tuple[Path, Path] | None, plan: StreamPlan, threads: int
) -> StreamRecord:
    """The streaming session on the PyTorch backend: the engines' recorded checkpoint (and tokenizer), or the given
    ``(model_dir, clip_dir)``.

    Raises:
        BackendError, ConfigError: If the backend cannot start or the configuration does not fit the model.
    """
    if checkpoint is None:
        where: dict[str, Path] = {"engines_dir": manifest.root}
    else:
        where = {"model_dir": checkpoint[0], "clip_dir": checkpoint[1]}
    with create_backend("pytorch", threads=threads, **where) as backend:
        return run_stream(backend, plan, record_margins=True)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (defaults to sys.argv).

    Returns:
        The exit code (see the module docstring).
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = stream_config(args.feedback_tokens, args.stream_max_windows, args.stream_every_n)
        manifest = Manifest.load(args.engines)
        model_dir, clip_dir = resolve_checkpoint(manifest, args.model, args.clip)
        prompt, prompt_row = runtime_prompt(manifest, config)
        model = load_model(model_dir, clip_dir, scan_impl=args.ref_scan, extend_vocab=True)
    except (ConfigError, ManifestError, FormatError, CheckpointError, ModelConfigError, ValueError) as exc:
        print(f"parity: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if model.vocab_size != manifest.model.vocab_size:
        print(f"parity: the reference has {model.vocab_size} rows, the engines {manifest.model.vocab_size}",
              file=sys.stderr)
        return EXIT_USAGE
    start = time.perf_counter()
    probes = probe_token_ids(args.steps, manifest.model.tokenizer_size, seed=args.seed)
    ref = run_trajectory(model, reference_frames(args.seed), prompt, args.steps, probes)
    del model  # the stream reference loads its own copy
    logger.info("reference trajectory in %.1f s", time.perf_counter() - start)
    stream = None
    if args.stream_windows:
        plan = stream_plan(config, args.stream_windows, seed=args.seed)
        explicit = (model_dir, clip_dir) if args.model is not None else None
        try:
            stream = (_reference_stream(manifest, explicit, plan, args.threads), plan)
        except (BackendError, ConfigError) as exc:
            print(f"parity: the end-to-end reference (pytorch backend) cannot run: {exc}", file=sys.stderr)
            return EXIT_USAGE

    reports: list[BackendReport] = []
    for name, precision, reason in backend_plan(manifest):
        if reason is not None:
            reports.append(BackendReport(name, precision, skipped=reason))
            logger.warning("%s %s skipped: %s", name, precision, reason)
            continue
        device = "cuda" if name == "tensorrt" else "cpu"
        try:
            with create_backend(name, engines_dir=manifest.root, precision=precision, device=device,
                                threads=args.threads) as backend:
                report = check_backend(backend, ref, stream)
        except BackendError as exc:
            report = BackendReport(name, precision, passed=False, note=f"could not run: {exc}")
        if name == "onnxruntime" and precision == "fp16" and report.rows:
            report.note = ORT_FP16_NOTE
        reports.append(report)
        logger.info("%s %s: %s in %.1f s", name, precision, "ok" if report.passed else "FAIL", report.seconds)

    header = {
        "engines": str(args.engines),
        "machine": machine_description(),
        "date": utc_now(),
        "command": command_line("validation.parity", argv),
        "checkpoint": f"{model_dir} + {clip_dir}",
        "random_weights": manifest.random_weights,
        "reference_scan": args.ref_scan,
        "inputs": (
            f"SquatScene(seed={args.seed}) 16 frames at {FRAMES_FPS:g} fps from frame {FRAMES_START}; "
            f"{args.steps} decoder steps; stream: {args.stream_windows} windows of SquatScene(seed={args.seed}) at "
            f"30 fps, every_n n={args.stream_every_n}, max_windows {config.context.max_windows}, "
            f"{args.feedback_tokens} feedback tokens"
        ),
        "libraries": library_versions(),
    }
    ran = [r for r in reports if not r.skipped]
    ok = bool(ran) and all(r.passed for r in ran) and prompt_row.passed
    payload = {
        **header,
        "passed": ok,
        "prompt": asdict(prompt_row),
        "stream_reference": stream[0].summary() if stream else None,
        "backends": [asdict(r) for r in reports],
    }
    out = args.out or args.engines / "parity"
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = markdown_report(prompt_row, reports, stream[0] if stream else None, header)
    (out / "parity.md").write_text(md)
    print(md)
    if not ran:
        print("parity: no backend could run", file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
