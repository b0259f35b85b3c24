"""maxpool: max over z×z windows spaced s apart; overlapping when z > s (§3.4).

Output size is floor((H − z) / s) + 1. The gradient goes to the window's argmax (the first one
in row-major order on ties).
"""
from __future__ import annotations

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import AttrDef, Op
from .conv import conv_out


def pool_windows(shape: tuple[int, ...], z: int, s: int):
    """(u, v, rows, cols) for each of the z×z window offsets in row-major order: the slices of
    the input that offset (u, v) of every window reads."""
    ho, wo = conv_out(shape[2], z, s, 0), conv_out(shape[3], z, s, 0)
    for u in range(z):
        for v in range(z):
            yield u, v, slice(u, u + s * (ho - 1) + 1, s), slice(v, v + s * (wo - 1) + 1, s)


class Pool(Op):
    """What max and average pooling share: the z×z window spaced s apart, its shape rule and
    its checks. Not a layer type itself (no `type`); MaxPool and AvgPool are."""

    spatial_input = True
    attrs = {
        "size": AttrDef("int", required=True, minimum=1, doc="z, the window"),
        "stride": AttrDef("int", required=True, minimum=1, doc="s, the spacing"),
    }

    def check(self, a, in_shape, report):
        _, h, w = in_shape
        if a["size"] > h or a["size"] > w:
            report("size", f"window {a['size']} is larger than the input {h}x{w}")
            return False
        return True

    def output_shape(self, a, in_shape):
        c, h, w = in_shape
        return (c, conv_out(h, a["size"], a["stride"], 0), conv_out(w, a["size"], a["stride"], 0))

    def describe(self, a):
        return f"{self.type[:3]} {a['size']}×{a['size']} s{a['stride']}"

    def onnx_node(self, a):
        # no padding and floor((H − z) / s) + 1 outputs: ONNX's defaults (ceil_mode 0)
        return self.onnx_type, {"kernel_shape": [a["size"]] * 2, "strides": [a["stride"]] * 2}

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch.nn.functional as F
        pool = getattr(F, self.torch_function)

        def window(x):
            return pool(x, a["size"], a["stride"])       # no padding, floor: as output_shape
        return window


class MaxPool(Pool):
    type = "maxpool"
    doc = "max pooling, overlapping when size > stride"
    colour, label = "#f0ad55", "max pool"
    onnx_type = "MaxPool"
    torch_function = "max_pool2d"        # in torch.nn.functional

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        # Separable: the max over z columns within each row, then over z of those rows (2z
        # passes, not z²). Rows first keeps ties in row-major order: the first row that holds
        # the window's max, and that row's first column holding it.
        z, s = a["size"], a["stride"]
        ho, wo = conv_out(x.shape[2], z, s, 0), conv_out(x.shape[3], z, s, 0)
        hi, wi = s * (ho - 1) + 1, s * (wo - 1) + 1
        index = np.min_scalar_type(z * z - 1)
        rowmax = x[:, :, :, 0:wi:s].copy()
        col = np.zeros(rowmax.shape, index)                  # v of each row's first max
        for v in range(1, z):
            win = x[:, :, :, v:v + wi:s]
            np.copyto(col, v, where=win > rowmax, casting="unsafe")
            np.maximum(rowmax, win, out=rowmax)
        y = rowmax[:, :, 0:hi:s].copy()
        arg = col[:, :, 0:hi:s].copy()                       # offset u·z + v of the max
        for u in range(1, z):
            win = rowmax[:, :, u:u + hi:s]
            np.copyto(arg, col[:, :, u:u + hi:s] + index.type(u * z), where=win > y)
            np.maximum(y, win, out=y)
        return y, (x.shape, arg)

    def backward(self, a, dy, cache, *, input_grad=True):
        # Each output's gradient goes to the input pixel of its stored argmax: one flat index
        # per output and one unbuffered scatter-add (np.add.at, in dy's dtype), instead of z²
        # full-size masked adds. Overlapping windows that share an argmax add up.
        if not input_grad:
            return None, ()
        x_shape, arg = cache
        z, s = a["size"], a["stride"]
        n, c, h, w = x_shape
        ho, wo = arg.shape[2], arg.shape[3]
        u, v = np.divmod(arg.astype(np.intp), z)
        u += (s * np.arange(ho, dtype=np.intp))[:, None]            # input row of the argmax
        v += s * np.arange(wo, dtype=np.intp)                       # input column
        u *= w
        u += v
        u += (h * w * np.arange(n * c, dtype=np.intp)).reshape(n, c, 1, 1)
        dx = np.zeros(x_shape, dy.dtype)
        np.add.at(dx.reshape(-1), u.reshape(-1), dy.reshape(-1))
        return dx, ()


