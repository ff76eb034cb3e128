"""Drawing helpers shared by the live overlay, the annotated video and the timeline: fonts, colours, text.

Text is drawn with FreeType through Pillow. The font is ``output.font`` when set (a TrueType file: e.g. a Noto CJK
font for Chinese feedback), else DejaVu Sans where the system has it (Debian's ``fonts-dejavu-core``, which the
project's set-up installs; Latin, Greek, Cyrillic, Arabic, Hebrew and symbols), else Pillow's bundled font
(``ImageFont.load_default``: Latin letters only). The choice is logged once. Glyphs a font lacks render as boxes (CJK
in DejaVu; random-weight models produce them); the exact text is always in the JSONL.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import ImageDraw, ImageFont

from engine_format.vocab import CORRECT, FEEDBACK, NEXT

logger = logging.getLogger(__name__)

RGB = tuple[int, int, int]

#: Where distributions put DejaVu Sans (Debian/Ubuntu, Fedora, Arch).
DEJAVU_SANS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf"),
    Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),
)
_font_file: list[str | None] = []  # [] = not chosen yet; [None] = Pillow's bundled font


class RenderError(RuntimeError):
    """An output picture or video could not be written; the message names the file."""


#: One colour per action, the same in every picture.
ACTION_COLOURS: dict[str, RGB] = {NEXT: (120, 130, 145), FEEDBACK: (245, 150, 30), CORRECT: (60, 185, 90)}
SKIP_COLOUR: RGB = (70, 70, 80)
WARN_COLOUR: RGB = (230, 50, 50)
SPEECH_COLOUR: RGB = (70, 160, 240)
TEXT: RGB = (245, 245, 245)
MUTED: RGB = (180, 185, 195)


def configure_font(path: str = "") -> str:
    """Chooses the text font (see the module docstring); returns what was chosen.

    Raises:
        RenderError: If ``path`` is set but is not a font FreeType can read.
    """
    font.cache_clear()
    if path:
        try:
            ImageFont.truetype(path, 12)
        except OSError as exc:
            raise RenderError(f"output.font {path!r}: not a readable TrueType/OpenType font ({exc})") from exc
        chosen: str | None = path
    else:
        chosen = next((str(p) for p in DEJAVU_SANS if p.is_file()), None)
    _font_file[:] = [chosen]
    what = chosen or "Pillow's bundled font (Latin only; install fonts-dejavu-core or set output.font)"
    logger.info("text font: %s", what)
    return what


@functools.lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    """The text font at ``size`` pixels.

    Raises:
        RenderError: If this Pillow was built without FreeType (its text could not be sized).
    """
    if not _font_file:
        configure_font()
    path = _font_file[0]
    loaded = ImageFont.truetype(path, max(6, int(size))) if path else ImageFont.load_default(size=max(6, int(size)))
    if not isinstance(loaded, ImageFont.FreeTypeFont):
        raise RenderError("this Pillow build has no FreeType support: install the Pillow wheel from PyPI")
    return loaded


def text_width(draw: ImageDraw.ImageDraw, text: str, fnt: ImageFont.FreeTypeFont) -> int:
    """Width of ``text`` in pixels."""
    return int(draw.textlength(text, font=fnt))


def fit(draw: ImageDraw.ImageDraw, text: str, fnt: ImageFont.FreeTypeFont, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if text_width(draw, text, fnt) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if text_width(draw, text[:mid] + "…", fnt) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def wrap(draw: ImageDraw.ImageDraw, text: str, fnt: ImageFont.FreeTypeFont, width: int, max_lines: int) -> list[str]:
    """``text`` broken into at most ``max_lines`` lines of ``width`` pixels; the last is cut with an ellipsis.

    Long words (or text without spaces, as random weights produce) are broken anywhere.
    """
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if text_width(draw, candidate, fnt) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while text_width(draw, current, fnt) > width and len(current) > 1:
            head = fit(draw, current, fnt, width)[:-1] or current[:1]
            lines.append(head)
            current = current[len(head):]
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [fit(draw, " ".join(lines[max_lines - 1:]), fnt, width)]
    return lines


def darken(image: np.ndarray, box: tuple[int, int, int, int], factor: float = 0.3) -> None:
    """Darkens ``image[y0:y1, x0:x1]`` in place (a translucent band that keeps the frame visible)."""
    x0, y0, x1, y1 = box
    region = image[max(0, y0): y1, max(0, x0): x1]
    region[:] = cv2.convertScaleAbs(region, alpha=factor)  # saturating uint8 scale, several times numpy's speed


def softmax(logits: list[float] | None) -> list[float] | None:
    """Probabilities of the three action logits (``None`` passes through)."""
    if not logits:
        return None
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max())
    return [float(v) for v in e / e.sum()]
