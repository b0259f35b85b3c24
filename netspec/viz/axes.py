"""Plot axes: tick choice, linear and log scales, and a panel's frame, grid and tick labels."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .fonts import line_metrics, text_width
from .layout import Layout, Polyline, Rect, Text

TICK = 11
GRID = "#e4e4e4"
FRAME = "#888888"


def nice_ticks(lo: float, hi: float, count: int = 6, integer: bool = False) -> list[float]:
    """About `count` round values (steps of 1, 2, 2.5 or 5 × 10^k) covering [lo, hi];
    whole-number steps of 1, 2 or 5 × 10^k when `integer` (epochs)."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        lo, hi = (lo - 1, hi + 1) if integer else (lo - 0.5, hi + 0.5)
    raw = (hi - lo) / max(1, count - 1)
    if integer:
        raw = max(raw, 1.0)
    mag = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * mag for m in steps if m * mag >= raw - 1e-12)
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    n = round((last - first) / step)
    return [round(first + i * step, 12) for i in range(n + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi] (lo > 0); with 2 and 5 between them when the range is
    under two decades, so that a short range still has several labelled ticks. A single
    value gets a decade either side."""
    a, b = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if b == a:
        a, b = a - 1, b + 1
    if b - a >= 2:
        return [10.0 ** e for e in range(a, b + 1)]
    ticks = []
    for e in range(a, b + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if 10.0 ** a <= v <= 10.0 ** b:
                ticks.append(v)
    return ticks


def format_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        mant, exp = f"{v:.0e}".split("e")
        return f"{mant}e{int(exp)}"
    return f"{v:.6g}"


@dataclass(frozen=True)
class Axis:
    """Maps data values in [lo, hi] to pixels [p0, p1] (p1 < p0 for a y axis)."""

    lo: float
    hi: float
    p0: float
    p1: float
    log: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            v, lo, hi = math.log10(v), math.log10(self.lo), math.log10(self.hi)
        else:
            lo, hi = self.lo, self.hi
        return self.p0 + (v - lo) / (hi - lo) * (self.p1 - self.p0)


def draw_panel(layout: Layout, box: tuple[float, float, float, float], x: Axis, y: Axis,
               xticks: list[float], yticks: list[float], ylabel: str, name: str,
               xlabel: str = "", yfmt=format_tick) -> None:
    """Frame, grid lines, tick labels and axis labels of one panel (box = x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    asc, desc = line_metrics(TICK)
    shapes = [Rect(x0, y0, x1 - x0, y1 - y0, "#ffffff")]
    for t in yticks:
        py = y(t)
        shapes.append(Polyline(((x0, py), (x1, py)), GRID, 1))
        shapes.append(Text(x0 - 6, py + asc / 2 - 1, yfmt(t), TICK, "#444444", "end"))
    for t in xticks:
        px = x(t)
        shapes.append(Polyline(((px, y0), (px, y1)), GRID, 1))
        shapes.append(Polyline(((px, y1), (px, y1 + 4)), FRAME, 1))
        shapes.append(Text(px, y1 + 6 + asc, format_tick(t), TICK, "#444444", "middle"))
    shapes.append(Rect(x0, y0, x1 - x0, y1 - y0, None, FRAME, 1))
    shapes.append(Text(x0, y0 - 8, ylabel, 12, "#222222", bold=True))
    if xlabel:
        shapes.append(Text((x0 + x1) / 2, y1 + 6 + asc + desc + 6 + asc, xlabel, 12, "#222222",
                           "middle", True))
    layout.add("panel", *shapes, name=name)


def ytick_label_width(ticks: list[float], fmt=format_tick) -> float:
    return max((text_width(fmt(t), TICK) for t in ticks), default=0)
