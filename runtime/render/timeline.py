"""``timeline.png``: one picture of a whole run, on one stream-time axis.

Rows, top to bottom:

1. **model** (``model`` policy): the three action probabilities per window with the gate's confidence threshold;
   or **rule** (rule policies): the rule's own decision per window;
2. **decision**: the action carried out per window after the gate, with the gate's reason where it changed it,
   skipped windows with theirs, and context clears/evictions as ticks;
3. **feedback**: when each feedback text streamed (numbered; repeats greyed) and when it was spoken;
4. **latency**: per-window processing time stacked by stage, plus the feedback generation time.

Below the axis: the numbered feedback texts. Drawn with Pillow (no matplotlib in the runtime).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from engine_format.vocab import ACTION_TOKENS, FEEDBACK
from runtime.render.canvas import (
    ACTION_COLOURS,
    RGB,
    SKIP_COLOUR,
    SPEECH_COLOUR,
    WARN_COLOUR,
    RenderError,
    fit,
    font,
    text_width,
)
from runtime.render.record import RunRecord
from runtime.stats import STAGES
from runtime.terminal import format_time, printable

Scale = Callable[[float], float]  # stream seconds -> x pixel
Font = ImageFont.FreeTypeFont
BG: RGB = (255, 255, 255)
INK: RGB = (30, 30, 35)
GRID: RGB = (225, 227, 232)
SOFT: RGB = (110, 115, 125)
#: Stage colours (pipeline order), then the feedback generation.
STAGE_COLOURS: dict[str, RGB] = {
    "frame_decode": (140, 86, 75),
    "preprocess": (148, 103, 189),
    "image_encoder": (31, 119, 180),
    "frame_selection": (23, 190, 207),
    "video_encoder": (44, 160, 44),
    "decoder_append": (214, 39, 40),
    "action_decision": (127, 127, 127),
    "feedback": (255, 127, 14),
}
GATE_LABELS = {"interval": "interval", "low_confidence": "low conf", "correct_disabled": "no <correct>"}
MAX_TEXTS = 12
LEFT, RIGHT = 150, 40


def _nice_step(span: float, target: int = 12) -> float:
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def render_timeline(record: RunRecord, path: str | Path, width: int | None = None) -> Path:
    """Draws the timeline of ``record`` to ``path`` (PNG); returns the path.

    Args:
        record: The run's record.
        path: Output file.
        width: Picture width; default grows with the run (1400-2400 px).

    Raises:
        RenderError: If the file cannot be written.
    """
    info = record.info
    t_max = max(record.last_t, 1.0)
    W = width or int(min(2400, max(1400, LEFT + RIGHT + 70 * t_max)))
    rule = info.policy != "model"
    rows = [("rule", 46) if rule else ("model", 150), ("decision", 66), ("feedback", 70), ("latency", 230)]
    texts = [f for f in record.feedbacks if f.end_t is not None]
    shown_texts = texts[:MAX_TEXTS]
    header_h = 118 if info.random_weights else 84
    list_h = 40 + 26 * (len(shown_texts) + (1 if len(texts) > MAX_TEXTS else 0)) if texts else 30
    H = header_h + sum(h + 16 for _, h in rows) + 22 + 60 + list_h
    image = Image.new("RGB", (W, H), BG)
    d = ImageDraw.Draw(image)
    f_title, f_text, f_small, f_tiny = font(26), font(17), font(15), font(13)
    x0, x1 = LEFT, W - RIGHT
    sx = (x1 - x0) / t_max

    def X(t: float) -> float:
        return x0 + max(0.0, min(t, t_max)) * sx

    # Header.
    d.text((20, 14), fit(d, f"Coaching timeline · {info.source}", f_title, W - 40), font=f_title, fill=INK)
    shown = "as seen live (paced)" if record.timing == "live" else "at each window's end (unpaced run)"
    skipped = len(record.skips)
    sub = (f"{info.backend} · policy {info.policy} · window {info.window_s:g} s, stride {info.stride_s:g} s · "
           f"{len(record.windows)} windows decided, {skipped} skipped, {len(texts)} feedbacks · events shown {shown}")
    d.text((20, 52), fit(d, sub, f_text, W - 40), font=f_text, fill=SOFT)
    if info.random_weights:
        warn = "RANDOM WEIGHTS: a synthetic checkpoint; the actions and the feedback text are meaningless"
        d.rectangle((20, 80, 20 + text_width(d, warn, f_text) + 24, 108), fill=WARN_COLOUR)
        d.text((32, 84), warn, font=f_text, fill=(255, 255, 255))

    y = header_h
    step = _nice_step(t_max)
    ticks = [i * step for i in range(int(t_max / step) + 1)]
    axis_bottom = y + sum(h + 16 for _, h in rows)
    for t in ticks:  # vertical grid through every row
        d.line((X(t), y, X(t), axis_bottom), fill=GRID)

    for name, h in rows:
        top, bottom = y, y + h
        d.rectangle((x0, top, x1, bottom), outline=GRID)
        label = {"rule": f"rule: {info.policy}", "model": "p(action)", "decision": "decision",
                 "feedback": "feedback", "latency": "latency"}[name]
        d.text((16, top + 4), label, font=f_text, fill=INK)
        if name == "model":
            d.text((16, top + 26), "model policy", font=f_tiny, fill=SOFT)
            _model_row(d, record, X, top, bottom, f_tiny)
        elif name == "rule":
            _cells(d, record, X, top + 8, bottom - 8, raw=True, small=f_tiny)
        elif name == "decision":
            _cells(d, record, X, top + 8, bottom - 24, raw=False, small=f_tiny)
            for t, kind, reason in record.context:
                d.polygon([(X(t) - 4, bottom), (X(t) + 4, bottom), (X(t), bottom - 7)],
                          fill=SOFT if kind == "cleared" else WARN_COLOUR)
            d.text((16, top + 26), "after the gate", font=f_tiny, fill=SOFT)
        elif name == "feedback":
            _feedback_row(d, record, X, top, bottom, f_small, f_tiny)
        else:
            _latency_row(d, record, X, top, bottom, f_tiny, sx)
        y = bottom + 16

    # Time axis.
    for t in ticks:
        d.line((X(t), y - 16, X(t), y - 10), fill=INK)
        label = format_time(t)
        d.text((X(t) - text_width(d, label, f_small) / 2, y - 8), label, font=f_small, fill=INK)
    d.text((16, y - 8), "stream time", font=f_small, fill=SOFT)
    y += 22

    # Legends: what the colours mean, then the latency stages.
    entries: list[tuple[str, RGB, str]] = [(a, ACTION_COLOURS[a], "box") for a in ACTION_TOKENS]
    entries += [("skipped window", SKIP_COLOUR, "box"), ("spoken audio", SPEECH_COLOUR, "bar"),
                ("context cleared", SOFT, "tri"), ("window evicted", WARN_COLOUR, "tri")]
    for line in (entries, [(f"{s} (latency)" if s == "feedback" else s, c, "box") for s, c in STAGE_COLOURS.items()]):
        lx = x0
        for label, colour, shape in line:
            if shape == "box":
                d.rectangle((lx, y + 4, lx + 14, y + 18), fill=colour)
            elif shape == "bar":
                d.rectangle((lx, y + 8, lx + 14, y + 14), fill=colour)
            else:
                d.polygon([(lx, y + 18), (lx + 14, y + 18), (lx + 7, y + 5)], fill=colour)
            d.text((lx + 20, y + 2), label, font=f_small, fill=INK)
            lx += 36 + text_width(d, label, f_small)
        y += 26
    y += 8

    # The feedback texts.
    if not texts:
        d.text((20, y), "no feedback in this run", font=f_text, fill=SOFT)
    else:
        d.text((20, y), "feedback texts", font=f_text, fill=INK)
        y += 28
        spoken = {s.window_index: s for s in record.speech}
        for fb in shown_texts:
            s = spoken.get(fb.window_index)
            note = " (repeat, not spoken)" if fb.suppressed else ""
            if s is not None and s.status == "spoken" and s.start_t is not None:
                note += f" · spoken at {format_time(s.start_t)}, {s.latency_ms or 0:.0f} ms after the text"
            elif s is not None:
                note += f" · speech: {s.status}"
            line = f"{fb.number}  [{format_time(fb.start_t)}] window {fb.window_index}, {fb.n_tokens} tokens{note}: "
            d.text((20, y), line, font=f_small, fill=SOFT)
            lw = text_width(d, line, f_small)
            d.text((20 + lw, y), fit(d, f'"{printable(fb.text)}"', f_small, W - 40 - lw), font=f_small,
                   fill=INK if not fb.suppressed else SOFT)
            y += 26
        if len(texts) > MAX_TEXTS:
            d.text((20, y), f"… {len(texts) - MAX_TEXTS} more in events.jsonl", font=f_small, fill=SOFT)
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out)
    except OSError as exc:
        raise RenderError(f"cannot write the timeline {out}: {exc.strerror or exc}") from exc
    return out


def _cells(d: ImageDraw.ImageDraw, record: RunRecord, X: Scale, top: float, bottom: float, raw: bool,
           small: Font) -> None:
    """One cell per window from where the previous one ended (windows overlap), coloured by action."""
    cells = [(w.t_start, w.t_end, w.raw_action if raw else w.action, None if raw else w.gate_reason, w.index)
             for w in record.windows]
    cells += [(t_end - record.info.window_s, t_end, "skip", reason, index) for index, reason, t_end in record.skips]
    cells.sort(key=lambda c: c[1])
    prev = 0.0
    for t0, t1, act, reason, index in cells:
        a, prev = max(t0, prev), max(prev, t1)
        colour = ACTION_COLOURS.get(act, SKIP_COLOUR)
        d.rectangle((X(a) + 1, top, X(t1) - 1, bottom), fill=colour)
        if reason:
            label = GATE_LABELS.get(reason, reason)
            width = X(t1) - X(a) - 4
            d.text((X(a) + 3, bottom + 3), fit(d, label, small, max(8, int(width + 30))), font=small, fill=SOFT)
            if act != "skip":  # the rule wanted something else: a stripe in its colour
                wanted = next((w.raw_action for w in record.windows if w.index == index), act)
                d.rectangle((X(a) + 1, top, X(t1) - 1, top + 5), fill=ACTION_COLOURS.get(wanted, SKIP_COLOUR))


def _model_row(d: ImageDraw.ImageDraw, record: RunRecord, X: Scale, top: float, bottom: float, small: Font) -> None:
    """The three action probabilities per window and the gate's threshold (dashed)."""
    def Y(p: float) -> float:
        return bottom - 6 - p * (bottom - top - 12)

    for p in (0.0, 0.5, 1.0):
        d.text((X(0) - 6 - text_width(d, f"{p:.1f}", small), Y(p) - 7), f"{p:.1f}", font=small, fill=SOFT)
        d.line((X(0), Y(p), X(1e9), Y(p)), fill=(240, 240, 244))
    thr = record.info.confidence_threshold
    for xs in range(int(X(0)), int(X(1e9)), 12):  # dashed threshold
        d.line((xs, Y(thr), xs + 6, Y(thr)), fill=SOFT)
    for i, act in enumerate(ACTION_TOKENS):
        points = [(X(w.t_end), Y(w.probs[i])) for w in record.windows if w.probs]
        if len(points) > 1:
            d.line(points, fill=ACTION_COLOURS[act], width=3)
        for px, py in points:
            d.ellipse((px - 3, py - 3, px + 3, py + 3), fill=ACTION_COLOURS[act])
    if not any(w.probs for w in record.windows):
        d.text((X(0) + 8, top + 8), "the backend reported no action logits", font=small, fill=SOFT)


