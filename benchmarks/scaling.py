"""Scaling curves through ``ModelBackend`` calls: decoder append and decode step vs context length, prefill vs
length, image encoder vs batch size.

Shared by ``benchmarks.components`` (CPU) and ``benchmarks.gpu``. The context is built as the streaming context is:
the system prompt, then one ``decode`` per window of the prepared window's rows (prompt ids and the stages' image and
video rows, each later window preceded by its turn-closing ids), into the backend's own preallocated KV cache; each
curve point cuts that cache back to its length (``KVCache.truncate``, untimed) before the timed call. Points are
visited from the longest context down, so one build serves them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import fmt_ms, markdown_table, no_sync, summarize_ms, time_call
from benchmarks.stages import PreparedWindow

logger = logging.getLogger(__name__)


def _rows(p: PreparedWindow, count: int) -> Any:
    """``count`` visual rows ``[count, H]`` in the backend's arrays (the window's image rows, repeated as needed)."""
    b = p.backend
    flat = p.work.image_tokens.reshape(-1, b.hidden_size)
    reps = -(-count // flat.shape[0])
    return (b.stack([flat] * reps).reshape(-1, b.hidden_size) if reps > 1 else flat)[:count]


def build_context(p: PreparedWindow, tokens: int) -> Any:
    """A cache of the variant's backend holding at least ``tokens`` positions of streaming context.

    Returns:
        The KV cache (capacity for ``tokens`` plus one more window).
    """
    b = p.backend
    kv = b.allocate_kv(tokens + p.window_tokens + 16)
    start = time.perf_counter()
    b.decode([list(p.prompt.system_ids)], kv)
    closing: list[int] = []
    while kv.length < tokens:
        b.decode([closing + list(p.segments[0]), *p.segments[1:]], kv)
        closing = [b.action_token_ids.next, *p.prompt.turn_end_ids]
    logger.info("%s: built %d context positions in %.1f s", p.name, kv.length, time.perf_counter() - start)
    return kv


def measure_curves(
    p: PreparedWindow,
    *,
    contexts: Sequence[int],
    append_tokens: int | None,
    batch_sizes: Sequence[int],
    prefill_lengths: Sequence[int] = (),
    repeats: int,
    warmup: int,
    sync: Callable[[], None] = no_sync,
) -> dict[str, list[dict[str, Any]]]:
    """Append and decode-step latency vs context length, prefill vs length, image encoder vs batch size.

    Args:
        p: Prepared variant.
        contexts: Context lengths in tokens.
        append_tokens: Rows appended per append call (default: one whole window's segments).
        batch_sizes: Image-encoder batch sizes (frames per ``encode_images`` call).
        prefill_lengths: Rows of the prefill curve (one ``decode`` into an empty cache); empty to skip.
        repeats: Timed calls per point.
        warmup: Untimed calls per point.
        sync: Device synchronize.

    Returns:
        Curve name -> points (x plus a latency summary).

    Raises:
        ValueError: For a context length < 1.
    """
    b = p.backend
    out: dict[str, list[dict[str, Any]]] = {"append_vs_context": [], "decode_step_vs_context": [],
                                            "image_encoder_vs_batch": []}
    if contexts:
        if min(contexts) < 1:
            raise ValueError(f"curve contexts must be >= 1 token, got {list(contexts)}")
        chunk = [_rows(p, append_tokens)] if append_tokens else p.segments
        appended = append_tokens or p.window_tokens
        kv = build_context(p, max(contexts))
        points = []
        for n in sorted(contexts, reverse=True):
            def cut(n: int = n) -> None:
                kv.truncate(n)

            append = summarize_ms(time_call(lambda: b.decode(chunk, kv), repeats, warmup, sync, cut))
            step = summarize_ms(time_call(lambda: b.decode([[p.step_token]], kv), repeats, warmup, sync, cut))
            kv_bytes = n * kv.bytes_per_position
            points.append((n, append, step, kv_bytes))
            logger.info("%s: context %d: append p50 %.1f ms, step p50 %.1f ms", p.name, n, append["p50_ms"],
                        step["p50_ms"])
        for n, append, step, kv_bytes in sorted(points, key=lambda t: t[0]):
            out["append_vs_context"].append({"context_tokens": n, "appended_tokens": appended, "kv_bytes": kv_bytes,
                                             **append})
            out["decode_step_vs_context"].append({"context_tokens": n, "kv_bytes": kv_bytes, **step})
        del kv
    if prefill_lengths:
        out["prefill_vs_length"] = []
        kv = b.allocate_kv(max(prefill_lengths))
        for n in prefill_lengths:
            rows = [_rows(p, n)]
            s = summarize_ms(time_call(lambda rows=rows: b.decode(rows, kv), repeats, warmup, sync,
                                       lambda: kv.truncate(0)))
            out["prefill_vs_length"].append({"tokens": n, **s, "tokens_per_s": n / s["p50_ms"] * 1e3})
            logger.info("%s: prefill %d rows p50 %.1f ms", p.name, n, s["p50_ms"])
        del kv
    pixels = p.context_pixels
    for bs in batch_sizes:
        px = pixels[[i % pixels.shape[0] for i in range(bs)]]
        s = summarize_ms(time_call(lambda px=px: b.encode_images(px), repeats, warmup, sync))
        out["image_encoder_vs_batch"].append({"batch": bs, **s, "per_frame_p50_ms": s["p50_ms"] / bs})
        logger.info("%s: image encoder batch %d p50 %.1f ms", p.name, bs, s["p50_ms"])
    return out


def curves_markdown(name: str, cv: dict[str, list[dict[str, Any]]]) -> str:
    """The curve tables of one variant."""
    out = [f"Curves, {name}:", ""]
    if cv.get("append_vs_context"):
        out += [markdown_table(["context tokens", "append p50 ms", "decode step p50 ms", "KV MiB"], [
            [a["context_tokens"], f"{fmt_ms(a['p50_ms'])} (+{a['appended_tokens']})", fmt_ms(d["p50_ms"]),
             f"{a['kv_bytes'] / 2**20:.1f}"]
            for a, d in zip(cv["append_vs_context"], cv["decode_step_vs_context"])]), ""]
    if cv.get("prefill_vs_length"):
        out += [markdown_table(["prefill tokens", "p50 ms", "tokens/s"], [
            [p["tokens"], fmt_ms(p["p50_ms"]), f"{p['tokens_per_s']:.0f}"] for p in cv["prefill_vs_length"]]), ""]
    if cv.get("image_encoder_vs_batch"):
        out += [markdown_table(["image batch", "p50 ms", "per frame ms"], [
            [p["batch"], fmt_ms(p["p50_ms"]), fmt_ms(p["per_frame_p50_ms"])] for p in cv["image_encoder_vs_batch"]])]
    return "\n".join(out).rstrip() + "\n"


def curve_panels(curves: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Plot panels (``benchmarks.plots.curves``) of several variants' curves."""
    def series(key: str, x: str) -> dict[str, tuple[list[Any], list[float]]]:
        return {n: ([q[x] for q in c.get(key, [])], [q["p50_ms"] for q in c.get(key, [])]) for n, c in curves.items()}

    panels = [
        {"title": "decoder append vs context", "xlabel": "context tokens", "ylabel": "p50 ms",
         "series": series("append_vs_context", "context_tokens")},
        {"title": "decode step vs context", "xlabel": "context tokens", "ylabel": "p50 ms",
         "series": series("decode_step_vs_context", "context_tokens")},
        {"title": "prefill vs length", "xlabel": "tokens", "ylabel": "p50 ms",
         "series": series("prefill_vs_length", "tokens")},
        {"title": "image encoder vs batch", "xlabel": "frames per call", "ylabel": "p50 ms",
         "series": series("image_encoder_vs_batch", "batch")},
    ]
    return [p for p in panels if any(xs for xs, _ in p["series"].values())]
