"""Nearest training images in feature space, like the right of the paper's Figure 4: each row
is a validation image followed by the training images whose last-hidden-layer features are
closest to its own in Euclidean distance."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from .errors import VizError
from .fonts import fit_text, line_metrics, text_width
from .layout import Bitmap, Layout, Polyline, Text
from .render import save_layout

MARGIN = 24
THUMB = 112
OTHER_CLASS = "#c62828"   # a neighbour's name when its class isn't the query's
GAP = 10
SEPARATOR = 26        # between the query column and its neighbours
CHUNK_ELEMENTS = 1 << 24   # train features per block: bounds the float64 distance work


def nearest_neighbours(query_feats: np.ndarray, train_feats: np.ndarray, k: int,
                       chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k training rows nearest to each query row in Euclidean distance.

    Returns (indices (Q, k) int64, distances (Q, k)), nearest first; equal distances keep the
    lower index first. ‖q − t‖² = ‖q‖² − 2 q·t + ‖t‖², in float64, over blocks of `chunk`
    training rows (default: about 16M values per block) merged into a running best k, so a
    large training set never needs a Q × T × D array.
    """
    q = np.asarray(query_feats, dtype=np.float64)
    t = np.asarray(train_feats)
    if q.ndim != 2 or t.ndim != 2 or q.shape[1] != t.shape[1]:
        raise VizError(f"features must be (Q, D) and (T, D) with the same D; got "
                       f"{tuple(q.shape)} and {tuple(t.shape)}")
    if k < 1:
        raise VizError(f"k must be at least 1, not {k}")
    n_train = len(t)
    if n_train == 0:
        raise VizError("no training features to search")
    k = min(k, n_train)
    chunk = chunk or max(1, CHUNK_ELEMENTS // max(1, t.shape[1]))
    qq = np.einsum("ij,ij->i", q, q)[:, None]
    best_d = np.empty((len(q), 0))
    best_i = np.empty((len(q), 0), dtype=np.int64)
    for start in range(0, n_train, chunk):
        block = np.asarray(t[start:start + chunk], dtype=np.float64)
        d2 = qq - 2.0 * (q @ block.T) + np.einsum("ij,ij->i", block, block)[None, :]
        np.maximum(d2, 0.0, out=d2)
        idx = np.broadcast_to(np.arange(start, start + len(block)), d2.shape)
        # the running best (lower indices) comes first, so a stable sort keeps index order
        cand_d = np.concatenate([best_d, d2], axis=1)
        cand_i = np.concatenate([best_i, idx], axis=1)
        order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(cand_d, order, axis=1)
        best_i = np.take_along_axis(cand_i, order, axis=1)
    return best_i, np.sqrt(best_d)


def _check_images(images: np.ndarray, what: str, ndim: int) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != ndim or images.shape[-1] != 3 or images.dtype != np.uint8:
        shape = "(Q, H, W, 3)" if ndim == 4 else "(Q, k, H, W, 3)"
        raise VizError(f"{what} must be uint8 {shape}; got {images.dtype} {tuple(images.shape)}")
    return images


def neighbours_layout(query_images: np.ndarray, neighbour_images: np.ndarray,
                      distances: np.ndarray | None = None,
                      query_names: Sequence[str] | None = None,
                      neighbour_names: Sequence[Sequence[str]] | None = None,
                      title: str = "") -> Layout:
    queries = _check_images(query_images, "query images", 4)
    found = _check_images(neighbour_images, "neighbour images", 5)
    n_q, k = found.shape[:2]
    if len(queries) != n_q or n_q == 0:
        raise VizError(f"{len(queries)} query images but neighbours for {n_q}")
    if distances is not None and np.shape(distances) != (n_q, k):
        raise VizError(f"distances must be ({n_q}, {k}); got {np.shape(distances)}")
    t_asc, t_desc = line_metrics(18, True)
    h_asc, h_desc = line_metrics(12, True)
    c_asc, c_desc = line_metrics(11)
    captions = int(query_names is not None or neighbour_names is not None) + \
        int(distances is not None)
    cell_h = THUMB + (4 + captions * (c_asc + c_desc + 2) if captions else 0)
    grid_w = THUMB + SEPARATOR + k * THUMB + (k - 1) * GAP
    header = "nearest training images in the last hidden layer's features"
    marked = query_names is not None and neighbour_names is not None
    if marked:
        header += " (red name: not the query's class)"
    width = math.ceil(max(grid_w + 2 * MARGIN, text_width(title, 18, True) + 2 * MARGIN,
                          THUMB + SEPARATOR + text_width(header, 12, True) + 2 * MARGIN))
    top = MARGIN + (t_asc + t_desc + 14 if title else 0)
    head_base = top + h_asc
    grid_top = head_base + h_desc + 8
    height = grid_top + n_q * cell_h + (n_q - 1) * GAP + MARGIN
    layout = Layout(width, math.ceil(height), title=title or "nearest neighbours")
    if title:
        layout.add("title", Text(MARGIN, MARGIN + t_asc, title, 18, "#111111", bold=True))
    x0 = (width - grid_w) / 2
    nx = x0 + THUMB + SEPARATOR
    layout.add("header", Text(x0 + THUMB / 2, head_base, "query", 12, "#111111", "middle", True),
               Text(nx, head_base, header, 12, "#111111", bold=True))
    sep_x = x0 + THUMB + SEPARATOR / 2
    layout.add("separator", Polyline(((sep_x, grid_top), (sep_x, height - MARGIN)), "#999999",
                                     1.0))

    def thumb(img, x, y, cls, caption_lines, name_colour="#333333", **data):
        h, w = img.shape[:2]
        s = THUMB / max(h, w)
        shapes = [Bitmap(x + (THUMB - w * s) / 2, y + (THUMB - h * s) / 2, w * s, h * s, img,
                         pixelated=False)]
        cy = y + THUMB + 4
        for i, line in enumerate(caption_lines):
            cy += c_asc
            shapes.append(Text(x + THUMB / 2, cy, fit_text(line, 11, THUMB), 11,
                               name_colour if i == 0 else "#333333", "middle"))
            cy += c_desc + 2
        layout.add(cls, *shapes, **data)

    for r in range(n_q):
        y = grid_top + r * (cell_h + GAP)
        lines = [str(query_names[r])] if query_names is not None else \
            ([""] if neighbour_names is not None else [])
        thumb(queries[r], x0, y, "query", lines, row=r)
        for j in range(k):
            lines = []
            if query_names is not None or neighbour_names is not None:
                lines.append(str(neighbour_names[r][j]) if neighbour_names is not None else "")
            if distances is not None:
                lines.append(f"d = {float(distances[r][j]):.3g}")
            other = marked and str(neighbour_names[r][j]) != str(query_names[r])
            thumb(found[r, j], nx + j * (THUMB + GAP), y, "neighbour", lines,
                  OTHER_CLASS if other else "#333333", row=r, rank=j,
                  other_class=int(bool(other)))
    return layout


def draw_neighbours(query_images: np.ndarray, neighbour_images: np.ndarray,
                    path: str | os.PathLike, distances: np.ndarray | None = None,
                    query_names: Sequence[str] | None = None,
                    neighbour_names: Sequence[Sequence[str]] | None = None, title: str = "",
                    width: int | None = None) -> Layout:
    """Draw each query image (Q, H, W, 3) followed by its neighbours (Q, k, H, W, 3), with
    optional class names and distances under them, to `path` (.png or .svg)."""
    layout = neighbours_layout(query_images, neighbour_images, distances, query_names,
                               neighbour_names, title)
    save_layout(layout, path, width)
    return layout
