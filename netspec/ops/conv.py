"""conv: 2-D convolution, cross-correlation as in PyTorch, with stride and zero padding.

y[n, o, i, j] = b[o] + Σ_c Σ_u Σ_v w[o, c, u, v] · xpad[n, c, i·s + u, j·s + v]
(no b with `nobias`: PyTorch's bias=False, Caffe's bias_term: false; a conv before batch norm,
whose shift would cancel any bias)
Output size is floor((H + 2·pad − size) / stride) + 1.
A part reads the input channels its `connect` mode gives it (its own GPU's for `same-gpu`,
all for `all`), so a `same-gpu` layer is a grouped convolution.

Reference: im2col + one GEMM per part. The columns are laid out (C·k·k, N·Ho·Wo), so the
forward is one matmul W(O, C·k·k) @ cols and the backward two: dW = dY(O, N·Ho·Wo) @ colsᵀ and
dcols = Wᵀ @ dY, folded back onto the input by col2im, one strided add per kernel offset.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..kernel import Call, Kernel, ceil_div, elementwise_launch, params
from ..kernel.gemm import Operand, gemm_calls, gemm_scratch
from ..kernel.winograd_gpu import (
    WinogradTiles,
    conv_direction,
    wgrad_calls,
    wgrad_scratch,
    winograd_calls,
)
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
    grouped = True
    tuned = True
    split_k = ("fwd", "bwd_weight", "bwd_data")
    count_attr = "filters"
    colour, label = "#6a9fd4", "convolution"
    weighted = True
    spatial_input = True
    attrs = {
        "filters": AttrDef("int", required=True, minimum=1, doc="output maps"),
        "size": AttrDef("int", required=True, minimum=1, doc="kernel size (square)"),
        "stride": AttrDef("int", default=1, minimum=1),
        "pad": AttrDef("int", default=0, minimum=0),
        "nobias": AttrDef("flag", doc="no bias (PyTorch's bias=False; before a batchnorm)"),
    }

    def describe(self, a):
        return f"{a['size']}×{a['size']} s{a['stride']}"

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

    def parameters(self, a, in_shape, in_ch, out_ch):
        return without_bias(a, super().parameters(a, in_shape, in_ch, out_ch))

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        w, b = params if len(params) == 2 else (params[0], np.zeros(len(params[0]), x.dtype))
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
        dw = (cols @ dyt.T).T.reshape(w.shape)               # as colsᵀ-last GEMM: much faster
        grads = (dw,) if a.get("nobias") else (dw, dyt.sum(axis=1))

        if not input_grad:
            return None, grads
        # dcols overwrites cols, which this backward was the last to need
        dcols = np.matmul(w.reshape(o, -1).T, dyt, out=cols)
        return col2im(dcols, x_shape, a["size"], a["stride"], a["pad"]), grads


    def onnx_node(self, a):
        return "Conv", {"kernel_shape": [a["size"]] * 2, "strides": [a["stride"]] * 2,
                        "pads": [a["pad"]] * 4}

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch.nn.functional as F

        def conv(x, w, b=None):
            y = F.conv2d(x, w, b, stride=a["stride"], padding=a["pad"], groups=groups)
            return F.relu(y) if relu else y
        return conv


def without_bias(a: dict, defs: tuple) -> tuple:
    """A weighted op's tensors less its bias when `nobias` is set (conv, fc)."""
    return tuple(d for d in defs if d.name != "bias") if a.get("nobias") else defs


OP = Conv()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); rendered in CUDA C and OpenCL C from one text,
# the `$tokens` being the dialect's (kernel/dialects.py) or this part's static shapes.
# Device layout: activations (C, N, H, W), weights (O, C, kh, kw) as in PyTorch.
# All three passes are implicit GEMMs over the shared tiled skeleton (kernel/gemm.py); the
# im2col columns are gathered while staging tiles, never stored.
# Fused: bias + ReLU in the forward epilogue; ReLU's backward (dy · [y > 0]) and the bias
# gradient in one reduction kernel that rewrites dy in place, read by the two GEMMs after it.


