"""Fonts for measuring and drawing text.

Layouts measure every label with the same font the PNG renderer draws it with, so the bounding
boxes that layouts check for overlaps are the boxes that end up on the image. The SVG names
the same family first, so a viewer with DejaVu Sans shows the same metrics.
"""
from __future__ import annotations

import functools

from PIL import ImageFont

SVG_FAMILY = "DejaVu Sans, Verdana, Arial, sans-serif"
_FILES = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}

# Pillow anchors: horizontal (l/m/r) + baseline (s); y of a Text is its baseline.
ANCHORS = {"start": "ls", "middle": "ms", "end": "rs"}


@functools.lru_cache(maxsize=64)
def load_font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at `size` pixels when Pillow can find it, else Pillow's built-in font."""
    size = max(1, int(round(size)))
    for name in (_FILES[bold], _FILES[False]):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def text_box(text: str, size: float, bold: bool = False, x: float = 0.0, y: float = 0.0,
             anchor: str = "start") -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of `text` drawn with its baseline at y, aligned at x by `anchor`."""
    font = load_font(size, bold)
    if not text:
        return (x, y, x, y)
    x0, y0, x1, y1 = font.getbbox(text, anchor=ANCHORS[anchor])
    return (x + x0, y + y0, x + x1, y + y1)


def text_width(text: str, size: float, bold: bool = False) -> float:
    x0, _, x1, _ = text_box(text, size, bold)
    return x1 - x0


def line_metrics(size: float, bold: bool = False) -> tuple[float, float]:
    """(ascent, descent) in pixels above and below the baseline, for any text in this font."""
    font = load_font(size, bold)
    _, top, _, bottom = font.getbbox("Ägjy×|", anchor="ls")
    return (-top, bottom)


def fit_text(text: str, size: float, max_width: float, bold: bool = False) -> str:
    """`text`, shortened with an ellipsis until it is at most `max_width` wide."""
    if text_width(text, size, bold) <= max_width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:   # the longest prefix that fits with "…"
        mid = (lo + hi + 1) // 2
        if text_width(text[:mid].rstrip() + "…", size, bold) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…" if lo else ""
