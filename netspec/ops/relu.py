"""relu: y = max(0, x), elementwise. Conv and fc layers also take `relu` as a fused flag."""
from __future__ import annotations

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import Op


def relu_mask_grad(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dL/dx of y = max(0, x) from the output: dy where y > 0, else 0 (0 at x = 0, as in
    PyTorch)."""
    return np.where(y > 0, dy, dy.dtype.type(0))


class ReLU(Op):
    type = "relu"
    doc = "rectified linear unit, max(0, x)"
    colour, label = "#d8cf95", "ReLU"

    def describe(self, a):
        return "ReLU"

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        y = np.maximum(x, x.dtype.type(0))
        return y, y

    def backward(self, a, dy, cache, *, input_grad=True):
        return (relu_mask_grad(dy, cache) if input_grad else None), ()


    def onnx_node(self, a):
        return "Relu", {}

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch.nn.functional as F
        return F.relu


OP = ReLU()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# (Conv and fc fuse ReLU into their own kernels; these serve a standalone relu layer.)

RELU_FWD = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i < ${N})
        y[i] = $fmax(x[i], 0.0f);
}
"""

RELU_BWD = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i < ${N})
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}
"""


def forward_kernels(c):
    n = c.out_elements
    gs, ls = elementwise_launch(n)
    return [Call(Kernel(f"{c.prefix}_fwd", RELU_FWD, params("in x", "out y"), dict(N=n), gs, ls,
                        doc=f"y = max(x, 0); launch: one work-item per element ({n})",
                        flops=n, layer=c.layer.name), ("x", "y"))]


def backward_kernels(c):
    if not c.input_grad:
        return []
    n = c.out_elements
    gs, ls = elementwise_launch(n)
    return [Call(Kernel(f"{c.prefix}_bwd", RELU_BWD, params("in dy", "in y", "out dx"),
                        dict(N=n), gs, ls, flops=n, layer=c.layer.name,
                        doc=f"dx = dy * [y > 0]; launch: one work-item per element ({n})"),
                 ("dy", "y", "dx"))]
