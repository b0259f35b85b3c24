"""dropout (inverted): at train time y = x · m / (1 − p), m ~ Bernoulli(1 − p); at test time y = x.

In expectation this equals the paper's "multiply the outputs by 0.5 at test time" (§4.2).
The mask comes from the network's seeded RNG: one draw per dropout layer per training step,
for the whole layer at once, `rng.random((N, *out_shape), dtype=np.float32) >= p` (compared in
float32), then sliced per part along axis 1. See `draw_noise`.
"""
from __future__ import annotations

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import AttrDef, Op


class Dropout(Op):
    type = "dropout"
    doc = "inverted dropout with drop probability p"
    colour, label = "#c4e0ae", "dropout"
    attrs = {"p": AttrDef("float", default=0.5, minimum=0.0, maximum=0.999999,
                          doc="drop probability, 0 <= p < 1")}

    def describe(self, a):
        return f"dropout {a['p']:g}"

    def draw_noise(self, a, shape, rng):
        return rng.random(shape, dtype=np.float32) >= np.float32(a["p"])   # the keep mask

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        if not train:
            return x, None
        if noise is None or noise.shape != x.shape:
            raise ValueError(f"dropout at train time needs a keep mask of shape {x.shape}")
        scale = noise.astype(x.dtype)
        scale *= 1.0 / (1.0 - a["p"])                       # inverted: kept units scaled up
        return x * scale, scale

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        return (dy if cache is None else dy * cache), ()


    def onnx_node(self, a):
        return "Identity", {}     # test time: inverted dropout already scaled at training

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch.nn.functional as F
        p = a["p"]
        if not train:
            return lambda x: x
        if noise is None:
            return lambda x: F.dropout(x, p, training=True)     # PyTorch's own draw

        def drop(x):
            return x * noise * (1.0 / (1.0 - p))
        return drop


OP = Dropout()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# The mask is not drawn on the device: the host draws the layer's noise with the reference's
# `draw_noise` (same generator, same order), turns it into the reference's keep mask, and
# uploads this part's slice as 0/1 floats (`mask`, laid out like the activations). So both
# backends drop exactly the units the NumPy reference drops.

DROPOUT_APPLY = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i < ${N})
        out[i] = src[i] * mask[i] * ${SCALE};
}
"""

COPY = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i < ${N})
        y[i] = x[i];
}
"""


def scratch_buffers(c) -> dict:
    return {"mask": c.out_elements}


def forward_kernels(c):
    n = c.out_elements
    gs, ls = elementwise_launch(n)
    scale = 1.0 / (1.0 - c.attrs["p"])
    return [
        Call(Kernel(f"{c.prefix}_fwd", DROPOUT_APPLY, params("in src", "in mask", "out out"),
                    dict(N=n, SCALE=scale), gs, ls, flops=2 * n, layer=c.layer.name,
                    doc=f"{c.layer.name} dropout (train): y = x * mask / (1 - {c.attrs['p']})\n"
                        f"launch: one work-item per element ({n})"),
             ("x", "mask", "y"), when="train"),
        Call(Kernel(f"{c.prefix}_fwd_test", COPY, params("in x", "out y"), dict(N=n), gs, ls,
                    layer=c.layer.name,
                    doc=f"{c.layer.name} dropout (test): y = x\n"
                        f"launch: one work-item per element ({n})"),
             ("x", "y"), when="test"),
    ]


def backward_kernels(c):
    if not c.input_grad:
        return []
    n = c.out_elements
    gs, ls = elementwise_launch(n)
    scale = 1.0 / (1.0 - c.attrs["p"])
    return [
        Call(Kernel(f"{c.prefix}_bwd", DROPOUT_APPLY, params("in src", "in mask", "out out"),
                    dict(N=n, SCALE=scale), gs, ls, flops=2 * n, layer=c.layer.name,
                    doc=f"{c.layer.name} dropout gradient (train): dx = dy * mask / "
                        f"(1 - {c.attrs['p']})\nlaunch: one work-item per element ({n})"),
             ("dy", "mask", "dx"), when="train"),
        Call(Kernel(f"{c.prefix}_bwd_test", COPY, params("in x", "out y"), dict(N=n), gs, ls,
                    layer=c.layer.name,
                    doc=f"{c.layer.name} dropout gradient (test): dx = dy\n"
                        f"launch: one work-item per element ({n})"),
             ("dy", "dx"), when="test"),
    ]
