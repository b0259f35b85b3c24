"""tanh: y = a · tanh(b · x), cuda-convnet's `tanh[a,b]` neuron (a = b = 1: PyTorch's tanh).
dy/dx = a b (1 − (y / a)²). ONNX: Tanh, or Mul, Tanh, Mul when a or b is not 1. The kernels write tanh(z) = 1 − 2 / (e^{2z} + 1) (exact in
float32 to its rounding; e^{2z} overflowing to inf gives 1, as it should)."""
from __future__ import annotations

import numpy as np

from .activation import Activation
from .base import AttrDef


class Tanh(Activation):
    type = "tanh"
    doc = "a * tanh(b * x)"
    label = "tanh"
    attrs = {"a": AttrDef("float", default=1.0, doc="the output scale (cuda-convnet's a)"),
             "b": AttrDef("float", default=1.0, doc="the input scale (cuda-convnet's b)")}
    c_forward = "${A} * (1.0f - 2.0f / ($exp(2.0f * ${B} * v) + 1.0f))"
    c_grad = "${A} * ${B} * (1.0f - (fy / ${A}) * (fy / ${A}))"

    def consts(self, a):
        return {"A": float(a["a"]), "B": float(a["b"])}

    def check(self, a, in_shape, report):
        if a["a"] == 0:
            report("a", "tanh's scale a must not be 0")
            return False
        return True

    def fn(self, x, a):
        return a["a"] * np.tanh(a["b"] * x)

    def grad(self, x, y, a):
        t = y / a["a"]
        return a["a"] * a["b"] * (1 - t * t)

    def onnx_node(self, a):
        if (a["a"], a["b"]) == (1.0, 1.0):
            return "Tanh", {}
        # a · tanh(b · x): Mul, Tanh, Mul
        return "Mul", {"_float_inputs": [float(a["b"])],
                       "_then": [("Tanh", {}), ("Mul", {"_float_inputs": [float(a["a"])]})]}

    def torch(self, a, **kw):
        import torch
        return lambda x: a["a"] * torch.tanh(a["b"] * x)


OP = Tanh()