# Operands of the three GEMMs (kernel/gemm.py `Operand`): `hoist` sets h0..h2 from the outer
# index alone (once per work-item, before the K loop), `per_k` sets g0..g2 from k alone (once
# per slab for all of a work-item's lanes: every division of k is there), and `load` sets v
# from both with additions and comparisons only.
# B(k, n) of the forward: xpad[c, img, oy·S + u, ox·S + q], n = (img, oy, ox), k = (c, u, q);
# h0 = the offset of (img, oy·S − P, ox·S − P) in a channel, (h1, h2) = that pixel;
# g0 = the offset of tap (c, u, q) from it, (g1, g2) = (u, q).
# Guarded (kernel/gemm.py `Operand.guarded`; kernels of at most MASK_TAPS taps): h1 = a bit
# per tap r = u·KW + q that lands inside the input (0 for a column past N), g1 = 1 << r (0 for
# k past the slice), so one AND tests everything.
MASK_TAPS = 31
CONV_FWD_B_MASKED = Operand(hoist=r"""
const int img = n / (${OH} * ${OW}), iy = ((n / ${OW}) % ${OH}) * ${S} - ${P}, ix = (n % ${OW}) * ${S} - ${P};
h0 = img * (${H} * ${W}) + iy * ${W} + ix;
if (n < ${N})
    for (int u = 0; u < ${KH}; ++u)
        for (int q = 0; q < ${KW}; ++q)
            if (iy + u >= 0 && iy + u < ${H} && ix + q >= 0 && ix + q < ${W})
                h1 |= 1 << (u * ${KW} + q);
""", per_k=r"""
const int c = k / (${KH} * ${KW}), r = k % (${KH} * ${KW});
g0 = c * (${NB} * ${H} * ${W}) + (r / ${KW}) * ${W} + r % ${KW}; g1 = 1 << r;
""", load="if (h1 & g1) v = x[h0 + g0];", fast="outer")
# ... and for larger kernels (up to MASK_TAPS rows and columns): h1, h2 = a bit per row u and
# per column q inside the input, g1, g2 = 1 << u, 1 << q: two ANDs.
CONV_FWD_B_ROWCOL = Operand(hoist=r"""
const int img = n / (${OH} * ${OW}), iy = ((n / ${OW}) % ${OH}) * ${S} - ${P}, ix = (n % ${OW}) * ${S} - ${P};
h0 = img * (${H} * ${W}) + iy * ${W} + ix;
if (n < ${N}) {
    for (int u = 0; u < ${KH}; ++u)
        if (iy + u >= 0 && iy + u < ${H})
            h1 |= 1 << u;
    for (int q = 0; q < ${KW}; ++q)
        if (ix + q >= 0 && ix + q < ${W})
            h2 |= 1 << q;
}
""", per_k=r"""
const int c = k / (${KH} * ${KW}), u = (k / ${KW}) % ${KH}, q = k % ${KW};
g0 = c * (${NB} * ${H} * ${W}) + u * ${W} + q; g1 = 1 << u; g2 = 1 << q;
""", load="if ((h1 & g1) && (h2 & g2)) v = x[h0 + g0];", fast="outer")
CONV_FWD_B = Operand(hoist=r"""
const int img = n / (${OH} * ${OW}), oy = (n / ${OW}) % ${OH}, ox = n % ${OW};
h1 = oy * ${S} - ${P}; h2 = ox * ${S} - ${P}; h0 = img * (${H} * ${W}) + h1 * ${W} + h2;
""", per_k=r"""
const int c = k / (${KH} * ${KW}), u = (k / ${KW}) % ${KH}, q = k % ${KW};
g0 = c * (${NB} * ${H} * ${W}) + u * ${W} + q; g1 = u; g2 = q;
""", load=r"""
if (h1 + g1 >= 0 && h1 + g1 < ${H} && h2 + g2 >= 0 && h2 + g2 < ${W})
    v = x[h0 + g0];
""", fast="outer", guarded=CONV_FWD_B_MASKED)

# B(k, n) of the weight gradient: the same columns with k = (img, oy, ox), n = (c, u, q);
# h0 = the offset of channel c shifted by (u − P, q − P), (h1, h2) = (u − P, q − P);
# g0 = the offset of (img, oy·S, ox·S), (g1, g2) = (oy·S, ox·S).
CONV_WGRAD_B = Operand(hoist=r"""
const int c = n / (${KH} * ${KW}), u = (n / ${KW}) % ${KH}, q = n % ${KW};
h1 = u - ${P}; h2 = q - ${P}; h0 = c * (${NB} * ${H} * ${W}) + h1 * ${W} + h2;
""", per_k=r"""
const int img = k / (${OH} * ${OW}), oy = (k / ${OW}) % ${OH}, ox = k % ${OW};
g1 = oy * ${S}; g2 = ox * ${S}; g0 = img * (${H} * ${W}) + g1 * ${W} + g2;
""", load=r"""
if (g1 + h1 >= 0 && g1 + h1 < ${H} && g2 + h2 >= 0 && g2 + h2 < ${W})
    v = x[h0 + g0];
""", fast="k")

