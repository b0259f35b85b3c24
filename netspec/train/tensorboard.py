"""TensorBoard event files for a run, written beside metrics.jsonl (`tensorboard --logdir runs`).

Optional: the writer is tensorboardX (`pip install netspec[tensorboard]`, which also brings
TensorBoard itself to view them). Without it `open_tensorboard` returns None and training is
unchanged.

Per epoch, at the optimizer step count reached (the x axis TensorBoard calls "step"):
    scalars  loss/train, loss/val, top1_error/train, top1_error/val, top5_error/train,
             top5_error/val (fractions, as in metrics.jsonl), lr, images_per_sec
    image    <layer>/filters: the first conv layer's kernels as RGB tiles, one band per GPU
             part, as the paper's Figure 3 shows conv1 (each kernel scaled to its own
             min..max, tiles enlarged 4x by repetition)
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SCALARS = {  # tag -> metrics.jsonl key
    "loss/train": "train_loss", "loss/val": "val_loss",
    "top1_error/train": "train_top1_error", "top1_error/val": "val_top1_error",
    "top5_error/train": "train_top5_error", "top5_error/val": "val_top5_error",
    "lr": "lr", "images_per_sec": "images_per_sec",
}
SCALE = 4                 # each kernel pixel as SCALE×SCALE image pixels
GAP = 2                   # image pixels between tiles, and twice that between GPU bands


def filter_grid(weight: np.ndarray, bands: list[tuple[int, int]]) -> np.ndarray:
    """uint8 (H, W, 3) image of conv kernels (O, C, k, k): one band of rows per (first, end)
    kernel range (a GPU's part), each kernel min..max scaled to 0..255, RGB if C == 3 else
    the mean over its channels in grey."""
    o, c, k, _ = weight.shape
    w = weight.astype(np.float64)
    tiles = w if c == 3 else np.repeat(w.mean(axis=1, keepdims=True), 3, axis=1)
    lo = tiles.reshape(o, -1).min(axis=1)[:, None, None, None]
    hi = tiles.reshape(o, -1).max(axis=1)[:, None, None, None]
    tiles = np.where(hi > lo, (tiles - lo) / np.where(hi > lo, hi - lo, 1), 0.5)
    tiles = np.round(tiles * 255).astype(np.uint8).transpose(0, 2, 3, 1)      # (O, k, k, 3)
    tiles = tiles.repeat(SCALE, axis=1).repeat(SCALE, axis=2)
    t = k * SCALE
    cols = max(1, math.ceil(math.sqrt(max(b - a for a, b in bands) * 2)))
    rows = [math.ceil((b - a) / cols) for a, b in bands]
    height = sum(r * (t + GAP) for r in rows) + GAP * (len(bands) + 1)
    width = cols * (t + GAP) + GAP
    img = np.full((height, width, 3), 255, np.uint8)
    y = GAP
    for (a, b), r in zip(bands, rows):
        for i in range(a, b):
            row, col = divmod(i - a, cols)
            top, left = y + row * (t + GAP), GAP + col * (t + GAP)
            img[top:top + t, left:left + t] = tiles[i]
        y += r * (t + GAP) + GAP
    return img


class TensorBoardLog:
    """A run's event files. `epoch(row, params, graph)` after each epoch; `close()` at the
    end. The event file is opened at the first epoch's end, so a run stopped before then
    leaves none."""

    def __init__(self, run_dir, writer_class):
        self.run_dir, self.writer_class, self.writer = Path(run_dir), writer_class, None

    def epoch(self, row: dict, params: dict, graph) -> None:
        if self.writer is None:
            self.writer = self.writer_class(logdir=str(self.run_dir), flush_secs=30)
        step = int(row["step"])
        for tag, key in SCALARS.items():
            v = row.get(key)
            if v is not None and math.isfinite(v):
                self.writer.add_scalar(tag, float(v), step, walltime=row.get("time"))
        first = next((layer for layer in graph.weighted_layers if layer.type == "conv"), None)
        if first is not None:
            w = _stacked(params, first)
            if w is not None:
                bands = _bands(first)
                self.writer.add_image(f"{first.name}/filters", filter_grid(w, bands), step,
                                      dataformats="HWC", walltime=row.get("time"))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _stacked(params: dict, layer) -> np.ndarray | None:
    w = params.get(f"{layer.name}.weight")
    if w is not None:
        return np.asarray(w)
    parts = [params.get(f"{layer.name}.part{p.index}.weight") for p in layer.parts]
    if any(p is None for p in parts) or len({p.shape[1:] for p in parts}) != 1:
        return None
    return np.concatenate(parts)


def _bands(layer) -> list[tuple[int, int]]:
    """(first, end) kernel range per GPU, in GPU order (a GPU's groups together)."""
    by_gpu: dict[int, list[int]] = {}
    for p in layer.parts:
        by_gpu.setdefault(p.gpu, []).extend([p.start, p.stop])
    return [(min(v), max(v)) for _, v in sorted(by_gpu.items())]


def open_tensorboard(run_dir) -> TensorBoardLog | None:
    """A log writing event files into `run_dir`, or None when tensorboardX isn't installed."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return TensorBoardLog(run_dir, SummaryWriter)
