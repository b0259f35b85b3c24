"""relu: y = max(0, x), elementwise. Conv and fc layers also take `relu` as a fused flag."""
from __future__ import annotations

import numpy as np

from .base import Op


def relu_mask_grad(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dL/dx of y = max(0, x) from the output: dy where y > 0, else 0 (0 at x = 0, as in
    PyTorch)."""
    return np.where(y > 0, dy, dy.dtype.type(0))


class ReLU(Op):
    type = "relu"
    doc = "rectified linear unit, max(0, x)"

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        y = np.maximum(x, x.dtype.type(0))
        return y, y

    def backward(self, a, dy, cache, *, input_grad=True):
        return (relu_mask_grad(dy, cache) if input_grad else None), ()


OP = ReLU()
