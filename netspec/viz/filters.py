"""A layer's kernels as an image grid, one section per GPU, like the paper's Figure 3.

Kernels that read 3 channels (the first layer's, on RGB input) are shown as RGB tiles. Deeper
kernels read many channels, so each of their input channels is a grey tile: one row per
kernel, one column per input channel, up to `max_kernels` rows and `max_channels` columns per
GPU. Each kernel is scaled to its own min..max over all its channels, so the tiles show
the kernel's pattern and the relative weight of its channels, not its magnitude.

Tiles are drawn large, as cuda-convnet's shownet scales each filter up: a weight is a square
of whole pixels, about `RGB_TILE` pixels a side for an RGB kernel (a 5x5 kernel's weight 20
pixels, an 11x11's 9) and `GREY_TILE` for a grey channel tile, never under `MIN_WEIGHT` pixels
a weight.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from .errors import VizError
from .fonts import line_metrics, text_width
from .layout import Bitmap, Layout, Rect, Text
from .render import save_layout

MARGIN = 24
TITLE, SUBTITLE, SECTION = 18, 12, 13
GAP = 3                      # pixels between tiles
SECTION_FILL = "#e9e9e9"
RGB_TILE = 96                # a tile's side in pixels, about (module doc)
GREY_TILE = 64
MIN_WEIGHT = 6               # pixels a weight, at least


def normalise_filters(weights: np.ndarray) -> np.ndarray:
    """Each kernel (the first axis) scaled to [0, 1] over all its values; flat ones are 0.5."""
    w = np.asarray(weights, dtype=np.float64)
    flat = w.reshape(len(w), -1)
    lo = flat.min(axis=1, keepdims=True) if flat.size else np.zeros((len(w), 1))
    hi = flat.max(axis=1, keepdims=True) if flat.size else np.zeros((len(w), 1))
    span = hi - lo
    out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1), 0.5)
    return out.reshape(w.shape)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def filters_layout(weights, parts: Sequence[tuple[int, int, int]] | None = None,
                   title: str = "", max_kernels: int = 16, max_channels: int = 16,
                   tile: int | None = None) -> Layout:
    """Lay out conv kernels in sections per GPU.

    weights: one (out, in, kh, kw) array, or one array per part where the parts read different
    numbers of input channels (`<layer>.part<i>.weight`). parts: (gpu, start, stop) ranges of
    output channels, as the IR's parts hold them; None shows all kernels as one section.
    tile: a tile's side in pixels (default: about RGB_TILE, or GREY_TILE for kernels of
    other than 3 channels; a whole multiple of the kernel size, so that every weight is a
    square of pixels).
    """
    if isinstance(weights, (list, tuple)):
        per_part = [np.asarray(w) for w in weights]
        if parts is None or len(parts) != len(per_part):
            raise VizError("per-part kernels need one (gpu, start, stop) range per part")
        w = None
    else:
        w = np.asarray(weights)
        per_part = None
    first = per_part[0] if per_part else w
    if any(a.ndim != 4 for a in (per_part or [w])):
        raise VizError(f"kernels must be (out, in, kh, kw); got shape {tuple(first.shape)}")
    n_out = sum(len(a) for a in per_part) if per_part else len(w)
    n_in_max = max(a.shape[1] for a in (per_part or [w]))
    _, _, kh, kw = first.shape
    if n_out == 0:
        raise VizError("the layer has no kernels to show")
    parts = list(parts) if parts is not None else [(0, 0, n_out)]
    for g, a, b in parts:
        if not 0 <= a < b <= n_out:
            raise VizError(f"GPU {g}: kernel range {a}..{b} is outside the layer's {n_out} "
                           f"kernels")
    if per_part:
        for (g, a, b), arr in zip(parts, per_part):
            if len(arr) != b - a:
                raise VizError(f"GPU {g}: {len(arr)} kernels for the range {a}..{b}")
        sections_w = [normalise_filters(arr) for arr in per_part]
    else:
        norm_all = normalise_filters(w)
        sections_w = [norm_all[a:b] for _, a, b in parts]
    rgb = n_in_max == 3 and all(s.shape[1] == 3 for s in sections_w)
    if tile:
        scale = max(1, tile // max(kh, kw))
    else:
        scale = max(MIN_WEIGHT, round((RGB_TILE if rgb else GREY_TILE) / max(kh, kw)))
    tw, th = kw * scale, kh * scale
    n_in = n_in_max

    # grid per section: RGB kernels wrap in rows like Figure 3; grey ones are kernel x channel
    if rgb:
        cols = _grid_columns(max(b - a for _, a, b in parts))
    else:
        cols = min(n_in, max_channels)
    sections = []
    for g, a, b in parts:
        shown = (b - a) if rgb else min(b - a, max_kernels)
        rows = math.ceil(shown / cols) if rgb else shown
        sections.append((g, a, b, shown, rows))

    t_asc, t_desc = line_metrics(TITLE, True)
    s_asc, s_desc = line_metrics(SUBTITLE)
    h_asc, h_desc = line_metrics(SECTION, True)
    grid_w = cols * (tw + GAP) + GAP
    heads = [_section_head(g, a, b, shown, n_in, cols, rgb) for g, a, b, shown, _ in sections]
    what = (f"{n_out} kernels {kh}×{kw}×{n_in}" + ("" if rgb else ": one row per kernel, one "
                                                   "grey tile per input channel")
            + "; each kernel scaled to its own min..max")
    width = math.ceil(max(grid_w + 2 * MARGIN, 640, text_width(title, TITLE, True) + 2 * MARGIN,
                          text_width(what, SUBTITLE) + 2 * MARGIN,
                          *(text_width(h, SECTION, True) + 2 * MARGIN for h in heads)))
    layout = Layout(width, 0, title=title or "kernels")
    y = MARGIN + t_asc
    if title:
        layout.add("title", Text(MARGIN, y, title, TITLE, "#111111", bold=True))
        y += t_desc + 6 + s_asc
    layout.add("subtitle", Text(MARGIN, y, what, SUBTITLE, "#444444"))
    y += s_desc + 14
    x0 = MARGIN    # under the section titles
    for (g, a, b, shown, rows), head, norm in zip(sections, heads, sections_w):
        y += h_asc
        layout.add("section-title", Text(MARGIN, y, head, SECTION, "#222222", bold=True),
                   gpu=g)
        y += h_desc + 6
        grid_h = rows * (th + GAP) + GAP
        layout.add("section", Rect(x0, y, grid_w, grid_h, SECTION_FILL), id=f"gpu{g}", gpu=g,
                   start=a, stop=b)
        for i in range(shown):
            k = a + i
            if rgb:
                r, c = divmod(i, cols)
                pixels = _to_uint8(norm[i].transpose(1, 2, 0))
                layout.add("filter", Bitmap(x0 + GAP + c * (tw + GAP), y + GAP + r * (th + GAP),
                                            tw, th, pixels), kernel=k, gpu=g)
            else:
                for ch in range(min(cols, norm.shape[1])):
                    grey = _to_uint8(norm[i, ch])
                    pixels = np.repeat(grey[:, :, None], 3, axis=2)
                    layout.add("filter", Bitmap(x0 + GAP + ch * (tw + GAP),
                                                y + GAP + i * (th + GAP), tw, th, pixels),
                               kernel=k, channel=ch, gpu=g)
        y += grid_h + 18
    layout.height = math.ceil(y - 18 + MARGIN)
    return layout


def _grid_columns(n: int) -> int:
    """Columns for n tiles: a wide grid (3 to 8 times as wide as tall, in tiles) whose last row
    is as full as possible; Figure 3's 48 kernels per GPU make 3 rows of 16."""
    lo, hi = math.ceil(math.sqrt(n * 3)), math.floor(math.sqrt(n * 8))
    if n <= 4 or lo > hi:
        return max(1, min(n, lo))
    return min(range(lo, hi + 1), key=lambda c: (-n % c, -c))


def _section_head(gpu: int, a: int, b: int, shown: int, n_in: int, cols: int,
                  rgb: bool) -> str:
    head = f"GPU {gpu}: kernels {a}–{b - 1}"
    if not rgb and (shown < b - a or cols < n_in):
        head += f" (showing {shown} of {b - a} kernels, input channels 0–{cols - 1} of {n_in})"
    return head


def draw_filters(weights, path: str | os.PathLike,
                 parts: Sequence[tuple[int, int, int]] | None = None, title: str = "",
                 width: int | None = None, **options) -> Layout:
    """Draw kernels (out, in, kh, kw) to `path` (.png or .svg); returns the layout drawn, whose
    `filter` elements give each kernel's tile box."""
    layout = filters_layout(weights, parts, title, **options)
    save_layout(layout, path, width)
    return layout