def _feedback_row(d: ImageDraw.ImageDraw, record: RunRecord, X: Scale, top: float, bottom: float, f_small: Font,
                  f_tiny: Font) -> None:
    """Feedback text spans (numbered; repeats grey) and, below them, the spoken audio."""
    mid = top + (bottom - top) * 0.45
    for fb in record.feedbacks:
        end = fb.end_t if fb.end_t is not None else fb.start_t
        colour = ACTION_COLOURS[FEEDBACK] if not fb.suppressed else SKIP_COLOUR
        a, b = X(fb.start_t), max(X(end), X(fb.start_t) + 4)
        d.rectangle((a, top + 8, b, mid), fill=colour)
        d.text((a, mid + 2), str(fb.number), font=f_small, fill=INK)
    for s in record.speech:
        if s.status == "spoken" and s.start_t is not None:
            d.rectangle((X(s.start_t), bottom - 14, max(X(s.start_t + s.duration_s), X(s.start_t) + 3), bottom - 6),
                        fill=SPEECH_COLOUR)
    d.text((16, top + 26), "text, then audio", font=f_tiny, fill=SOFT)


def _latency_row(d: ImageDraw.ImageDraw, record: RunRecord, X: Scale, top: float, bottom: float, small: Font,
                 sx: float) -> None:
    """Per-window latency stacked by stage, the feedback generation on top, with a millisecond axis."""
    stacks = []
    for w in record.windows:
        parts = [(s, w.latency_ms.get(s, 0.0)) for s in STAGES if s != "total"] + [("feedback", w.feedback_ms)]
        stacks.append((w, parts))
    peak = max((sum(v for _, v in parts) for _, parts in stacks), default=0.0)
    if peak <= 0:
        d.text((X(0) + 8, top + 8), "no window decided", font=small, fill=SOFT)
        return
    step = _nice_step(peak, 4)
    scale = (bottom - top - 10) / (math.ceil(peak / step) * step)
    for i in range(int(math.ceil(peak / step)) + 1):
        yv = bottom - i * step * scale
        d.line((X(0), yv, X(1e9), yv), fill=(240, 240, 244))
        d.text((X(0) - 8 - text_width(d, f"{i * step:g}", small), yv - 7), f"{i * step:g}", font=small, fill=SOFT)
    d.text((16, top + 26), "ms per window", font=small, fill=SOFT)
    half = max(2.0, min(record.info.stride_s * sx * 0.35, 40.0))
    for w, parts in stacks:
        cx, yv = X(w.t_end), float(bottom)
        for stage, ms in parts:
            if ms <= 0:
                continue
            d.rectangle((cx - half, yv - ms * scale, cx + half, yv), fill=STAGE_COLOURS[stage])
            yv -= ms * scale
