"""``python -m validation.gpu_numerics``: fp16 numerics, activation ranges and stage timings of the reference on a GPU.

One prepared script for a machine with a GPU (the dev machines have none). It needs only torch with CUDA, numpy,
safetensors, transformers 5.x (measured with 5.24; ``model.py`` also picks 5.17's older cache keyword), opencv and
pillow; no tokenizer and no network: a random-weight checkpoint of the preset is written on the spot by
``mobile_videogpt.synthetic`` (weights only). Usage::

    python -m validation.gpu_numerics --preset 0.5b --out artifacts/gpu_numerics [--steps 32] [--budget-s 280]

What it measures (inputs: the reference window of :func:`validation.reference.reference_frames`; a seeded stand-in
for the streaming prompt, since the GPU image has no tokenizer):

* **numerics**: the reference trajectory (:func:`validation.reference.run_trajectory`) of the fp32 model, then the
  same trajectory of two fp16 modes fed the fp32 trajectory's inputs stage by stage (``teacher=``), compared by
  :func:`validation.reference.compare_trajectory` under the fp16 gates of :mod:`validation.tolerances`:
  ``fp16_policy`` emulates the exported fp16 graphs (``export/fp16.py``): every product with a weight parameter
  (linear, conv, lm_head) takes fp16 inputs and rounds its output to fp16, everything else stays fp32;
  ``fp16_naive`` is the whole model cast to fp16 (what a plain ``.half()`` or a weakly typed fp16 build does; reported,
  not gated).
* **activation ranges** of the fp32 model against the fp16 limit 65504: CLIP hidden states per layer, VideoMamba
  residual stream per block, Qwen2 residual stream per layer, Qwen2 attention logits (QKᵀ·scale, recomputed from
  the layer's inputs with its own projections and RoPE) per layer, and the final logits.
* **timings** per stage and mode through ``benchmarks.common.time_call`` (2 warm-up runs, then 5 timed, CUDA
  synchronised), summarised as percentiles.
* **TensorRT**: with ``--tensorrt`` and an importable ``tensorrt``, the fp16 ONNX graphs are exported and built
  (``export.tensorrt_builder``); otherwise the section says why it was skipped.

Everything goes to ``<out>/gpu_numerics.json``; the numerics table is printed before the summary.

Exit codes: 0 the ``fp16_policy`` mode is within the fp16 tolerances; 1 it is not; 2 no CUDA device is visible (or a
usage error); 3 the installed transformers is too old (the JSON says which, and what to carry).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from benchmarks.common import command_line, cuda_sync_fn, machine_info, summarize_ms, time_call
from engine_format.manifest import utc_now
from engine_format.prompt import StreamingPromptIds
from validation.compare import Comparison, all_passed, render_table
from validation.reference import compare_trajectory, probe_token_ids, reference_frames, run_trajectory
from validation.tolerances import tolerance_for

logger = logging.getLogger(__name__)

FP16_MAX = 65504.0
EXIT_OK = 0
EXIT_FAIL = 1
EXIT_NO_CUDA = 2
EXIT_TRANSFORMERS_TOO_OLD = 3
GATED_MODE = "fp16_policy"


# ------------------------------------------------------------------------------------------------ environment
def check_transformers() -> None:
    """Fails early, with what to carry, when transformers' Qwen2 takes no KV cache keyword the reference knows.

    The reference passes the cache as ``cache`` (transformers 5.24) or ``past_key_values`` (earlier 5.x, e.g. the
    5.17 of the GPU image).

    Raises:
        RuntimeError: Naming the installed version and the wheel to bring.
    """
    import transformers
    from transformers import Qwen2Model

    params = inspect.signature(Qwen2Model.forward).parameters
    if "cache" not in params and "past_key_values" not in params:
        raise RuntimeError(
            f"transformers {transformers.__version__}: Qwen2Model.forward takes neither `cache` nor `past_key_values`; "
            "carry transformers-5.24.0-py3-none-any.whl (pip download transformers==5.24.0 --no-deps) and run with "
            "`pip install --no-deps --target /tmp/tf <wheel>; PYTHONPATH=/tmp/tf:.`"
        )


# ------------------------------------------------------------------------------------------------ precision modes
class Fp16WeightProducts(TorchFunctionMode):
    """Emulates the exported fp16 graphs: products with a weight ``nn.Parameter`` run in fp16, the rest in fp32.

    ``F.linear`` / ``F.conv1d/2d/3d`` / ``matmul`` whose second operand is a parameter get fp16 inputs (activation,
    weight, bias), compute in fp16 (fp32 accumulation on tensor cores) and their fp16 output is cast back to fp32,
    exactly like ``Cast -> MatMul/Gemm/Conv(fp16) -> Cast`` in ``export/fp16.py``. Products of two activations (QKᵀ,
    attention·V, the scan) and the ETP pooling matrix (a buffer) stay fp32.
    """

    LINEAR_LIKE = (F.linear, F.conv1d, F.conv2d, F.conv3d)

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self.LINEAR_LIKE and len(args) > 1 and isinstance(args[1], nn.Parameter):
            rest = [a.half() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args[2:]]
            bias = kwargs.get("bias")
            kw = {**kwargs, **({"bias": bias.half()} if isinstance(bias, torch.Tensor) else {})}
            return func(args[0].half(), args[1].half(), *rest, **kw).float()
        if (
            func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)
            and len(args) == 2
            and isinstance(args[1], nn.Parameter)
        ):
            return func(args[0].half(), args[1].half()).float()
        return func(*args, **kwargs)


def standin_prompt(seed: int = 0, vocab: int = 151643) -> StreamingPromptIds:
    """Seeded stand-in for the streaming prompt (no tokenizer on the GPU image): system 52, prefix 3, suffix 16 ids."""
    rng = np.random.default_rng(seed)

    def draw(n: int) -> list[int]:
        return [int(i) for i in rng.integers(0, vocab, n)]

    return StreamingPromptIds(draw(52), draw(3), draw(16), draw(2))


# ------------------------------------------------------------------------------------------------ numerics
TRAJECTORY_FIELDS = (
    "clip_features",
    "clip_mean",
    "image_tokens",
    "frame_scores",
    "selected",
    "video_tokens",
    "text_rows",
    "system_logits",
    "window_logits",
    "teacher_logits",
    "probe_logits",
    "greedy_tokens",
)
"""What the fp16 modes are compared on (their context pixels are the fp32 trajectory's own)."""


def mode_numerics(
    modes: dict[str, tuple[Any, Callable[[], contextlib.AbstractContextManager]]], ref: Any, tol_precision: str = "fp16"
) -> dict[str, list[Comparison]]:
    """Runs each mode's trajectory teacher-forced on ``ref`` and compares it.

    Args:
        modes: Mode name -> (model, context-manager factory that puts the model in that mode).
        ref: The fp32 reference trajectory.
        tol_precision: Whose gates judge the rows.

    Returns:
        Mode -> rows.
    """
    tol = tolerance_for(tol_precision)
    rows: dict[str, list[Comparison]] = {}
    for mode, (model, ctx) in modes.items():
        start = time.perf_counter()
        with ctx():
            out = run_trajectory(model, ref.frames, ref.prompt, ref.steps, ref.probe_tokens, teacher=ref)
        rows[mode] = compare_trajectory(ref, {f: getattr(out, f) for f in TRAJECTORY_FIELDS}, tol, subject=mode)
        logger.info("%s numerics in %.1f s", mode, time.perf_counter() - start)
    return rows


# ------------------------------------------------------------------------------------------------ activations
@contextlib.contextmanager
def activation_hooks(model: Any, stats: dict[str, list[float]]) -> Iterator[None]:
    """Records max |activation| per layer into ``stats`` while active (fp32 model)."""
    from transformers.models.qwen2 import modeling_qwen2 as q2

    handles = []

    def record(key: str, value: torch.Tensor) -> None:
        stats.setdefault(key, []).append(float(value.detach().float().abs().max()))

    for layer in model.clip.vision_model.encoder.layers[: model.clip.num_layers_run]:
        handles.append(
            layer.register_forward_hook(
                lambda m, a, out: record("clip_hidden_max", out[0] if isinstance(out, tuple) else out)
            )
        )
    for block in model.lm.model.vision_tower.vision_encoder.layers:
        handles.append(block.norm.register_forward_pre_hook(lambda m, a: record("videomamba_residual_max", a[0])))
        handles.append(block.mixer.register_forward_hook(lambda m, a, out: record("videomamba_mixer_out_max", out)))
    for layer in model.lm.model.layers:
        handles.append(
            layer.register_forward_hook(
                lambda m, a, out: record("qwen_residual_max", out[0] if isinstance(out, tuple) else out)
            )
        )

        def attn_logits(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            cos, sin = kwargs["position_embeddings"]
            shape = (*hidden.shape[:-1], -1, module.head_dim)
            q = module.q_proj(hidden).view(shape).transpose(1, 2)
            k = module.k_proj(hidden).view(shape).transpose(1, 2)
            q, k = q2.apply_rotary_pos_emb(q, k, cos, sin)
            k = q2.repeat_kv(k, module.num_key_value_groups)
            scores = torch.matmul(q.float(), k.float().transpose(2, 3)) * module.scaling
            record("qwen_attention_logit_max", scores)

        handles.append(layer.self_attn.register_forward_pre_hook(attn_logits, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def activation_ranges(model: Any, ref: Any) -> dict[str, Any]:
    """One pass of every stage with the hooks; the decoder sees system + window in one prefill (all QKᵀ pairs)."""
    stats: dict[str, list[float]] = {}
    dev = model.device
    with activation_hooks(model, stats):
        clip = model.encode_images(torch.from_numpy(ref.context_pixels).to(dev))
        model.encode_video(torch.from_numpy(ref.selected_pixels).to(dev))
        visual = model.merge_visual(torch.from_numpy(ref.image_tokens), torch.from_numpy(ref.video_tokens))
        p = ref.prompt
        embeds = model.build_inputs_embeds(p.system_ids + p.window_prefix_ids, visual, p.window_suffix_ids)[None]
        logits = model.forward_cached(embeds, model.allocate_cache(embeds.shape[1]), all_logits=True)
    stats["logits_max"] = [float(logits.abs().max())]
    stats["clip_features_max"] = [float(clip.abs().max())]
    summary: dict[str, Any] = {
        k: {"max": max(v), "per_layer": [round(x, 4) for x in v], "fraction_of_fp16_max": max(v) / FP16_MAX}
        for k, v in stats.items()
    }
    summary["fp16_overflow"] = sorted(k for k, v in stats.items() if max(v) >= FP16_MAX)
    return summary


# ------------------------------------------------------------------------------------------------ timings
@torch.no_grad()
def stage_timings(model: Any, ref: Any, repeats: int = 5) -> dict[str, Any]:
    """Per-stage latency percentiles (``benchmarks.common.time_call``, CUDA synchronised); the decoder cache is
    preallocated once and reset to its length before every timed call."""
    dev = model.device
    sync = cuda_sync_fn(str(dev))
    context = torch.from_numpy(ref.context_pixels).to(dev)
    selected = torch.from_numpy(ref.selected_pixels).to(dev)
    clip = model.encode_images(context)
    p = ref.prompt
    system = model.embed_tokens(p.system_ids)[None]
    visual = model.merge_visual(torch.from_numpy(ref.image_tokens), torch.from_numpy(ref.video_tokens))
    window = model.build_inputs_embeds(p.window_prefix_ids, visual, p.window_suffix_ids)[None]
    p0, s1 = system.shape[1], window.shape[1]
    cache = model.allocate_cache(p0 + s1 + 1)
    model.forward_cached(system, cache)
    token = model.embed_tokens([42])[None]

    def append() -> None:
        cache.set_length(p0)
        model.forward_cached(window, cache)

    def decode() -> None:
        cache.set_length(p0 + s1)
        model.forward_cached(token, cache)

    append()
    calls: dict[str, tuple[Callable[[], object], int]] = {
        "image_encoder_16_frames": (lambda: model.project_images(model.encode_images(context)), repeats),
        "image_encoder_1_frame": (lambda: model.project_images(model.encode_images(context[:1])), repeats),
        "frame_scores": (lambda: model.score_frames(clip), repeats),
        "video_encoder": (lambda: model.project_video(model.pool_video(model.encode_video(selected))), repeats),
        f"decoder_append_window_{s1}_on_{p0}": (append, repeats),
        f"decoder_decode_1_on_{p0 + s1}": (decode, 4 * repeats),
    }
    return {name: summarize_ms(time_call(fn, n, warmup=2, sync=sync)) for name, (fn, n) in calls.items()}


# ------------------------------------------------------------------------------------------------ tensorrt
def tensorrt_section(args: argparse.Namespace, model: Any, elapsed: float) -> dict[str, Any]:
    """Builds TensorRT engines from freshly exported fp16 ONNX graphs when asked and possible."""
    from export.tensorrt_builder import TensorRTUnavailable, import_tensorrt

    try:
        trt = import_tensorrt()
    except TensorRTUnavailable as exc:
        return {"skipped": str(exc)}
    if not args.tensorrt:
        return {"skipped": f"TensorRT {trt.__version__} is available; pass --tensorrt to export and build"}
    if elapsed > args.budget_s:
        return {"skipped": f"time budget of {args.budget_s:.0f} s used"}
    from export.graphs import GRAPH_NAMES, io_tables
    from export.onnx_export import export_fp16, export_fp32
    from export.tensorrt_builder import BuildSettings, EngineBuilder, graph_profiles

    root = args.out / "engines"
    cpu_model = model.float().cpu()
    cpu_model.clip.vision_model.set_attn_implementation("eager")  # as python -m export does
    builder = EngineBuilder(timing_cache=root / "tensorrt" / "timing.cache")
    settings = BuildSettings()
    built: dict[str, Any] = {"tensorrt": trt.__version__}
    for name in GRAPH_NAMES:
        fp16 = export_fp16(export_fp32(name, cpu_model, root, scan_impl="chunked"), root)
        inputs, _ = io_tables(cpu_model)[name].with_precision("fp16")
        built[name] = builder.build(
            fp16.onnx_path, root / "tensorrt" / "fp16" / f"{name}.plan", inputs, graph_profiles(name, settings), "fp16"
        )
    return built


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line (usage errors exit 2)."""
    parser = argparse.ArgumentParser(prog="python -m validation.gpu_numerics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="0.5b", help="synthetic preset (weights written on the spot)")
    parser.add_argument("--model", type=Path, help="checkpoint directory instead of a preset")
    parser.add_argument("--clip", type=Path, help="CLIP directory (with --model)")
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=Path("/tmp/mvgpt_gpu_numerics"), help="where the preset goes"
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (gpu_numerics.json)")
    parser.add_argument("--steps", type=int, default=32, help="decoded tokens compared")
    parser.add_argument("--budget-s", type=float, default=280.0, help="skip optional parts after this many seconds")
    parser.add_argument(
        "--tensorrt", action="store_true", help="export fp16 ONNX and build TensorRT engines if possible"
    )
    parser.add_argument("--device", default="cuda", help="cuda (the check), or cpu for a dry run of the script")
    args = parser.parse_args(argv)
    if (args.model is None) != (args.clip is None):
        parser.error("--model and --clip go together")
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    return args


def print_summary(result: dict[str, Any]) -> None:
    """Prints the headline numbers after the numerics table (CLI output)."""
    gpu = result["machine"].get("gpu") or {}
    versions = result["machine"]["versions"]
    print(
        f"gpu_numerics on {gpu.get('name', 'no GPU')} (torch {versions.get('torch')}, transformers "
        f"{versions.get('transformers')}), {result['seconds']} s"
    )
    acts = result.get("activations", {})
    print(
        "max |activation| / 65504: "
        + ", ".join(
            f"{k} {v['max']:.4g} ({v['fraction_of_fp16_max']:.2e})" for k, v in acts.items() if isinstance(v, dict)
        )
    )
    for mode, stages in result.get("timings", {}).items():
        if "skipped" in stages:
            print(f"timings {mode}: {stages['skipped']}")
        else:
            print(f"timings {mode}: " + ", ".join(f"{k} {v['p50_ms']:.2f} ms" for k, v in stages.items()))
    print(f"tensorrt: {result.get('tensorrt')}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (defaults to sys.argv).

    Returns:
        The exit code (see the module docstring).
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": command_line("validation.gpu_numerics", argv),
        "date": utc_now(),
        "machine": machine_info(),
    }
    out_file = args.out / "gpu_numerics.json"

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - t0, 1)
        out_file.write_text(json.dumps(result, indent=2) + "\n")

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        result["error"] = "no CUDA device visible to torch"
        save()
        print(f"gpu_numerics: {result['error']}", file=sys.stderr)
        return EXIT_NO_CUDA
    try:
        check_transformers()
    except RuntimeError as exc:
        result["error"] = str(exc)
        save()
        print(f"gpu_numerics: {exc}", file=sys.stderr)
        return EXIT_TRANSFORMERS_TOO_OLD
    from mobile_videogpt.checkpoint import load_model
    from mobile_videogpt.synthetic import ensure_synthetic_checkpoint

    start = time.perf_counter()
    if args.model is not None:
        model_dir, clip_dir = args.model, args.clip
    else:
        model_dir, clip_dir = ensure_synthetic_checkpoint(
            args.preset, args.checkpoint_dir / args.preset, with_tokenizer=False
        )
    result["checkpoint"] = {
        "model_dir": str(model_dir),
        "clip_dir": str(clip_dir),
        "preset": None if args.model else args.preset,
        "write_seconds": round(time.perf_counter() - start, 1),
    }
    start = time.perf_counter()
    model32 = load_model(model_dir, clip_dir, torch.float32, args.device, scan_impl="chunked", extend_vocab=True)
    model32.lm.set_attn_implementation("eager")  # what the ONNX graphs contain
    model16 = copy.deepcopy(model32).half()  # on CPU (dry run) fp16 ops are slow but run
    model16.lm.lm_head.weight = model16.lm.model.embed_tokens.weight
    result["checkpoint"]["load_seconds"] = round(time.perf_counter() - start, 1)
    logger.info("models loaded (%.1f s since start)", time.perf_counter() - t0)

    text_vocab = min(151643, model32.vocab_size - 3)  # plain text ids: no control or action tokens
    prompt = standin_prompt(vocab=text_vocab)
    ref = run_trajectory(model32, reference_frames(), prompt, args.steps, probe_token_ids(args.steps, text_vocab))
    modes: dict[str, tuple[Any, Callable[[], contextlib.AbstractContextManager]]] = {
        "fp16_policy": (model32, Fp16WeightProducts),
        "fp16_naive": (model16, contextlib.nullcontext),
    }
    numerics = mode_numerics(modes, ref)
    table = render_table([row for rows in numerics.values() for row in rows])
    result["numerics"] = {
        mode: {"passed": all_passed(rows), "gated": mode == GATED_MODE, "rows": [asdict(r) for r in rows]}
        for mode, rows in numerics.items()
    }
    result["numerics_table"] = table
    result["window_tokens"], result["system_tokens"] = ref.window_length, ref.system_length
    save()
    print(table)

    result["activations"] = activation_ranges(model32, ref)
    save()
    logger.info("activation ranges done (%.1f s)", time.perf_counter() - t0)

    timings: dict[str, Any] = {}
    for mode, (model, ctx) in {"fp32": (model32, contextlib.nullcontext), **modes}.items():
        if time.perf_counter() - t0 > args.budget_s:
            timings[mode] = {"skipped": f"time budget of {args.budget_s:.0f} s used"}
            continue
        with ctx():
            timings[mode] = stage_timings(model, ref)
        logger.info("%s timings done (%.1f s)", mode, time.perf_counter() - t0)
    result["timings"] = timings
    save()

    result["tensorrt"] = tensorrt_section(args, model32, time.perf_counter() - t0)
    passed = all_passed(numerics[GATED_MODE])
    result["passed"] = passed
    save()
    print_summary(result)
    print(f"{GATED_MODE}: {'PASS' if passed else 'FAIL'} (fp16 tolerances of validation/tolerances.py)")
    return EXIT_OK if passed else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
