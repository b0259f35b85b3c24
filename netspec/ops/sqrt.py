"""sqrt: y = √x, cuda-convnet's `sqrt` neuron, for x ≥ 0 (a negative input gives NaN, as in
cuda-convnet and PyTorch; x = 0 an infinite gradient). dy/dx = 1 / (2y)."""
from __future__ import annotations

import numpy as np

from .activation import Activation


class Sqrt(Activation):
    type = "sqrt"
    doc = "sqrt(x), for x >= 0"
    label = "square root"
    c_forward = "$sqrt(v)"
    c_grad = "0.5f / fy"

    def fn(self, x, a):
        return np.sqrt(x)

    def grad(self, x, y, a):
        return 0.5 / y

    def onnx_node(self, a):
        return "Sqrt", {}

    def torch(self, a, **kw):
        import torch
        return torch.sqrt


OP = Sqrt()
