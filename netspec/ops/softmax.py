"""softmax with the multinomial logistic loss (§3.5), averaged over the batch:

p = softmax(z) computed as exp(z − max z) / Σ exp(z − max z);  L = −(1/N) Σ_n log p[n, y_n]
∂L/∂z = (p − onehot(y)) / N.
It gathers every part of its input on one GPU (GPU 0 unless pinned with `gpu`).
"""
from __future__ import annotations

import math

from .base import Op


class Softmax(Op):
    type = "softmax"
    doc = "softmax and the multinomial logistic loss; the last layer"
    follows_input_parts = False

    def output_shape(self, a, in_shape):
        return (math.prod(in_shape),)


OP = Softmax()
