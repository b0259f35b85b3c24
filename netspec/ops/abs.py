"""abs: y = |x|, cuda-convnet's `abs` neuron. dy/dx = sign(x) (0 at 0, as PyTorch)."""
from __future__ import annotations

import numpy as np

from .activation import Activation


class Abs(Activation):
    type = "abs"
    doc = "|x|"
    label = "abs"
    c_forward = "v < 0.0f ? -v : v"
    c_grad = "v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f)"

    def fn(self, x, a):
        return np.abs(x)

    def grad(self, x, y, a):
        return np.sign(x)

    def onnx_node(self, a):
        return "Abs", {}

    def torch(self, a, **kw):
        import torch
        return torch.abs


OP = Abs()