# The data gradient with stride 1: A(m, k) = w[o, m, u, q] with k = (o, u, q); B(k, n) =
# dy[o, img, iy + P − u, ix + P − q] for input pixel n = (img, iy, ix), where inside the
# output: h0 = the offset of (img, iy + P, ix + P), (h1, h2) = (iy + P, ix + P); g0 = the
# offset of (o, −u, −q), (g1, g2) = (u, q).
CONV_DGRAD_A = Operand(hoist="h0 = m * (${KH} * ${KW});", per_k=r"""
g0 = (k / (${KH} * ${KW})) * (${CIN} * ${KH} * ${KW}) + k % (${KH} * ${KW});
""", load="v = w[h0 + g0];", fast="k")
CONV_DGRAD_B_MASKED = Operand(hoist=r"""
const int img = n / (${H} * ${W}), py = (n / ${W}) % ${H} + ${P}, px = n % ${W} + ${P};
h0 = img * (${OH} * ${OW}) + py * ${OW} + px;
if (n < ${N})
    for (int u = 0; u < ${KH}; ++u)
        for (int q = 0; q < ${KW}; ++q)
            if (py - u >= 0 && py - u < ${OH} && px - q >= 0 && px - q < ${OW})
                h1 |= 1 << (u * ${KW} + q);
""", per_k=r"""
const int o = k / (${KH} * ${KW}), r = k % (${KH} * ${KW});
g0 = o * (${NB} * ${OH} * ${OW}) - (r / ${KW}) * ${OW} - r % ${KW}; g1 = 1 << r;
""", load="if (h1 & g1) v = dy[h0 + g0];", fast="outer")
CONV_DGRAD_B = Operand(hoist=r"""
const int img = n / (${H} * ${W});
h1 = (n / ${W}) % ${H} + ${P}; h2 = n % ${W} + ${P}; h0 = img * (${OH} * ${OW}) + h1 * ${OW} + h2;
""", per_k=r"""
const int o = k / (${KH} * ${KW}), u = (k / ${KW}) % ${KH}, q = k % ${KW};
g0 = o * (${NB} * ${OH} * ${OW}) - u * ${OW} - q; g1 = u; g2 = q;
""", load=r"""
if (h1 - g1 >= 0 && h1 - g1 < ${OH} && h2 - g2 >= 0 && h2 - g2 < ${OW})
    v = dy[h0 + g0];
""", fast="outer", guarded=CONV_DGRAD_B_MASKED)

