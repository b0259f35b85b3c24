"""square: y = x², cuda-convnet's `square` neuron. dy/dx = 2x."""
from __future__ import annotations

from .activation import Activation


class Square(Activation):
    type = "square"
    doc = "x^2"
    label = "square"
    c_forward = "v * v"
    c_grad = "2.0f * v"

    def fn(self, x, a):
        return x * x

    def grad(self, x, y, a):
        return 2 * x

    def onnx_node(self, a):
        return "Mul", {"_same_input": True}

    def torch(self, a, **kw):
        return lambda x: x * x


OP = Square()
