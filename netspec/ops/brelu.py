"""brelu: y = min(max(x, 0), a), cuda-convnet's bounded ReLU `brelu[a]` (a = 6: ReLU6).
dy/dx = 1 for 0 < x < a, else 0 (PyTorch's hardtanh)."""
from __future__ import annotations

import numpy as np

from .activation import Activation
from .base import AttrDef


class BReLU(Activation):
    type = "brelu"
    doc = "min(max(x, 0), a)"
    label = "bounded ReLU"
    attrs = {"a": AttrDef("float", default=6.0, minimum=0.0, doc="the bound (cuda-convnet's a)")}
    c_forward = "v < 0.0f ? 0.0f : (v > ${A} ? ${A} : v)"
    c_grad = "v > 0.0f && v < ${A} ? 1.0f : 0.0f"

    def consts(self, a):
        return {"A": float(a["a"])}

    def fn(self, x, a):
        return np.clip(x, 0, a["a"])

    def grad(self, x, y, a):
        return ((x > 0) & (x < a["a"])).astype(x.dtype)

    def onnx_node(self, a):
        return "Clip", {"_float_inputs": [0.0, float(a["a"])]}

    def torch(self, a, **kw):
        import torch.nn.functional as F
        return lambda x: F.hardtanh(x, 0.0, a["a"])


OP = BReLU()
