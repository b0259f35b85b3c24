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
        z = a["size"]
        windows = pool_windows(x.shape, z, a["stride"])
        _, _, r0, c0 = next(windows)
        y = x[:, :, r0, c0].copy()
        arg = np.zeros(y.shape, np.min_scalar_type(z * z - 1))   # offset u·z + v of the max
        for u, v, rows, cols in windows:
            win = x[:, :, rows, cols]
            better = win > y                                 # strictly: ties keep the first
            np.copyto(y, win, where=better)
            np.copyto(arg, u * z + v, where=better, casting="unsafe")
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