# The data gradient with stride S > 1, split by stride phase: input pixel (iy, ix) is reached
# only by taps u ≡ (iy + P) mod S, so the pixels of phase z = (ry, rx) = ((iy + P) % S,
# (ix + P) % S) form their own GEMM over the taps u = ry + S·u', q = rx + S·q' alone
# (⌈KH/S⌉·⌈KW/S⌉ of them, not KH·KW: 1/16 of the work for an 11x11 stride-4 kernel wasted
# no longer). Pixel (t, s) of a phase is iy = S·t + ry − P, ix = S·s + rx − P, and tap (u', q')
# reads output pixel (t − u', s − q'). A tap outside the kernel (u ≥ KH) reads nothing: its
# per_k sets g1 past every pixel row (B) or g1 = 0 (A), so the load's test fails.
CONV_PHASE = r"""
const int ry = z / ${S}, rx = z % ${S};
"""
CONV_PHASE_A = Operand(hoist="h0 = m * (${KH} * ${KW});", per_k=CONV_PHASE + r"""
const int o = k / (${KU} * ${KV}), u = ry + ${S} * ((k / ${KV}) % ${KU}), q = rx + ${S} * (k % ${KV});
g0 = o * (${CIN} * ${KH} * ${KW}) + u * ${KW} + q; g1 = u < ${KH} && q < ${KW};
""", load="if (g1) v = w[h0 + g0];", fast="k")
CONV_PHASE_B_MASKED = Operand(hoist=r"""
const int t = (n / ${WQ}) % ${HQ}, s = n % ${WQ};
h0 = (n / (${HQ} * ${WQ})) * (${OH} * ${OW}) + t * ${OW} + s;
if (n < ${N})
    for (int du = 0; du < ${KU}; ++du)
        for (int dq = 0; dq < ${KV}; ++dq)
            if (t - du >= 0 && t - du < ${OH} && s - dq >= 0 && s - dq < ${OW})
                h1 |= 1 << (du * ${KV} + dq);
""", per_k=CONV_PHASE + r"""
const int o = k / (${KU} * ${KV}), r = k % (${KU} * ${KV}), du = r / ${KV}, dq = r % ${KV};
g0 = o * (${NB} * ${OH} * ${OW}) - du * ${OW} - dq;
g1 = ry + ${S} * du < ${KH} && rx + ${S} * dq < ${KW} ? 1 << r : 0;
""", load="if (h1 & g1) v = dy[h0 + g0];", fast="outer")
CONV_PHASE_B = Operand(hoist=r"""
h1 = (n / ${WQ}) % ${HQ}; h2 = n % ${WQ}; h0 = (n / (${HQ} * ${WQ})) * (${OH} * ${OW}) + h1 * ${OW} + h2;
""", per_k=CONV_PHASE + r"""
const int o = k / (${KU} * ${KV}), du = (k / ${KV}) % ${KU}, dq = k % ${KV};
g0 = o * (${NB} * ${OH} * ${OW}) - du * ${OW} - dq; g2 = dq;
g1 = ry + ${S} * du < ${KH} && rx + ${S} * dq < ${KW} ? du : ${HQ};
""", load=r"""
if (h1 - g1 >= 0 && h1 - g1 < ${OH} && h2 - g2 >= 0 && h2 - g2 < ${OW})
    v = dy[h0 + g0];
""", fast="outer", guarded=CONV_PHASE_B_MASKED)
CONV_STORE_DX_PHASE = CONV_PHASE + r"""
const int img = n / (${HQ} * ${WQ});
const int iy = ${S} * ((n / ${WQ}) % ${HQ}) + ry - ${P}, ix = ${S} * (n % ${WQ}) + rx - ${P};
if (iy >= 0 && iy < ${H} && ix >= 0 && ix < ${W})
    dx[((m * ${NB} + img) * ${H} + iy) * ${W} + ix] = v;
"""

# dy <- dy · [y > 0] (when ReLU is fused) and db[o] = Σ_{img, pixel} dy[o, img, pixel], in two
# stages when a channel's P elements are many: stage 1 has SL groups per channel (O·SL in
# all: enough to fill a device even for 96 channels), each of T work-items summing every T-th
# element of its slice of PS, then a tree in shared memory; stage 2 adds each channel's SL
# partial sums in order. One long group per channel left most of a GPU idle and, on PoCL,
# ran 256 work-items' barrier loops per channel.
BIAS_GRAD_TEMPLATE = r"""
$kernel $name($params)
{
    $shared float part[${THREADS}];
    const int o = $grp0 / ${SL}, sl = $grp0 % ${SL}, t = $lid0;
    const int end = (sl + 1) * ${PS} < ${P} ? (sl + 1) * ${PS} : ${P};
    float s = 0.0f;
    for (int i = sl * ${PS} + t; i < end; i += ${THREADS}) {
        const int e = o * ${P} + i;
        float g = dy[e];
        if (${RELU} && !(y[e] > 0.0f))
            g = 0.0f;
        if (${RELU})
            dy[e] = g;
        s += g;
    }
    part[t] = s;
    $barrier
    for (int h = ${THREADS} / 2; h > 0; h >>= 1) {
        if (t < h)
            part[t] += part[t + h];
        $barrier
    }
    if (t == 0)
        db[$grp0] = part[0];
}
"""

# The same with few elements per channel (fc: P = the batch): one work-item per channel, a
# serial sum, 64 channels to a group; no shared memory, no barriers.
BIAS_GRAD_SHORT = r"""
$kernel $name($params)
{
    const int o = $gid0;
    if (o >= ${O})
        return;
    float s = 0.0f;
    for (int i = 0; i < ${P}; ++i) {
        const int e = o * ${P} + i;
        float g = dy[e];
        if (${RELU} && !(y[e] > 0.0f))
            g = 0.0f;
        if (${RELU})
            dy[e] = g;
        s += g;
    }
    db[o] = s;
}
"""

