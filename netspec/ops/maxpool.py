"""maxpool: max over z×z windows spaced s apart; overlapping when z > s (§3.4).

Output size is floor((H − z) / s) + 1. The gradient goes to the window's argmax (the first one
in row-major order on ties).
"""
from __future__ import annotations

import numpy as np

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
    type = "maxpool"
    doc = "max pooling, overlapping when size > stride"
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
        if not input_grad:
            return None, ()
        x_shape, arg = cache
        z = a["size"]
        dx = np.zeros(x_shape, dy.dtype)
        zero = dy.dtype.type(0)
        for u, v, rows, cols in pool_windows(x_shape, z, a["stride"]):
            dx[:, :, rows, cols] += np.where(arg == u * z + v, dy, zero)
        return dx, ()


OP = Pool()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# Device layout (C, N, H, W): a pooling window never leaves its (channel, image) plane.
# The backward gathers (one work-item per input pixel, over the windows that cover it) instead
# of scattering, so it needs no atomics and no argmax buffer: it recomputes each covering
# window's argmax, first in row-major order on ties, exactly as the forward chose it.

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
    for (int u = 0; u < ${Z}; ++u)
        for (int q = 0; q < ${Z}; ++q) {
            const float a = x[base + u * ${W} + q];
            if (a > m)
                m = a;
        }
    y[e] = m;
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
            const int base = plane * ${H} * ${W} + oy * ${S} * ${W} + ox * ${S};
            int best = base;
            float m = x[base];
            for (int u = 0; u < ${Z}; ++u)
                for (int q = 0; q < ${Z}; ++q) {
                    const int f = base + u * ${W} + q;
                    if (x[f] > m) {
                        m = x[f];
                        best = f;
                    }
                }
            if (best == e)
                g += dy[(plane * ${OH} + oy) * ${OW} + ox];
        }
    dx[e] = g;
}
""".replace("@WINDOWS@", POOL_WINDOWS)


def pool_consts(c) -> dict:
    cin, h, w = c.in_shape
    _, oh, ow = c.out_shape
    return dict(H=h, W=w, OH=oh, OW=ow, Z=c.attrs["size"], S=c.attrs["stride"],
                NIN=c.in_elements, NOUT=c.out_elements)


def forward_kernels(c):
    from ..codegen.kernel import Call, Kernel, elementwise_launch, params
    k = pool_consts(c)
    gs, ls = elementwise_launch(k["NOUT"])
    return [Call(Kernel(
        f"{c.prefix}_fwd", MAXPOOL_FWD, params("in x", "out y"), k, gs, ls,
        flops=k["NOUT"] * k["Z"] ** 2, layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} max pool: y = max over the {k['Z']}x{k['Z']} "
            f"window, stride {k['S']}\nlaunch: one work-item per output ({k['NOUT']})"),
        ("x", "y"))]


def backward_kernels(c):
    from ..codegen.kernel import Call, Kernel, elementwise_launch, params
    if not c.input_grad:
        return []
    k = pool_consts(c)
    gs, ls = elementwise_launch(k["NIN"])
    return [Call(Kernel(
        f"{c.prefix}_bwd", MAXPOOL_BWD, params("in dy", "in x", "out dx"), k, gs, ls,
        layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} max pool gradient: dx[p] = sum of dy over the "
            f"windows whose first argmax is p\nlaunch: one work-item per input ({k['NIN']})"),
        ("dy", "x", "dx"))]
