"""add: the elementwise sum of two or more inputs of one shape (a residual connection:
Caffe's Eltwise SUM, cuda-convnet's eltsum, darknet's [shortcut]), with an optional fused
ReLU (`add NAME from a, b relu`: ResNet's `relu(out + identity)`).

    y = x₁ + x₂ + ... (+ max(0, ·) with relu)

On several GPUs its parts are the first input's; each reads its channels of every input,
wherever they lie (a transfer where an input's part is on another GPU). A part's input is
those k ranges end to end (k = attrs["inputs"], set by the IR), so the reference and the
kernels sum k equal chunks; the backward hands dy (masked by the ReLU) to each.

Shape: (C, H, W) or (C,) from each input, the same out.
"""
from __future__ import annotations

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import AttrDef, Op
from .relu import relu_mask_grad


class Add(Op):
    type = "add"
    doc = "elementwise sum of its inputs (from a, b, ...), a residual connection"
    joins = True
    attrs = {"relu": AttrDef("flag", doc="apply max(0, x) to the sum (fused)")}
    colour, label = "#98df8a", "add"

    def describe(self, a):
        return "+ ReLU" if a.get("relu") else "+"

    def output_shape(self, a, in_shape):
        return (in_shape[0] // a["inputs"], *in_shape[1:])

    def out_channels(self, a, in_shape):
        return in_shape[0] // a["inputs"]

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        k = a["inputs"]
        c = x.shape[1] // k
        y = x[:, :c].copy()
        for j in range(1, k):
            y += x[:, j * c:(j + 1) * c]
        if a.get("relu"):
            np.maximum(y, y.dtype.type(0), out=y)
        return y, y

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        g = relu_mask_grad(dy, cache) if a.get("relu") else dy
        return np.concatenate([g] * a["inputs"], axis=1), ()

    def onnx_node(self, a):
        return "Sum", {}               # the exporter hands it each input whole, and a Relu

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch

        def add(x):
            y = sum(x.chunk(a["inputs"], 1))
            return torch.relu(y) if a.get("relu") else y
        return add


OP = Add()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# The part's input is its channels of input 1, then of input 2, ...: chunk j is the run
# x[j·NOUT .. (j+1)·NOUT) in the (C, N, H, W) layout.

ADD_FWD = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${NOUT})
        return;
    float s = x[i];
    for (int j = 1; j < ${K}; ++j)
        s += x[j * ${NOUT} + i];
    y[i] = ${RELU} ? $fmax(s, 0.0f) : s;
}
"""

ADD_BWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NIN})
        return;
    const int i = e % ${NOUT};
    dx[e] = (${RELU} && !(y[i] > 0.0f)) ? 0.0f : dy[i];
}
"""


def _consts(c) -> dict:
    return dict(NOUT=c.out_elements, NIN=c.in_elements, K=c.attrs["inputs"],
                RELU=int(bool(c.attrs.get("relu"))))


def forward_kernels(c):
    k = _consts(c)
    gs, ls = elementwise_launch(k["NOUT"])
    return [Call(Kernel(f"{c.prefix}_fwd", ADD_FWD, params("in x", "out y"), k, gs, ls,
                        flops=k["NIN"], layer=c.layer.name,
                        doc=f"{c.layer.name} part {c.part.index} add: y = sum of the {k['K']} "
                            f"inputs{' then ReLU' if k['RELU'] else ''}\n"
                            f"launch: one work-item per output ({k['NOUT']})"), ("x", "y"))]


def backward_kernels(c):
    if not c.input_grad:
        return []
    k = _consts(c)
    gs, ls = elementwise_launch(k["NIN"])
    return [Call(Kernel(f"{c.prefix}_bwd", ADD_BWD, params("in dy", "in y", "out dx"), k, gs,
                        ls, layer=c.layer.name,
                        doc=f"{c.layer.name} part {c.part.index} add gradient: every input's "
                            f"dx = dy{' * [y > 0]' if k['RELU'] else ''}\n"
                            f"launch: one work-item per input element ({k['NIN']})"),
                 ("dy", "y", "dx"))]