BIAS_GRAD_FINISH = r"""
$kernel $name($params)
{
    const int o = $gid0;
    if (o >= ${O})
        return;
    float s = 0.0f;
    for (int sl = 0; sl < ${SL}; ++sl)
        s += part[o * ${SL} + sl];
    db[o] = s;
}
"""


# Without a bias (`nobias`) only ReLU's backward is left: dy <- dy · [y > 0] in place.
RELU_MASK_IN_PLACE = r"""
$kernel $name($params)
{
    const int i = $gid0;
    if (i < ${N} && !(y[i] > 0.0f))
        dy[i] = 0.0f;
}
"""


def bias_grad_slices(per_output: int, slice_elements: int = 4096) -> int:
    """Stage-1 groups per output channel: one per `slice_elements` of its P (one when P is
    small, as for fc, and then stage 1 writes db itself)."""
    return max(1, ceil_div(per_output, slice_elements))


def bias_grad_calls(prefix: str, outputs: int, per_output: int, relu: bool, layer: str,
                    threads: int = 64, bias: bool = True):
    """The Calls of the bias gradient: stage 1 into `db` (one slice) or into the `db_split`
    scratch (outputs x slices), then stage 2. `scratch_buffers` sizes db_split the same way.
    Without a bias, ReLU's mask alone (one elementwise kernel), or nothing."""
    if not bias:
        if not relu:
            return []
        n = outputs * per_output
        gs, ls = elementwise_launch(n)
        return [Call(Kernel(
            name=f"{prefix}_bwd_relu", template=RELU_MASK_IN_PLACE,
            params=params("out dy", "in y"), consts=dict(N=n), global_size=gs,
            local_size=ls, layer=layer, flops=n,
            doc=f"ReLU backward: dy <- dy * [y > 0] in place\nlaunch: one work-item per "
                f"element ({n})"), ("dy", "y"))]
    if per_output <= 64:
        gs, ls = elementwise_launch(outputs, 64)
        return [Call(Kernel(
            name=f"{prefix}_bwd_bias", template=BIAS_GRAD_SHORT,
            params=params("out dy", "in y", "out db"),
            consts=dict(O=outputs, P=per_output, RELU=relu), global_size=gs, local_size=ls,
            layer=layer, flops=2 * outputs * per_output,
            doc=(f"{'ReLU backward and ' if relu else ''}bias gradient: "
                 f"{'dy <- dy * [y > 0] in place; ' if relu else ''}db[o] = sum of dy[o, :] "
                 f"over {per_output} images x pixels\nlaunch: one work-item per output "
                 f"channel ({outputs}), a serial sum")), ("dy", "y", "db"))]
    sl = bias_grad_slices(per_output)
    ps = ceil_div(per_output, sl)
    out = "db" if sl == 1 else "db_split"
    stage1 = Kernel(
        name=f"{prefix}_bwd_bias", template=BIAS_GRAD_TEMPLATE,
        params=params("out dy", "in y", "out db"),
        consts=dict(P=per_output, PS=ps, SL=sl, RELU=relu, THREADS=threads),
        global_size=(outputs * sl * threads,), local_size=(threads,), layer=layer,
        shared_bytes=4 * threads, flops=2 * outputs * per_output,
        doc=(f"{'ReLU backward and ' if relu else ''}bias gradient: "
             f"{'dy <- dy * [y > 0] in place; ' if relu else ''}db[o] = sum of dy[o, :] over "
             f"{per_output} images x pixels"
             f"{f', stage 1 of 2: partial sums over {sl} slices of {ps}' if sl > 1 else ''}"
             f"\nlaunch: {sl} group(s) of {threads} per output channel ({outputs}), a tree "
             f"reduction in shared memory"))
    calls = [Call(stage1, ("dy", "y", out))]
    if sl > 1:
        gs, ls = elementwise_launch(outputs, 64)
        calls.append(Call(Kernel(
            name=f"{prefix}_bwd_bias_sum", template=BIAS_GRAD_FINISH,
            params=params("in part", "out db"), consts=dict(O=outputs, SL=sl),
            global_size=gs, local_size=ls, layer=layer, flops=outputs * sl,
            doc=f"bias gradient stage 2: db[o] = sum of the {sl} slice sums of channel o\n"
                f"launch: one work-item per output channel ({outputs})"),
            ("db_split", "db")))
    return calls


