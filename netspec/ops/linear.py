"""linear: y = a · x + b, cuda-convnet's `linear[a,b]` neuron (a = 1, b = 0: the identity).
dy/dx = a. ONNX: Mul by a, then Add b (the one that is not the identity; Identity when both
are)."""
from __future__ import annotations

import numpy as np

from .activation import Activation
from .base import AttrDef


class Linear(Activation):
    type = "linear"
    doc = "a * x + b"
    label = "linear"
    attrs = {"a": AttrDef("float", default=1.0, doc="the scale (cuda-convnet's a)"),
             "b": AttrDef("float", default=0.0, doc="the offset (cuda-convnet's b)")}
    c_forward = "${A} * v + ${B}"
    c_grad = "${A}"

    def consts(self, a):
        return {"A": float(a["a"]), "B": float(a["b"])}

    def fn(self, x, a):
        return x.dtype.type(a["a"]) * x + x.dtype.type(a["b"])

    def grad(self, x, y, a):
        return np.full_like(x, a["a"])

    def onnx_node(self, a):
        scale, offset = float(a["a"]), float(a["b"])
        if scale == 1.0 and offset == 0.0:
            return "Identity", {}
        if offset == 0.0:
            return "Mul", {"_float_inputs": [scale]}
        add = ("Add", {"_float_inputs": [offset]})
        if scale == 1.0:
            return add
        return "Mul", {"_float_inputs": [scale], "_then": [add]}

    def torch(self, a, **kw):
        return lambda x: a["a"] * x + a["b"]


OP = Linear()
