"""What the elementwise activation layer types share (logistic, tanh, leaky, abs, softrelu,
brelu, square: one module each, cuda-convnet's neuron types and darknet's leaky), so that each
is its formula, its derivative, its PyTorch and ONNX forms and nothing else.

An activation y = f(x) is one pass over memory forward and one backward,
dx = dy · f'(x, y). The reference evaluates `forward`/`grad` on NumPy arrays; the kernels
evaluate `c_forward`/`c_grad`, C expressions of `v` (x) and `fy` (y) with the dialect's math
tokens ($exp, $log, $fmax) and the attributes as ${A}, ${B}. This module defines no layer
type itself (no OP).
"""
from __future__ import annotations

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import Op

ACT_FWD = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${N})
        return;
    const float v = x[i];
    y[i] = @FWD@;
}
"""

ACT_BWD = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${N})
        return;
    const float v = x[i];
    const float fy = y[i];
    dx[i] = dy[i] * (@GRAD@);
}
"""


class Activation(Op):
    """y = forward(x, a); dy/dx = grad(x, y, a). Subclasses set the type, the formulas (NumPy
    and C), `torch_fn(a)` and `onnx`."""

    c_forward = "v"
    c_grad = "1.0f"
    colour = "#d8cf95"

    def consts(self, a) -> dict:
        """The attributes as the kernels' ${A}, ${B}."""
        return {}

    def fn(self, x, a):
        raise NotImplementedError

    def grad(self, x, y, a):
        raise NotImplementedError

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        y = self.fn(x, a).astype(x.dtype, copy=False)
        return y, (x, y)

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        x, y = cache
        return (dy * self.grad(x, y, a)).astype(dy.dtype, copy=False), ()

    def forward_kernels(self, c):
        n = c.out_elements
        gs, ls = elementwise_launch(n)
        template = ACT_FWD.replace("@FWD@", self.c_forward)
        return [Call(Kernel(f"{c.prefix}_fwd", template, params("in x", "out y"),
                            dict(N=n, **self.consts(c.attrs)), gs, ls, flops=4 * n,
                            layer=c.layer.name,
                            doc=f"{c.layer.name} part {c.part.index} {self.type}: y = "
                                f"{self.doc}\nlaunch: one work-item per element ({n})"),
                     ("x", "y"))]

    def backward_kernels(self, c):
        if not c.input_grad:
            return []
        n = c.out_elements
        gs, ls = elementwise_launch(n)
        template = ACT_BWD.replace("@GRAD@", self.c_grad)
        return [Call(Kernel(f"{c.prefix}_bwd", template, params("in dy", "in x", "in y",
                                                                "out dx"),
                            dict(N=n, **self.consts(c.attrs)), gs, ls, flops=4 * n,
                            layer=c.layer.name,
                            doc=f"{c.layer.name} part {c.part.index} {self.type} gradient: dx "
                                f"= dy * f'(x)\nlaunch: one work-item per element ({n})"),
                     ("dy", "x", "y", "dx"))]
