"""dropout (inverted): at train time y = x · m / (1 − p), m ~ Bernoulli(1 − p); at test time y = x.

In expectation this equals the paper's "multiply the outputs by 0.5 at test time" (§4.2).
The mask: one draw per dropout layer per training step, for the whole layer at once,
`keep = rng.random((N, *out_shape), dtype=np.float32) >= np.float32(p)` (compared in float32),
then sliced per part along axis 1. In a net, `rng` is the layer's Philox4x32-10 draw keyed by
(seed, step, layer, image, element) (runtime/noise.py, kernel/philox.py), and the device
backends compute the same mask on the device (`DROPOUT_MASK`). See `draw_noise`.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from ..kernel.philox import DROPOUT_MASK, mask_launch_consts
from .base import AttrDef, Op

NOISE_WORDS = 4         # a mask kernel's noise buffer: key0, key1, step, first (see below)


class Dropout(Op):
    type = "dropout"
    doc = "inverted dropout with drop probability p"
    colour, label = "#c4e0ae", "dropout"
    noise_words = NOISE_WORDS       # the plan gives each part a noise buffer (codegen/plan)
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
# At train time the part's keep mask (0/1 floats, laid out like the activations) is written on
# the device by DROPOUT_MASK (kernel/philox.py): Philox4x32-10 at the key the reference draws
# with, the seed, step and first image read from the part's `noise` buffer (NOISE_WORDS int32:
# key0, key1, step, first, as bits; uploaded each training step, so that a step captured as a
# CUDA Graph replays with the next step's key), the layer index compiled in. So every backend
# drops exactly the units the NumPy reference drops, and no mask is uploaded.

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


def mask_kernel(c) -> Kernel:
    """The keep mask of one part, drawn on the device: Philox4x32-10 keyed like
    runtime/noise.py, one work-item per (image, 4 elements)."""
    p = c.attrs["p"]
    if c.layer_index is None:
        raise ValueError(f"{c.layer.name}: the dropout mask kernel needs the layer's index")
    hw = math.prod(c.out_shape[1:])
    consts, items = mask_launch_consts(batch=c.batch, layer=c.layer_index,
                                       channels=(c.part.start, c.part.stop), per_channel=hw,
                                       p=p)
    gs, ls = elementwise_launch(items)
    return Kernel(f"{c.prefix}_mask", DROPOUT_MASK,
                  params("in_int noise", "out mask"),
                  consts, gs, ls, layer=c.layer.name,
                  doc=f"{c.layer.name} dropout mask (train): mask = [u >= {p}], u Philox4x32-10 "
                      f"of (seed, step, layer {c.layer_index}, image, element)\n"
                      f"launch: one work-item per image and 4 elements ({items})")


def forward_kernels(c):
    n = c.out_elements
    gs, ls = elementwise_launch(n)
    scale = 1.0 / (1.0 - c.attrs["p"])
    return [
        Call(mask_kernel(c), ("noise", "mask"), when="train"),
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
