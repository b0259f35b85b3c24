"""Learning curves from a run's evaluations: top-1/top-5 error and the loss (training dashed,
validation solid), and the learning rate on a log scale, each against epochs.

Errors in metrics.jsonl are fractions (0.42 is 42%) and are drawn as percentages; a series
whose values already exceed 1 is taken to be in percent. Each row's learning rate is the one
used to reach that evaluation, so the lr panel steps at the evaluation before a drop.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from .axes import Axis, draw_panel, format_tick, log_ticks, nice_ticks, ytick_label_width
from .errors import VizError
from .fonts import line_metrics
from .layout import Layout, Polyline, Rect, Text
from .render import save_layout

WIDTH = 1200
MARGIN = 24
LEGEND_W = 250
INSET = 8          # data stops short of the frame, so a line on an end tick stays visible

ERROR_SERIES = (   # key, label, colour, dash
    ("train_top1_error", "train top-1", "#1f77b4", (6.0, 4.0)),
    ("val_top1_error", "val top-1", "#1f77b4", None),
    ("train_top5_error", "train top-5", "#e8710a", (6.0, 4.0)),
    ("val_top5_error", "val top-5", "#e8710a", None),
)
LOSS_SERIES = (
    ("train_loss", "train loss", "#2ca02c", (6.0, 4.0)),
    ("val_loss", "val loss", "#2ca02c", None),
)
LR = ("lr", "learning rate", "#8e44ad", None)


def _points(metrics: Sequence[Mapping], key: str) -> list[tuple[float, float]]:
    pts = []
    for m in metrics:
        x, v = m.get("epoch"), m.get(key)
        if x is None or v is None:
            continue
        x, v = float(x), float(v)
        if math.isfinite(x) and math.isfinite(v):
            pts.append((x, v))
    return sorted(pts, key=lambda p: p[0])


def _log_formatter(ticks: list[float]):
    """One notation for a whole log axis: decimals (0.01) when they stay short, else 1e-5."""
    if min(ticks) >= 1e-3 and max(ticks) < 1e4:
        return lambda v: f"{v:g}"
    return lambda v: f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


def curves_layout(metrics: Sequence[Mapping], title: str = "") -> Layout:
    """Lay out the curves of `metrics`, one dict per evaluation (the metrics.jsonl rows)."""
    errors = {k: _points(metrics, k) for k, *_ in ERROR_SERIES}
    if any(max(v for _, v in pts) > 1 for pts in errors.values() if pts):
        percent = {k: pts for k, pts in errors.items()}
    else:
        percent = {k: [(x, 100 * v) for x, v in pts] for k, pts in errors.items()}
    loss = [(k, lab, c, d, _points(metrics, k)) for k, lab, c, d in LOSS_SERIES]
    loss = [entry for entry in loss if entry[4]]
    lr = [(x, v) for x, v in _points(metrics, LR[0]) if v > 0]
    every = [p for pts in (*percent.values(), *(e[4] for e in loss), lr) for p in pts]
    if not every:
        raise VizError("no evaluations with an epoch and errors, loss or lr to plot yet")

    xs = [x for x, _ in every]
    xticks = nice_ticks(min(0.0, min(xs)), max(xs), 8,
                        integer=all(float(x).is_integer() for x in xs))
    panels = []   # (name, label, series [(key, label, colour, dash, points)], yaxis kind)
    err_series = [(k, lab, c, d, percent[k]) for k, lab, c, d in ERROR_SERIES if percent[k]]
    if err_series:
        panels.append(("error", "error (%)", err_series, "linear", 330))
    if loss:
        panels.append(("loss", "loss", loss, "linear", 150))
    if lr:
        panels.append(("lr", "learning rate (log scale)", [(*LR[:4], lr)], "log", 150))

    t_asc, t_desc = line_metrics(18, True)
    tick_asc, tick_desc = line_metrics(11)
    yticks_all = []
    for name, _, series, kind, _ in panels:
        ys = [v for *_, pts in series for _, v in pts]
        if kind == "log":
            yticks_all.append(log_ticks(min(ys), max(ys)))
        else:
            hi = max(ys) * 1.04 if max(ys) > 0 else 1.0    # headroom above the top point
            if name == "error":
                hi = min(hi, max(100.0, max(ys)))
            ticks = nice_ticks(0, hi, 6)
            yticks_all.append(ticks)
    x0 = MARGIN + max(ytick_label_width(t) for t in yticks_all) + 10
    x1 = WIDTH - MARGIN - LEGEND_W
    xaxis = Axis(xticks[0], xticks[-1], x0 + INSET, x1 - INSET)

    layout = Layout(WIDTH, 0, title=title or "learning curves")
    y = MARGIN + t_asc
    layout.add("title", Text(MARGIN, y, title or "learning curves", 18, "#111111", bold=True))
    y += t_desc + 36
    for i, ((name, label, series, kind, height), yticks) in enumerate(zip(panels, yticks_all)):
        box = (x0, y, x1, y + height)
        yaxis = Axis(yticks[0], yticks[-1], box[3] - INSET, box[1] + INSET,
                     log=(kind == "log"))
        last = i == len(panels) - 1
        draw_panel(layout, box, xaxis, yaxis, xticks, yticks, label, name,
                   xlabel="epoch" if last else "",
                   yfmt=_log_formatter(yticks) if kind == "log" else format_tick)
        legend_y = box[1] + 14
        for key, lab, colour, dash, pts in series:
            px = [(xaxis(x), yaxis(v)) for x, v in pts]
            if kind == "log" and len(px) > 1:       # held until the next evaluation
                stepped = [px[0]]
                for (xa, _ya), (xb, yb) in zip(px, px[1:]):
                    stepped += [(xa, yb), (xb, yb)]
                line = stepped
            else:
                line = px
            shapes = []
            if len(line) > 1:
                shapes.append(Polyline(tuple(line), colour, 2.0, dash))
            if len(px) <= 60:
                shapes += [Rect(a - 2.5, b - 2.5, 5, 5, colour) for a, b in px]
            layout.add("series", *shapes, name=key, panel=name)
            final = pts[-1][1]
            value = (f"{final:.1f}%" if name == "error" else
                     f"{final:.3g}" if name == "loss" else _log_formatter(yticks)(final))
            text = f"{lab}: {value}"
            lx = x1 + 20
            layout.add("legend", Polyline(((lx, legend_y - 4), (lx + 30, legend_y - 4)), colour,
                                          2.0, dash),
                       Text(lx + 38, legend_y, text, 12, "#222222"), name=key)
            legend_y += 20
        y = box[3] + 6 + tick_asc + tick_desc + 34
        if last:
            y += line_metrics(12, True)[1] - 34 + 6 + line_metrics(12, True)[0]
    steps = [m.get("step") for m in metrics if m.get("step") is not None]
    if steps:
        note = f"{len(metrics)} evaluations, last at step {max(steps):,}"
        layout.add("note", Text(WIDTH - MARGIN, MARGIN + t_asc, note, 12, "#555555", "end"))
    layout.height = math.ceil(y + MARGIN)
    return layout


def draw_curves(metrics: Sequence[Mapping], path: str | os.PathLike, title: str = "",
                width: int | None = None) -> Layout:
    """Draw the learning curves of `metrics` to `path` (.png or .svg)."""
    layout = curves_layout(metrics, title)
    save_layout(layout, path, width)
    return layout