OP = MaxPool()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# Device layout (C, N, H, W): a pooling window never leaves its (channel, image) plane.
# The forward stores each window's argmax (its offset u·Z + q inside the window, first in
# row-major order on ties, as a float: exact below 2^24) in the `argmax` scratch buffer. The
# backward gathers (one work-item per input pixel, over the windows that cover it, comparing
# their stored argmax with its own offset in them), so it needs no atomics and reads one float
# per covering window instead of recomputing the window's Z² maximum.

POOL_WINDOWS = r"""
    const int plane = e / (${H} * ${W}), iy = (e / ${W}) % ${H}, ix = e % ${W};
    /* output rows whose window [oy*S, oy*S + Z) covers iy */
    const int oy0 = iy >= ${Z} ? (iy - ${Z} + ${S}) / ${S} : 0;
    const int ox0 = ix >= ${Z} ? (ix - ${Z} + ${S}) / ${S} : 0;
    const int oy1 = iy / ${S} < ${OH} - 1 ? iy / ${S} : ${OH} - 1;
    const int ox1 = ix / ${S} < ${OW} - 1 ? ix / ${S} : ${OW} - 1;
"""

MAXPOOL_FWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NOUT})
        return;
    const int plane = e / (${OH} * ${OW}), oy = (e / ${OW}) % ${OH}, ox = e % ${OW};
    const int base = plane * ${H} * ${W} + oy * ${S} * ${W} + ox * ${S};
    float m = x[base];
    int best = 0;
    for (int u = 0; u < ${Z}; ++u)
        for (int q = 0; q < ${Z}; ++q) {
            const float a = x[base + u * ${W} + q];
            if (a > m) {
                m = a;
                best = u * ${Z} + q;
            }
        }
    y[e] = m;
    argmax[e] = (float)best;
}
"""

MAXPOOL_BWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NIN})
        return;
@WINDOWS@
    float g = 0.0f;
    for (int oy = oy0; oy <= oy1; ++oy)
        for (int ox = ox0; ox <= ox1; ++ox) {
            const int o = (plane * ${OH} + oy) * ${OW} + ox;
            if ((int)argmax[o] == (iy - oy * ${S}) * ${Z} + ix - ox * ${S})
                g += dy[o];
        }
    dx[e] = g;
}
""".replace("@WINDOWS@", POOL_WINDOWS)


def pool_consts(c) -> dict:
    cin, h, w = c.in_shape
    _, oh, ow = c.out_shape
    return dict(H=h, W=w, OH=oh, OW=ow, Z=c.attrs["size"], S=c.attrs["stride"],
                NIN=c.in_elements, NOUT=c.out_elements)


def scratch_buffers(c) -> dict:
    return {"argmax": c.out_elements}


def forward_kernels(c):
    k = pool_consts(c)
    gs, ls = elementwise_launch(k["NOUT"])
    return [Call(Kernel(
        f"{c.prefix}_fwd", MAXPOOL_FWD, params("in x", "out y", "out argmax"), k, gs, ls,
        flops=k["NOUT"] * k["Z"] ** 2, layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} max pool: y = max over the {k['Z']}x{k['Z']} "
            f"window, stride {k['S']}; argmax = its first offset u*Z + v in row-major order\n"
            f"launch: one work-item per output ({k['NOUT']})"),
        ("x", "y", "argmax"))]


def backward_kernels(c):
    if not c.input_grad:
        return []
    k = pool_consts(c)
    gs, ls = elementwise_launch(k["NIN"])
    return [Call(Kernel(
        f"{c.prefix}_bwd", MAXPOOL_BWD, params("in dy", "in argmax", "out dx"), k, gs, ls,
        layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} max pool gradient: dx[p] = sum of dy over the "
            f"windows whose stored argmax is p\nlaunch: one work-item per input ({k['NIN']}), "
            f"gathering over the windows that cover it"),
        ("dy", "argmax", "dx"))]
