"""concat: its inputs laid end to end along channels (Caffe's Concat, darknet's [route],
cuda-convnet's concatenation): `concat NAME from a, b, ...`.

Any layer may read several inputs (`from a, b`): a conv or fc concatenates them into its
input, a channel-by-channel layer (pool, relu, lrn, batchnorm) runs on each input's parts in
turn; `concat` is that with nothing computed, for a join that is itself an output (a Fire
module's expand layers, an inception module's branches). Inputs agree in all but channels.

Shape: (C₁ + C₂ + ..., H, W) out of (C₁, H, W), (C₂, H, W), ...; on several GPUs its parts are
its inputs' parts, where they are (no transfer); the copy is the only work.
"""
from __future__ import annotations

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import Op


class Concat(Op):
    type = "concat"
    doc = "inputs concatenated along channels (from a, b, ...)"
    colour, label = "#c5b0d5", "concat"

    def describe(self, a):
        return "concat"

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        return x.copy(), None

    def backward(self, a, dy, cache, *, input_grad=True):
        return (dy.copy() if input_grad else None), ()

    def onnx_node(self, a):
        return "Identity", {}          # the exporter's Concat of the inputs is the work

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        return lambda x: x


OP = Concat()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# The part's input is one source part's channels (the plan gathers them); the part copies them.

COPY = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i < ${N})
        y[i] = x[i];
}
"""


def forward_kernels(c):
    n = c.out_elements
    gs, ls = elementwise_launch(n)
    return [Call(Kernel(f"{c.prefix}_fwd", COPY, params("in x", "out y"), dict(N=n), gs, ls,
                        layer=c.layer.name,
                        doc=f"{c.layer.name} part {c.part.index} concat: y = x\n"
                            f"launch: one work-item per element ({n})"), ("x", "y"))]


def backward_kernels(c):
    if not c.input_grad:
        return []
    n = c.out_elements
    gs, ls = elementwise_launch(n)
    return [Call(Kernel(f"{c.prefix}_bwd", COPY, params("in x", "out y"), dict(N=n), gs, ls,
                        layer=c.layer.name,
                        doc=f"{c.layer.name} part {c.part.index} concat gradient: dx = dy\n"
                            f"launch: one work-item per element ({n})"), ("dy", "dx"))]
