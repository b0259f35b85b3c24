"""conv: 2-D convolution, cross-correlation as in PyTorch, with stride and zero padding.

y[n, o, i, j] = b[o] + Σ_c Σ_u Σ_v w[o, c, u, v] · xpad[n, c, i·s + u, j·s + v]
Output size is floor((H + 2·pad − size) / stride) + 1.
A part reads the input channels its `connect` mode gives it (its own GPU's for `same-gpu`,
all for `all`), so a `same-gpu` layer is a grouped convolution.

Reference: im2col + one GEMM per part. The columns are laid out (C·k·k, N·Ho·Wo), so the
forward is one matmul W(O, C·k·k) @ cols and the backward two: dW = dY(O, N·Ho·Wo) @ colsᵀ and
dcols = Wᵀ @ dY, folded back onto the input by col2im, one strided add per kernel offset.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .base import AttrDef, Op


def conv_out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def _padded_cnhw(x: np.ndarray, pad: int) -> np.ndarray:
    """x (N, C, H, W) as (C, N, H + 2·pad, W + 2·pad), zero-padded; a view when pad is 0."""
    xt = x.transpose(1, 0, 2, 3)
    if not pad:
        return xt
    c, n, h, w = xt.shape
    xp = np.zeros((c, n, h + 2 * pad, w + 2 * pad), x.dtype)
    xp[:, :, pad:pad + h, pad:pad + w] = xt
    return xp


def im2col(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """cols[(c, u, v), (n, i, j)] = xpad[n, c, i·stride + u, j·stride + v]: (C·k·k, N·Ho·Wo)."""
    n, c, h, w = x.shape
    ho, wo = conv_out(h, k, stride, pad), conv_out(w, k, stride, pad)
    win = sliding_window_view(_padded_cnhw(x, pad), (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    cols = np.empty((c, k, k, n, ho, wo), x.dtype)
    np.copyto(cols, win.transpose(0, 4, 5, 1, 2, 3))     # (C, N, Ho, Wo, k, k) -> (C, k, k, ...)
    return cols.reshape(c * k * k, n * ho * wo)


def col2im(cols: np.ndarray, x_shape: tuple[int, ...], k: int, stride: int,
           pad: int) -> np.ndarray:
    """The adjoint of im2col: every column entry added back onto the input pixel it was read
    from (padding dropped). Returns a contiguous (N, C, H, W) array."""
    n, c, h, w = x_shape
    ho, wo = conv_out(h, k, stride, pad), conv_out(w, k, stride, pad)
    c6 = cols.reshape(c, k, k, n, ho, wo)
    dxp = np.zeros((c, n, h + 2 * pad, w + 2 * pad), cols.dtype)
    hi, wi = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    for u in range(k):
        for v in range(k):
            dxp[:, :, u:u + hi:stride, v:v + wi:stride] += c6[:, u, v]
    return np.ascontiguousarray(dxp[:, :, pad:pad + h, pad:pad + w].transpose(1, 0, 2, 3))


class Conv(Op):
    type = "conv"
    doc = "convolution; `relu` fuses the activation"
    weighted = True
    spatial_input = True
    attrs = {
        "filters": AttrDef("int", required=True, minimum=1, doc="output maps"),
        "size": AttrDef("int", required=True, minimum=1, doc="kernel size (square)"),
        "stride": AttrDef("int", default=1, minimum=1),
        "pad": AttrDef("int", default=0, minimum=0),
    }

    def check(self, a, in_shape, report):
        _, h, w = in_shape
        k, p = a["size"], a["pad"]
        if k > h + 2 * p or k > w + 2 * p:
            report("size", f"kernel size {k} is larger than the padded input "
                           f"{h + 2 * p}x{w + 2 * p} (input {h}x{w}, pad {p})")
            return False
        return True

    def output_shape(self, a, in_shape):
        _, h, w = in_shape
        return (a["filters"], conv_out(h, a["size"], a["stride"], a["pad"]),
                conv_out(w, a["size"], a["stride"], a["pad"]))

    def weight_shape(self, a, in_shape, in_ch, out_ch):
        return (out_ch, in_ch, a["size"], a["size"])

    def part_macs(self, a, in_shape, out_shape, in_ch, out_ch):
        return out_ch * out_shape[1] * out_shape[2] * in_ch * a["size"] ** 2

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        w, b = params
        k, stride, pad = a["size"], a["stride"], a["pad"]
        n, _, h, wd = x.shape
        o = w.shape[0]
        ho, wo = conv_out(h, k, stride, pad), conv_out(wd, k, stride, pad)
        cols = im2col(x, k, stride, pad)
        ym = w.reshape(o, -1) @ cols                          # (O, N·Ho·Wo)
        y = np.empty((n, o, ho, wo), x.dtype)
        # back to (N, O, Ho, Wo), adding the bias on the way
        np.add(ym.reshape(o, n, ho * wo).transpose(1, 0, 2), b[:, None],
               out=y.reshape(n, o, ho * wo))
        if relu:
            np.maximum(y, y.dtype.type(0), out=y)
        return y, (x.shape, cols, w, y if relu else None)

    def backward(self, a, dy, cache, *, input_grad=True):
        x_shape, cols, w, y = cache
        n, o, ho, wo = dy.shape
        dyt = np.empty((o, n, ho * wo), dy.dtype)             # dL/d(pre-activation), (O, N, P)
        dy3 = dy.reshape(n, o, ho * wo).transpose(1, 0, 2)
        if y is not None:
            np.multiply(dy3, y.reshape(n, o, ho * wo).transpose(1, 0, 2) > 0, out=dyt)
        else:
            np.copyto(dyt, dy3)
        dyt = dyt.reshape(o, n * ho * wo)
        db = dyt.sum(axis=1)
        dw = (cols @ dyt.T).T.reshape(w.shape)               # as colsᵀ-last GEMM: much faster

        if not input_grad:
            return None, (dw, db)
        # dcols overwrites cols, which this backward was the last to need
        dcols = np.matmul(w.reshape(o, -1).T, dyt, out=cols)
        return col2im(dcols, x_shape, a["size"], a["stride"], a["pad"]), (dw, db)


OP = Conv()
