"""logistic: y = 1 / (1 + e^−x), cuda-convnet's `logistic` neuron (PyTorch's sigmoid).
dy/dx = y (1 − y)."""
from __future__ import annotations

import numpy as np

from .activation import Activation


class Logistic(Activation):
    type = "logistic"
    doc = "1 / (1 + exp(-x))"
    label = "logistic"
    c_forward = "1.0f / (1.0f + $exp(-v))"
    c_grad = "fy * (1.0f - fy)"
    onnx = ("Sigmoid", {})

    def fn(self, x, a):
        return 1 / (1 + np.exp(-x))

    def grad(self, x, y, a):
        return y * (1 - y)

    def onnx_node(self, a):
        return "Sigmoid", {}

    def torch(self, a, **kw):
        import torch
        return torch.sigmoid


OP = Logistic()
