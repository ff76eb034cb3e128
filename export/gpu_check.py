"""``python -m export.gpu_check``: fp16 numerics, activation ranges and stage timings of the reference on a CUDA GPU.

One prepared script for a machine with a GPU (the dev machines have none). It needs only torch with CUDA, numpy,
safetensors, transformers 5.x (measured with 5.24; ``model.py`` also picks 5.17's older cache keyword), opencv and
pillow (preprocessing); no tokenizer and no network: a random-weight checkpoint of the preset is drawn on the spot
with the same seeds as ``mobile_videogpt.synthetic`` (weights only). Usage::

    python -m export.gpu_check --preset 0.5b --out artifacts/gpu_check [--steps 32] [--budget-s 280]

What it measures, stage by stage (image encoder, frame scores, video encoder, decoder prefill + append + decode):

* **numerics** of three precisions against the fp32 reference on the GPU:
  ``fp16_policy`` emulates the exported fp16 graphs (``export/fp16.py``): every product with a weight parameter
  (linear, conv, lm_head) takes fp16 inputs and rounds its output to fp16, everything else stays fp32;
  ``fp16_naive`` is the whole model cast to fp16 (what a plain ``.half()`` or a weakly typed fp16 build does).
  Per output: max |err|, mean/min per-token cosine, NaN/Inf count; decoder: logits error, teacher-forced top-1
  agreement, greedy identity over ``--steps`` tokens.
* **activation ranges** of the fp32 model, against the fp16 limit 65504: CLIP hidden states per layer, VideoMamba
  residual stream per block, Qwen2 residual stream per layer, Qwen2 attention logits (QKᵀ·scale, recomputed from
  the layer's inputs with its own projections and RoPE) per layer, and the final logits.
* **timings** per stage and precision: 2 warm-up runs, then the median of 5 with ``torch.cuda.synchronize``.
* **TensorRT**: when ``tensorrt`` imports, the fp16 ONNX graphs are exported and built (``export.tensorrt_builder``);
  otherwise the section says why it was skipped.

Everything goes to ``<out>/gpu_check.json``; a short summary is printed. Exit 2 when no CUDA device is visible or
transformers is too old (the JSON says which).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

logger = logging.getLogger("export.gpu_check")

FP16_MAX = 65504.0
EXIT_NO_GPU = 2


# ------------------------------------------------------------------------------------------------ environment
def environment() -> dict[str, Any]:
    """Versions and the device."""
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    return info


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


# ------------------------------------------------------------------------------------------------ checkpoint
def weights_only_checkpoint(preset: str, out: Path) -> tuple[Path, Path]:
    """Writes the preset's random-weight checkpoint without tokenizer files (same seeds as ``synthetic``).

    Args:
        preset: Synthetic preset.
        out: Directory (``model/`` and ``clip/`` are created).

    Returns:
        ``(model_dir, clip_dir)``; reused when already written for this preset.
    """
    from safetensors.numpy import save_file

    from mobile_videogpt import synthetic as syn

    p = syn.PRESETS[preset]
    model_dir, clip_dir = out / "model", out / "clip"
    marker = {"random_weights": True, "preset": preset, "tokenizer": False}
    if all(
        (d / syn.SYNTHETIC_MARKER).is_file() and json.loads((d / syn.SYNTHETIC_MARKER).read_text()) == marker
        for d in (model_dir, clip_dir)
    ):
        return model_dir, clip_dir
    for d in (model_dir, clip_dir):
        d.mkdir(parents=True, exist_ok=True)
    save_file(
        dict(syn.draw_tensors(syn.checkpoint_shapes(p), syn.CHECKPOINT_SEED, p.llm_std)),
        str(model_dir / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (model_dir / "config.json").write_text(json.dumps(syn.model_config_json(p), indent=2))
    save_file(
        dict(syn.draw_tensors(syn.clip_shapes(p), syn.CLIP_SEED, p.llm_std)),
        str(clip_dir / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (clip_dir / "config.json").write_text(json.dumps(syn.clip_config_json(p), indent=2))
    (clip_dir / "preprocessor_config.json").write_text(json.dumps(syn.CLIP_PREPROCESSOR, indent=2))
    for d in (model_dir, clip_dir):
        (d / syn.SYNTHETIC_MARKER).write_text(json.dumps(marker))
    return model_dir, clip_dir


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


# ------------------------------------------------------------------------------------------------ metrics
def compare(ref: torch.Tensor, out: torch.Tensor) -> dict[str, float]:
    """max |err|, max |ref|, max |out|, mean/min per-token cosine (last axis) and NaN/Inf count."""
    r = ref.detach().float().reshape(-1, ref.shape[-1])
    o = out.detach().float().reshape(-1, out.shape[-1])
    finite = torch.isfinite(o)
    o_clean = torch.nan_to_num(o, nan=0.0, posinf=0.0, neginf=0.0)
    cos = F.cosine_similarity(r.double(), o_clean.double(), dim=-1, eps=1e-30)
    return {
        "max_abs_err": float((o_clean - r).abs().max()),
        "max_abs_ref": float(r.abs().max()),
        "max_abs_out": float(o_clean.abs().max()),
        "mean_token_cosine": float(cos.mean()),
        "min_token_cosine": float(cos.min()),
        "nonfinite": int((~finite).sum()),
    }


def _sync() -> None:
    """Waits for queued CUDA work (no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], warmup: int = 2, runs: int = 5) -> dict[str, float]:
    """Median/min/max wall time of ``fn`` in ms after warm-up, with CUDA synchronisation around each run."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(runs):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "median_ms": float(np.median(times)),
        "min_ms": float(np.min(times)),
        "max_ms": float(np.max(times)),
        "runs": runs,
    }


# ------------------------------------------------------------------------------------------------ stages
def prompt_ids(seed: int = 0) -> dict[str, list[int]]:
    """Seeded stand-in for the streaming prompt (no tokenizer needed): system 52, prefix 3, suffix 16 ids."""
    rng = np.random.default_rng(seed)
    draw = lambda n: [int(i) for i in rng.integers(0, 151643, n)]  # noqa: E731
    return {"system_ids": draw(52), "window_prefix_ids": draw(3), "window_suffix_ids": draw(16)}


def run_stages(
    model: Any, inputs: dict[str, Any], prompt: dict[str, list[int]], steps: int, teacher: list[int] | None
) -> dict[str, Any]:
    """Runs every stage once and decodes ``steps`` tokens (teacher-forced on ``teacher`` when given).

    Returns:
        Outputs: clip_features, image_tokens, frame_scores, video_tokens, logits [steps, V], tokens, greedy tokens.
    """
    with torch.no_grad():
        clip = model.encode_images(inputs["context_pixels"])
        image_tokens = model.project_images(clip)
        scores = model.score_frames(clip)
        video = model.project_video(model.pool_video(model.encode_video(inputs["selected_pixels"])))
        system = model.embed_tokens(prompt["system_ids"])[None]
        visual = model.merge_visual(inputs["image_tokens_ref"], inputs["video_tokens_ref"])
        window = model.build_inputs_embeds(prompt["window_prefix_ids"], visual, prompt["window_suffix_ids"])[None]
        p0, s1 = system.shape[1], window.shape[1]
        dev = model.device
        _, past = model.decode_step(system, None, torch.arange(p0, device=dev)[None])
        logits, past_window = model.decode_step(window, past, torch.arange(p0, p0 + s1, device=dev)[None])
        step_logits, tokens, state, first = [], [], past_window, logits
        for i in range(steps):
            step_logits.append(logits[0].float())
            tokens.append(int(torch.argmax(logits[0])))
            if i + 1 < steps:
                nxt = teacher[i] if teacher is not None else tokens[-1]
                logits, state = model.decode_step(
                    model.embed_tokens([nxt])[None], state, torch.tensor([[p0 + s1 + i]], device=dev)
                )
        greedy, state, logits = [int(torch.argmax(first[0]))], past_window, first
        for i in range(1, steps):
            logits, state = model.decode_step(
                model.embed_tokens([greedy[-1]])[None], state, torch.tensor([[p0 + s1 + i - 1]], device=dev)
            )
            greedy.append(int(torch.argmax(logits[0])))
    return {
        "clip_features": clip,
        "image_tokens": image_tokens,
        "frame_scores": scores,
        "video_tokens": video,
        "logits": torch.stack(step_logits),
        "tokens": tokens,
        "greedy": greedy,
        "window_len": s1,
        "system_len": p0,
    }


def stage_timings(model: Any, inputs: dict[str, Any], prompt: dict[str, list[int]]) -> dict[str, Any]:
    """Per-stage timings (see :func:`timed`)."""
    dev = model.device
    with torch.no_grad():
        clip = model.encode_images(inputs["context_pixels"])
        system = model.embed_tokens(prompt["system_ids"])[None]
        visual = model.merge_visual(inputs["image_tokens_ref"], inputs["video_tokens_ref"])
        window = model.build_inputs_embeds(prompt["window_prefix_ids"], visual, prompt["window_suffix_ids"])[None]
        p0, s1 = system.shape[1], window.shape[1]
        _, past = model.decode_step(system, None, torch.arange(p0, device=dev)[None])
        _, past_window = model.decode_step(window, past, torch.arange(p0, p0 + s1, device=dev)[None])
        token = model.embed_tokens([42])[None]
        pos = torch.tensor([[p0 + s1]], device=dev)
        return {
            "image_encoder_16_frames": timed(
                lambda: model.project_images(model.encode_images(inputs["context_pixels"]))
            ),
            "image_encoder_1_frame": timed(
                lambda: model.project_images(model.encode_images(inputs["context_pixels"][:1]))
            ),
            "frame_scores": timed(lambda: model.score_frames(clip)),
            "video_encoder": timed(
                lambda: model.project_video(model.pool_video(model.encode_video(inputs["selected_pixels"])))
            ),
            f"decoder_append_window_{s1}_on_{p0}": timed(
                lambda: model.decode_step(window, past, torch.arange(p0, p0 + s1, device=dev)[None])
            ),
            f"decoder_decode_1_on_{p0 + s1}": timed(
                lambda: model.decode_step(token, past_window, pos), warmup=3, runs=20
            ),
        }


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


def activation_ranges(model: Any, inputs: dict[str, Any], prompt: dict[str, list[int]]) -> dict[str, Any]:
    """One pass of every stage with the hooks; the decoder sees system + window in one prefill (all QKᵀ pairs)."""
    stats: dict[str, list[float]] = {}
    with torch.no_grad(), activation_hooks(model, stats):
        clip = model.encode_images(inputs["context_pixels"])
        model.encode_video(inputs["selected_pixels"])
        visual = model.merge_visual(inputs["image_tokens_ref"], inputs["video_tokens_ref"])
        ids = prompt["system_ids"] + prompt["window_prefix_ids"]
        embeds = model.build_inputs_embeds(ids, visual, prompt["window_suffix_ids"])[None]
        logits, _ = model.decode_step(
            embeds, None, torch.arange(embeds.shape[1], device=model.device)[None], all_logits=True
        )
    stats["logits_max"] = [float(logits.abs().max())]
    stats["clip_features_max"] = [float(clip.abs().max())]
    summary = {
        k: {"max": max(v), "per_layer": [round(x, 4) for x in v], "fraction_of_fp16_max": max(v) / FP16_MAX}
        for k, v in stats.items()
    }
    summary["fp16_overflow"] = sorted(k for k, v in stats.items() if max(v) >= FP16_MAX)
    return summary


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m export.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="0.5b", help="synthetic preset (weights drawn on the spot)")
    parser.add_argument("--model", type=Path, help="checkpoint directory instead of a preset")
    parser.add_argument("--clip", type=Path, help="CLIP directory (with --model)")
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=Path("/tmp/mvgpt_gpu_check"), help="where the preset goes"
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (gpu_check.json)")
    parser.add_argument("--steps", type=int, default=32, help="decoded tokens compared")
    parser.add_argument("--budget-s", type=float, default=280.0, help="skip optional parts after this many seconds")
    parser.add_argument(
        "--tensorrt", action="store_true", help="export fp16 ONNX and build TensorRT engines if possible"
    )
    parser.add_argument("--device", default="cuda", help="cuda (the check), or cpu for a dry run of the script")
    args = parser.parse_args(argv)
    if (args.model is None) != (args.clip is None):
        parser.error("--model and --clip go together")
    return args


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - a linear script with one block per section
    """CLI entry point.

    Args:
        argv: Arguments (defaults to sys.argv).

    Returns:
        0 on success, 2 without a CUDA device or with a too old transformers.
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": "python -m export.gpu_check " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(),
    }
    out_file = args.out / "gpu_check.json"

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - t0, 1)
        out_file.write_text(json.dumps(result, indent=2) + "\n")

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        result["error"] = "no CUDA device visible to torch"
        save()
        print(result["error"], file=sys.stderr)
        return EXIT_NO_GPU
    try:
        check_transformers()
    except RuntimeError as exc:
        result["error"] = str(exc)
        save()
        print(result["error"], file=sys.stderr)
        return EXIT_NO_GPU
    from export.parity import synthetic_frames
    from mobile_videogpt.checkpoint import load_model
    from mobile_videogpt.frame_selection import gather_selected_frames

    start = time.perf_counter()
    if args.model is not None:
        model_dir, clip_dir = args.model, args.clip
    else:
        model_dir, clip_dir = weights_only_checkpoint(args.preset, args.checkpoint_dir / args.preset)
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

    with torch.no_grad():
        video_px, context_px = model32.preprocess(synthetic_frames())
        clip = model32.encode_images(context_px)
        selected = model32.select_frames(model32.score_frames(clip))
        dev = model32.device
        inputs = {
            "context_pixels": context_px.to(dev),
            "selected_pixels": gather_selected_frames(video_px, selected.cpu()).to(dev),
        }
        inputs["image_tokens_ref"] = model32.project_images(clip)
        inputs["video_tokens_ref"] = model32.project_video(
            model32.pool_video(model32.encode_video(inputs["selected_pixels"]))
        )
    prompt = prompt_ids()

    modes: dict[str, tuple[Any, Callable[[], contextlib.AbstractContextManager]]] = {
        "fp32": (model32, contextlib.nullcontext),
        "fp16_policy": (model32, Fp16WeightProducts),
        "fp16_naive": (model16, contextlib.nullcontext),
    }
    ref = run_stages(model32, inputs, prompt, args.steps, None)
    numerics: dict[str, Any] = {}
    for mode, (model, ctx) in list(modes.items())[1:]:
        with ctx():
            out = run_stages(model, inputs, prompt, args.steps, ref["tokens"])
        entry = {k: compare(ref[k], out[k]) for k in ("clip_features", "image_tokens", "frame_scores", "video_tokens")}
        top1 = [int(a == b) for a, b in zip(out["tokens"], ref["tokens"])]
        entry["decoder"] = {
            **compare(ref["logits"], out["logits"]),
            "teacher_forced_top1_agreement": sum(top1) / len(top1),
            "greedy_identical": out["greedy"] == ref["greedy"],
            "first_greedy_divergence": next(
                (i for i, (a, b) in enumerate(zip(out["greedy"], ref["greedy"])) if a != b), None
            ),
            "window_tokens": ref["window_len"],
            "system_tokens": ref["system_len"],
        }
        numerics[mode] = entry
        logger.info("%s numerics done (%.1f s)", mode, time.perf_counter() - t0)
    result["numerics"] = numerics
    save()

    result["activations"] = activation_ranges(model32, inputs, prompt)
    save()
    logger.info("activation ranges done (%.1f s)", time.perf_counter() - t0)

    timings: dict[str, Any] = {}
    for mode, (model, ctx) in modes.items():
        if time.perf_counter() - t0 > args.budget_s:
            timings[mode] = {"skipped": f"time budget of {args.budget_s:.0f} s used"}
            continue
        with ctx():
            timings[mode] = stage_timings(model, inputs, prompt)
        logger.info("%s timings done (%.1f s)", mode, time.perf_counter() - t0)
    result["timings"] = timings
    save()

    result["tensorrt"] = tensorrt_section(args, model32, time.perf_counter() - t0)
    save()
    print_summary(result)
    return 0


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


def print_summary(result: dict[str, Any]) -> None:
    """Prints the headline numbers (CLI output)."""
    env = result["environment"]
    print(
        f"gpu_check on {env.get('gpu')} (torch {env['torch']}, transformers {env['transformers']}), "
        f"{result['seconds']} s"
    )
    for mode, entry in result.get("numerics", {}).items():
        d = entry["decoder"]
        vision = ", ".join(
            f"{k} min cos {entry[k]['min_token_cosine']:.5f} nonfinite {entry[k]['nonfinite']}"
            for k in ("clip_features", "image_tokens", "video_tokens")
        )
        print(
            f"{mode}: {vision}; decoder top-1 {d['teacher_forced_top1_agreement']:.3f}, greedy identical "
            f"{d['greedy_identical']}, logits max err {d['max_abs_err']:.3g}, nonfinite {d['nonfinite']}"
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
            print(f"timings {mode}: " + ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in stages.items()))
    print(f"tensorrt: {result.get('tensorrt')}")


if __name__ == "__main__":
    sys.exit(main())
