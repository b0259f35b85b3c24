"""A sheet of validation images with the net's five most probable labels, like the left of the
paper's Figure 4: the true label under each image, and one bar per guess, as long as its
probability, red when the guess is the true label."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from .errors import VizError
from .fonts import fit_text, line_metrics, text_width
from .layout import Bitmap, Layout, Rect, Text
from .render import save_layout

MARGIN = 24
CELL_W = 220
IMAGE = 160
BAR_H = 19
GAP_X, GAP_Y = 28, 26
TRUE_FILL = "#e0483e"
GUESS_FILL = "#9cc3e6"
BAR_BACK = "#eeeeee"


def top_k(probs: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of the k largest probabilities per row, largest first (ties: lower index)."""
    probs = np.asarray(probs)
    k = min(k, probs.shape[1])
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def _check(images, probs, labels, class_names) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.asarray(images)
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise VizError(f"images must be uint8 (N, H, W, 3); got {images.dtype} "
                       f"{tuple(images.shape)}")
    n = len(images)
    if probs.ndim != 2 or len(probs) != n:
        raise VizError(f"probs must be (N, K) with N = {n} images; got {tuple(probs.shape)}")
    if labels.shape != (n,):
        raise VizError(f"labels must be (N,) with N = {n} images; got {tuple(labels.shape)}")
    k = probs.shape[1]
    if len(class_names) < k:
        raise VizError(f"{len(class_names)} class names for {k} classes")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise VizError(f"labels must be class indices 0..{k - 1}")
    if n == 0:
        raise VizError("no images to show")
    return images, probs, labels.astype(np.int64)


def predictions_layout(images: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                       class_names: Sequence[str], title: str = "", cols: int = 4,
                       k: int = 5) -> Layout:
    images, probs, labels = _check(images, probs, labels, class_names)
    n = len(images)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    guesses = top_k(probs, k)
    k = guesses.shape[1]
    t_asc, t_desc = line_metrics(18, True)
    l_asc, l_desc = line_metrics(13, True)
    b_asc, _ = line_metrics(11)
    cell_h = IMAGE + 8 + l_asc + l_desc + 6 + k * (BAR_H + 3)
    width = math.ceil(max(2 * MARGIN + cols * CELL_W + (cols - 1) * GAP_X,
                          2 * MARGIN + text_width(title, 18, True)))
    legend = "bars: the top guesses, as long as their probability; red: the true label"
    width = math.ceil(max(width, 2 * MARGIN + text_width(legend, 11)))
    n_asc, n_desc = line_metrics(11)
    legend_base = (MARGIN + t_asc + t_desc + 6 if title else MARGIN) + n_asc
    top = legend_base + n_desc + 12
    layout = Layout(width, math.ceil(top + rows * cell_h + (rows - 1) * GAP_Y + MARGIN),
                    title=title or "predictions")
    if title:
        layout.add("title", Text(MARGIN, MARGIN + t_asc, title, 18, "#111111", bold=True))
    layout.add("legend", Text(MARGIN, legend_base, legend, 11, "#333333"))
    x_start = (width - (cols * CELL_W + (cols - 1) * GAP_X)) / 2
    for i in range(n):
        r, c = divmod(i, cols)
        x = x_start + c * (CELL_W + GAP_X)
        y = top + r * (cell_h + GAP_Y)
        h, w = images[i].shape[:2]
        s = IMAGE / max(h, w)
        iw, ih = w * s, h * s
        truth = int(labels[i])
        rank = [int(g) for g in guesses[i]].index(truth) if truth in guesses[i] else -1
        name = fit_text(str(class_names[truth]), 13, CELL_W, bold=True)
        layout.add("prediction", Bitmap(x + (CELL_W - iw) / 2, y + (IMAGE - ih) / 2, iw,
                                          ih, images[i], pixelated=False),
                   Text(x + CELL_W / 2, y + IMAGE + 8 + l_asc, name, 13, "#111111",
                        "middle", True),
                   index=i, label=truth, rank=rank)
        by = y + IMAGE + 8 + l_asc + l_desc + 6
        for j, g in enumerate(guesses[i]):
            p = float(probs[i, g])
            right = f"{100 * p:.1f}%"
            rw = text_width(right, 11)
            label = fit_text(str(class_names[g]), 11, CELL_W - rw - 16)
            fill = TRUE_FILL if g == truth else GUESS_FILL
            shapes = [Rect(x, by, CELL_W, BAR_H, BAR_BACK)]
            if p > 0:
                shapes.append(Rect(x, by, CELL_W * min(1.0, p), BAR_H, fill))
            base = by + BAR_H / 2 + b_asc / 2 - 1
            shapes += [Text(x + 5, base, label, 11, "#111111"),
                       Text(x + CELL_W - 5, base, right, 11, "#333333", "end")]
            layout.add("bar bar-true" if g == truth else "bar", *shapes, image=i, rank=j,
                       label=int(g), prob=f"{p:.6f}")
            by += BAR_H + 3
    return layout


def draw_predictions(images: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                     class_names: Sequence[str], path: str | os.PathLike, title: str = "",
                     cols: int = 4, width: int | None = None) -> Layout:
    """Draw images (N, H, W, 3) uint8 with their top-5 guesses from probs (N, K) and true
    labels (N,) to `path` (.png or .svg)."""
    layout = predictions_layout(images, probs, labels, class_names, title, cols)
    save_layout(layout, path, width)
    return layout
