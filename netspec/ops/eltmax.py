"""max: the elementwise maximum of two or more inputs of one shape (cuda-convnet's eltmax,
Caffe's Eltwise MAX; maxout's unit over inputs).

    y = max(x₁, x₂, ...)        dL/dxⱼ = dL/dy where xⱼ is the maximum, else 0

The gradient goes to one input per element: the first (in `from` order) holding the maximum,
as Caffe's Eltwise MAX and cuda-convnet's eltmax route it; on an exact tie PyTorch's
torch.maximum splits it instead, so comparisons draw inputs without ties.

On several GPUs its parts are the first input's; each reads its channels of every input,
wherever they lie (a transfer where an input's part is on another GPU), end to end as for
`add` (k = attrs["inputs"], set by the IR).

Shape: (C, H, W) or (C,) from each input, the same out.
"""
from __future__ import annotations

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import Op


class EltMax(Op):
    type = "max"
    doc = "elementwise maximum of its inputs (from a, b, ...): cuda-convnet's eltmax"
    joins = True
    attrs = {}
    colour, label = "#c5b0d5", "max"

    def describe(self, a):
        return "max"

    def output_shape(self, a, in_shape):
        return (in_shape[0] // a["inputs"], *in_shape[1:])

    def out_channels(self, a, in_shape):
        return in_shape[0] // a["inputs"]

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        k = a["inputs"]
        chunks = np.stack(np.split(x, k, axis=1))                 # (k, N, C, ...)
        arg = chunks.argmax(axis=0)                               # the first maximum
        return np.take_along_axis(chunks, arg[None], 0)[0], (arg, x.shape)

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        arg, x_shape = cache
        zero = dy.dtype.type(0)
        return np.concatenate([np.where(arg == j, dy, zero) for j in range(a["inputs"])],
                              axis=1), ()

    def onnx_node(self, a):
        return "Max", {}               # the exporter hands it each input whole

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch

        def eltmax(x):
            chunks = x.chunk(a["inputs"], 1)
            y = chunks[0]
            for c in chunks[1:]:
                y = torch.maximum(y, c)
            return y
        return eltmax


OP = EltMax()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# The part's input is its channels of input 1, then of input 2, ...: chunk j is the run
# x[j·NOUT .. (j+1)·NOUT) in the (C, N, H, W) layout. The backward finds the first maximum
# again from x (as the forward did: strictly greater replaces), so nothing is kept between.

MAX_FWD = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i >= ${NOUT})
        return;
    float m = x[i];
    for (int j = 1; j < ${K}; ++j) {
        const float v = x[j * ${NOUT} + i];
        if (v > m)
            m = v;
    }
    y[i] = m;
}
"""

MAX_BWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NIN})
        return;
    const int i = e % ${NOUT};
    int arg = 0;
    float m = x[i];
    for (int j = 1; j < ${K}; ++j) {
        const float v = x[j * ${NOUT} + i];
        if (v > m) {
            m = v;
            arg = j;
        }
    }
    dx[e] = arg == e / ${NOUT} ? dy[i] : 0.0f;
}
"""


def _consts(c) -> dict:
    return dict(NOUT=c.out_elements, NIN=c.in_elements, K=c.attrs["inputs"])


def forward_kernels(c):
    k = _consts(c)
    gs, ls = elementwise_launch(k["NOUT"])
    return [Call(Kernel(f"{c.prefix}_fwd", MAX_FWD, params("in x", "out y"), k, gs, ls,
                        flops=k["NIN"], layer=c.layer.name,
                        doc=f"{c.layer.name} part {c.part.index} max: y = the largest of the "
                            f"{k['K']} inputs\nlaunch: one work-item per output ({k['NOUT']})"),
                 ("x", "y"))]


def backward_kernels(c):
    if not c.input_grad:
        return []
    k = _consts(c)
    gs, ls = elementwise_launch(k["NIN"])
    return [Call(Kernel(f"{c.prefix}_bwd", MAX_BWD, params("in dy", "in x", "out dx"), k, gs,
                        ls, layer=c.layer.name,
                        doc=f"{c.layer.name} part {c.part.index} max gradient: dx = dy where "
                            f"this input is the first maximum, else 0\n"
                            f"launch: one work-item per input element ({k['NIN']})"),
                 ("dy", "x", "dx"))]
