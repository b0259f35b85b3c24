"""relu: y = max(0, x), elementwise. Conv and fc layers also take `relu` as a fused flag."""
from __future__ import annotations

from .base import Op


class ReLU(Op):
    type = "relu"
    doc = "rectified linear unit, max(0, x)"


OP = ReLU()
