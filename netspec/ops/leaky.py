"""leaky: y = x for x > 0, slope · x otherwise: darknet's `leaky` activation (slope 0.1,
darknet's constant), PyTorch's leaky_relu. dy/dx = 1 or slope (slope at 0, as PyTorch)."""
from __future__ import annotations

import numpy as np

from .activation import Activation
from .base import AttrDef


class Leaky(Activation):
    type = "leaky"
    doc = "x if x > 0 else slope * x"
    label = "leaky ReLU"
    attrs = {"slope": AttrDef("float", default=0.1, doc="the slope below 0 (darknet: 0.1)")}
    c_forward = "v > 0.0f ? v : ${SLOPE} * v"
    c_grad = "v > 0.0f ? 1.0f : ${SLOPE}"

    def consts(self, a):
        return {"SLOPE": float(a["slope"])}

    def fn(self, x, a):
        return np.where(x > 0, x, x.dtype.type(a["slope"]) * x)

    def grad(self, x, y, a):
        return np.where(x > 0, x.dtype.type(1), x.dtype.type(a["slope"]))

    def onnx_node(self, a):
        return "LeakyRelu", {"alpha": float(a["slope"])}

    def torch(self, a, **kw):
        import torch.nn.functional as F
        return lambda x: F.leaky_relu(x, a["slope"])


OP = Leaky()
