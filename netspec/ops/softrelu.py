"""softrelu: y = log(1 + e^x), cuda-convnet's `softrelu` neuron (PyTorch's softplus), written
max(x, 0) + log(1 + e^−|x|) so that e^x never overflows. dy/dx = 1 / (1 + e^−x)."""
from __future__ import annotations

import numpy as np

from .activation import Activation


class SoftReLU(Activation):
    type = "softrelu"
    doc = "log(1 + exp(x))"
    label = "soft ReLU"
    c_forward = "$fmax(v, 0.0f) + $log(1.0f + $exp(v < 0.0f ? v : -v))"
    c_grad = "1.0f / (1.0f + $exp(-v))"

    def fn(self, x, a):
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))

    def grad(self, x, y, a):
        return 1 / (1 + np.exp(-x))

    def onnx_node(self, a):
        return "Softplus", {}

    def torch(self, a, **kw):
        import torch.nn.functional as F
        return F.softplus


OP = SoftReLU()
