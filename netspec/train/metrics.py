"""Top-k error and running averages, named as in PyTorch's ImageNet example."""
from __future__ import annotations

import numpy as np


def accuracy(output: np.ndarray, target: np.ndarray, topk=(1, 5)) -> list[float]:
    """Fraction of rows whose target is among the k highest scores, for each k.

    Ties are broken by column order (lower class index first), as argsort does. A row with a
    NaN or an infinity (a diverged network) is wrong for every k: argsort would rank a NaN row
    as if it predicted class 0."""
    n, classes = output.shape
    maxk = min(max(topk), classes)
    top = np.argsort(-output, axis=1, kind="stable")[:, :maxk]
    hit = (top == target[:, None]) & np.isfinite(output).all(axis=1)[:, None]
    return [float(hit[:, :min(k, classes)].any(axis=1).mean()) for k in topk]


class AverageMeter:
    """Running mean of a value weighted by batch size."""

    def __init__(self, name: str, fmt: str = ":.4f"):
        self.name, self.fmt = name, fmt
        self.reset()

    def reset(self) -> None:
        self.val = self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else float("nan")

    def __str__(self) -> str:
        return ("{name} {val" + self.fmt + "} ({avg" + self.fmt + "})").format(
            name=self.name, val=self.val, avg=self.avg)