def _gemms(c) -> dict:
    """direction -> (M, N, K, batches) of this part's GEMMs (bwd_data only with input_grad)."""
    g = _geometry(c)
    o, cin = c.out_shape[0], g["CIN"]
    kk = cin * g["KH"] * g["KW"]
    out = {"fwd": (o, c.batch * g["OH"] * g["OW"], kk, 1),
           "bwd_weight": (o, kk, c.batch * g["OH"] * g["OW"], 1)}
    if c.input_grad and g["S"] > 1:
        s = g["S"]
        p = _phases(g)
        out["bwd_data"] = (cin, c.batch * p["HQ"] * p["WQ"], o * p["KU"] * p["KV"], s * s)
    elif c.input_grad:
        out["bwd_data"] = (cin, c.batch * g["H"] * g["W"], o * g["KH"] * g["KW"], 1)
    return out


def _phases(g: dict) -> dict:
    s = g["S"]
    return dict(g, KU=ceil_div(g["KH"], s), KV=ceil_div(g["KW"], s),
                HQ=(g["H"] - 1 + g["P"]) // s + 1, WQ=(g["W"] - 1 + g["P"]) // s + 1)


SCRATCH = {"fwd": "y_split", "bwd_weight": "dw_split", "bwd_data": "dx_split"}
# Winograd's U, V, M of a direction: its own roles, live only while that direction runs
WINO_TAG = {"fwd": "wino_fwd", "bwd_data": "wino_dx", "bwd_weight": "wino_dw"}


def scratch_buffers(c) -> dict:
    out = {}
    for direction, (m, n, k, batches) in _gemms(c).items():
        wt = _winograd(c, direction)
        if wt and direction == "bwd_weight":
            out.update(wgrad_scratch(conv_direction(c, direction), wt.m, wt.r, wt.slices,
                                     WINO_TAG[direction]))
            continue
        if wt:
            out.update(conv_direction(c, direction).scratch(wt.m, wt.r, WINO_TAG[direction]))
            continue
        floats = gemm_scratch(m, n, k, c.tiles.get(direction), batches=batches,
                              sm_count=c.sm_count, precision=c.precision)
        if floats:
            out[SCRATCH[direction]] = floats
    o, npix = c.out_shape[0], c.batch * c.out_shape[1] * c.out_shape[2]
    sl = bias_grad_slices(npix)
    if sl > 1 and not c.attrs.get("nobias"):
        out["db_split"] = o * sl
    return out


def _geometry(c) -> dict:
    a = c.attrs
    cin, h, w = c.in_shape
    _, oh, ow = c.out_shape
    return dict(CIN=cin, H=h, W=w, KH=a["size"], KW=a["size"], S=a["stride"], P=a["pad"],
                OH=oh, OW=ow, NB=c.batch)


def _gemm(c, direction: str, name: str, **kw) -> list:
    m, n, k, batches = _gemms(c)[direction]
    return gemm_calls(f"{c.prefix}_{name}", m, n, k, batches=batches, tiles=c.tiles.get(direction),
                      scratch=SCRATCH[direction], layer=c.layer.name, sm_count=c.sm_count,
                      precision=c.precision, **kw)


def _winograd(c, direction: str) -> WinogradTiles | None:
    """The Winograd choice for this direction (codegen/winograd_gpu.py puts it in the tiles)."""
    t = c.tiles.get(direction)
    return t if isinstance(t, WinogradTiles) and conv_direction(c, direction) else None


def _masked(op: Operand, taps: int) -> Operand:
    """`op` with its guarded (bit-mask) form where the kernel's taps fit an int's bits."""
    return op if taps <= MASK_TAPS else dataclasses.replace(op, guarded=None)


def _forward_b(g: dict) -> Operand:
    """The forward's im2col operand: one tap mask, row and column masks, or plain tests."""
    if g["KH"] * g["KW"] <= MASK_TAPS:
        return CONV_FWD_B
    if max(g["KH"], g["KW"]) <= MASK_TAPS:
        return dataclasses.replace(CONV_FWD_B, guarded=CONV_FWD_B_ROWCOL)
    return dataclasses.replace(CONV_FWD_B, guarded=None)


def forward_kernels(c):
    g = _geometry(c)
    wt = _winograd(c, "fwd")
    if wt:
        return winograd_calls(f"{c.prefix}_fwd", conv_direction(c, "fwd"), wt, src="x", dst="y",
                              flip=False, bias=not c.attrs.get("nobias"), relu=c.layer.relu,
                              layer=c.layer.name,
                              sm_count=c.sm_count, what=f"{c.layer.name} forward: ",
                              tag=WINO_TAG["fwd"])
    relu = "v = $fmax(v, 0.0f);" if c.layer.relu else ""
    kk = g["CIN"] * g["KH"] * g["KW"]
    bias = not c.attrs.get("nobias")
    return _gemm(
        c, "fwd", "fwd", a=Operand.dense("w", kk, 1), b=_forward_b(g),
        epilogue=f"{'v += b[m];' if bias else ''} {relu} y[m * ${{N}} + n] = v;",
        reads=("x", "w"), writes=("in b", "out y") if bias else ("out y",), consts=g,
        doc=f"{c.layer.name} part {c.part.index} forward: y[o, (img, oy, ox)] = "
            f"{'b[o] + ' if bias else ''}"
            f"sum_(c, u, v) w[o, c, u, v] * xpad[c, img, oy*{g['S']} + u, ox*{g['S']} + v]"
            f"{', then ReLU' if c.layer.relu else ''}")


def backward_kernels(c):
    g = _geometry(c)
    o = c.out_shape[0]
    npix = c.batch * g["OH"] * g["OW"]
    calls = bias_grad_calls(c.prefix, o, npix, c.layer.relu, c.layer.name,
                            bias=not c.attrs.get("nobias"))
    wt = _winograd(c, "bwd_weight")
    if wt:
        calls += wgrad_calls(f"{c.prefix}_bwd_weight", conv_direction(c, "bwd_weight"), wt,
                             layer=c.layer.name, sm_count=c.sm_count, tag=WINO_TAG["bwd_weight"],
                             what=f"{c.layer.name} weight gradient: ")
    else:
        calls += _gemm(
            c, "bwd_weight", "bwd_weight", a=Operand.dense("dy", npix, 1), b=CONV_WGRAD_B,
            epilogue="dw[m * ${N} + n] = v;", reads=("dy", "x"), writes=("out dw",), consts=g,
            doc=f"{c.layer.name} part {c.part.index} weight gradient: dw[o, (c, u, v)] = "
                f"sum_(img, oy, ox) dy[o, img, oy, ox] * xpad[c, img, oy*S + u, ox*S + v]")
    if c.input_grad and g["S"] > 1:
        calls += _gemm(
            c, "bwd_data", "bwd_data", a=CONV_PHASE_A,
            b=_masked(CONV_PHASE_B, ceil_div(g["KH"], g["S"]) * ceil_div(g["KW"], g["S"])),
            epilogue=CONV_STORE_DX_PHASE, reads=("dy", "w"), writes=("out dx",),
            consts=_phases(g),
            doc=f"{c.layer.name} part {c.part.index} data gradient, one GEMM per stride phase "
                f"(ry, rx) = ((iy + P) % S, (ix + P) % S): dx[c, img, iy, ix] = "
                f"sum_(o, u', v') w[o, c, ry + S u', rx + S v'] * dy[o, img, (iy + P) / S - u', "
                f"(ix + P) / S - v'] over taps inside the kernel and the output")
    elif c.input_grad and _winograd(c, "bwd_data"):
        calls += winograd_calls(f"{c.prefix}_bwd_data", conv_direction(c, "bwd_data"),
                                _winograd(c, "bwd_data"), src="dy", dst="dx", flip=True,
                                layer=c.layer.name, sm_count=c.sm_count,
                                what=f"{c.layer.name} data gradient: ", tag=WINO_TAG["bwd_data"])
    elif c.input_grad:
        calls += _gemm(
            c, "bwd_data", "bwd_data", a=CONV_DGRAD_A, b=_masked(CONV_DGRAD_B, g["KH"] * g["KW"]),
            epilogue="dx[m * ${N} + n] = v;", reads=("dy", "w"), writes=("out dx",), consts=g,
            doc=f"{c.layer.name} part {c.part.index} data gradient: dx[c, img, iy, ix] = "
                f"sum_(o, u, v) w[o, c, u, v] * dy[o, img, (iy + P - u)/S, (ix + P - v)/S] "
                f"over taps that land on an output pixel (divisible by S, in range)")
    return calls
