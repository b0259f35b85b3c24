"""local: a locally connected layer, convolution's geometry with unshared weights
(cuda-convnet's `local`, darknet's `[local]`).

    y[n, o, i, j] = b[o, i, j] + Σ_c Σ_u Σ_v w[o, i, j, c, u, v] · xpad[n, c, i·s + u, j·s + v]

Every output position (i, j) has its own filter bank: weight (O, Ho, Wo, C, k, k) and bias
(O, Ho, Wo), one per output pixel as in both anchors (cuda-convnet's LocalUnsharedLayerParser
makes `modules · filters` biases, darknet's local layer `out_h · out_w · n`). Output size is
conv's: floor((H + 2·pad − size) / stride) + 1 (cuda-convnet sizes its `local` and `conv` with
ceil, 1 + ⌈(2·pad + H − size) / stride⌉; the importer says where they differ). `groups G`
splits the channels as conv's does; each part is one group.

Reference: conv's im2col columns (C·k·k, N·Ho·Wo) viewed as (J, N, L) with L = Ho·Wo; the
forward is one batched product per output pixel, y[n, o, l] = Σ_j w[o, l, j] · cols[j, n, l],
and the backward its two adjoints (dW = Σ_n dy ⊗ cols, dcols = Σ_o w · dy, then col2im).
"""
from __future__ import annotations

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import AttrDef, Op, ParamDef
from .conv import Conv, col2im, im2col


class Local(Op):
    type = "local"
    doc = ("locally connected layer: convolution's windows with unshared weights, one filter "
           "bank and bias per output pixel; `relu` fuses the activation")
    grouped = True
    count_attr = "filters"
    colour, label = "#8db6e0", "locally connected"
    weighted = True
    spatial_input = True
    attrs = {
        "filters": AttrDef("int", required=True, minimum=1, doc="output maps"),
        "size": AttrDef("int", required=True, minimum=1, doc="kernel size (square)"),
        "stride": AttrDef("int", default=1, minimum=1),
        "pad": AttrDef("int", default=0, minimum=0),
    }

    def describe(self, a):
        return f"local {a['size']}×{a['size']} s{a['stride']}"

    check = Conv.check
    output_shape = Conv.output_shape

    def weight_shape(self, a, in_shape, in_ch, out_ch):
        _, ho, wo = self.output_shape(a, in_shape)
        return (out_ch, ho, wo, in_ch, a["size"], a["size"])

    def parameters(self, a, in_shape, in_ch, out_ch):
        _, ho, wo = self.output_shape(a, in_shape)
        return (ParamDef("weight", "w", self.weight_shape(a, in_shape, in_ch, out_ch), "gauss"),
                ParamDef("bias", "b", (out_ch, ho, wo), "bias"))

    def part_macs(self, a, in_shape, out_shape, in_ch, out_ch):
        return out_ch * out_shape[1] * out_shape[2] * in_ch * a["size"] ** 2

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        w, b = params
        k, stride, pad = a["size"], a["stride"], a["pad"]
        n, _, h, wd = x.shape
        o, ho, wo = b.shape
        cols = im2col(x, k, stride, pad).reshape(-1, n, ho * wo)       # (J, N, L)
        w3 = w.reshape(o, ho * wo, -1)                                 # (O, L, J)
        y = np.einsum("olj,jnl->nol", w3, cols, optimize=True)
        y += b.reshape(1, o, ho * wo)
        if relu:
            np.maximum(y, y.dtype.type(0), out=y)
        y = np.ascontiguousarray(y.reshape(n, o, ho, wo), x.dtype)
        return y, (x.shape, cols, w, y if relu else None)

    def backward(self, a, dy, cache, *, input_grad=True):
        x_shape, cols, w, y = cache
        n, o, ho, wo = dy.shape
        g = dy.reshape(n, o, ho * wo)
        if y is not None:
            g = g * (y.reshape(n, o, ho * wo) > 0)
        db = g.sum(axis=0).reshape(o, ho, wo)
        dw = np.einsum("nol,jnl->olj", g, cols, optimize=True).reshape(w.shape)
        if not input_grad:
            return None, (dw, db)
        dcols = np.einsum("olj,nol->jnl", w.reshape(o, ho * wo, -1), g, optimize=True)
        dx = col2im(np.ascontiguousarray(dcols).reshape(-1, n * ho * wo), x_shape, a["size"],
                    a["stride"], a["pad"])
        return dx, (dw.astype(dy.dtype, copy=False), db)

    def onnx_node(self, a):
        # ONNX has no locally connected operator: codegen/onnx_export.py's Exporter.local
        # writes it as a window-gathering Conv and one batched MatMul
        return "Local", {}

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch
        import torch.nn.functional as F

        def local(x, w, b):
            o, ho, wo = b.shape
            xs, ws = x.chunk(groups, dim=1), w.chunk(groups, dim=0)
            ys = []
            for xg, wg in zip(xs, ws):
                cols = F.unfold(xg, a["size"], padding=a["pad"], stride=a["stride"])  # (N, J, L)
                ys.append(torch.einsum("olj,njl->nol", wg.reshape(wg.shape[0], ho * wo, -1),
                                       cols))
            y = torch.cat(ys, 1).reshape(x.shape[0], o, ho, wo) + b
            return F.relu(y) if relu else y
        return local


OP = Local()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# Device layout: activations (C, N, H, W); weight (O, Ho, Wo, CIN, K, K) and bias (O, Ho, Wo)
# as in the reference. No GEMM: every output pixel has its own weights, so there is no operand
# to share between pixels; each kernel is a direct gather, one work-item per element written.

LOCAL_FWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NOUT})
        return;
    const int o = e / (${NB} * ${OH} * ${OW}), img = (e / (${OH} * ${OW})) % ${NB};
    const int oy = (e / ${OW}) % ${OH}, ox = e % ${OW};
    const int m = (o * ${OH} + oy) * ${OW} + ox;
    const int wbase = m * (${CIN} * ${K} * ${K});
    float v = 0.0f;
    for (int c = 0; c < ${CIN}; ++c)
        for (int u = 0; u < ${K}; ++u) {
            const int iy = oy * ${S} - ${P} + u;
            if (iy < 0 || iy >= ${H})
                continue;
            for (int q = 0; q < ${K}; ++q) {
                const int ix = ox * ${S} - ${P} + q;
                if (ix >= 0 && ix < ${W})
                    v += w[wbase + (c * ${K} + u) * ${K} + q]
                         * x[((c * ${NB} + img) * ${H} + iy) * ${W} + ix];
            }
        }
    v += b[m];
    if (${RELU})
        v = $fmax(v, 0.0f);
    y[e] = v;
}
"""

# db[o, oy, ox] = Σ_img dy (after ReLU's mask, written back into dy for the two kernels after)
LOCAL_BIAS = r"""
$kernel $name($params)
{
    const int m = $gid0;
    if (m >= ${NBIAS})
        return;
    const int o = m / (${OH} * ${OW}), pix = m % (${OH} * ${OW});
    float s = 0.0f;
    for (int img = 0; img < ${NB}; ++img) {
        const int i = (o * ${NB} + img) * (${OH} * ${OW}) + pix;
        float g = dy[i];
        if (${RELU} && !(y[i] > 0.0f))
            g = 0.0f;
        if (${RELU})
            dy[i] = g;
        s += g;
    }
    db[m] = s;
}
"""

LOCAL_WGRAD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NW})
        return;
    const int m = e / (${CIN} * ${K} * ${K}), j = e % (${CIN} * ${K} * ${K});
    const int c = j / (${K} * ${K}), u = (j / ${K}) % ${K}, q = j % ${K};
    const int o = m / (${OH} * ${OW}), oy = (m / ${OW}) % ${OH}, ox = m % ${OW};
    const int iy = oy * ${S} - ${P} + u, ix = ox * ${S} - ${P} + q;
    float s = 0.0f;
    if (iy >= 0 && iy < ${H} && ix >= 0 && ix < ${W})
        for (int img = 0; img < ${NB}; ++img)
            s += dy[((o * ${NB} + img) * ${OH} + oy) * ${OW} + ox]
                 * x[((c * ${NB} + img) * ${H} + iy) * ${W} + ix];
    dw[e] = s;
}
"""

# dx[c, img, iy, ix] = Σ over the taps (u, q) and filters o whose output pixel read it
LOCAL_DGRAD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NIN})
        return;
    const int c = e / (${NB} * ${H} * ${W}), img = (e / (${H} * ${W})) % ${NB};
    const int iy = (e / ${W}) % ${H}, ix = e % ${W};
    float s = 0.0f;
    for (int u = 0; u < ${K}; ++u) {
        const int ty = iy + ${P} - u;
        if (ty < 0 || ty % ${S} != 0 || ty / ${S} >= ${OH})
            continue;
        const int oy = ty / ${S};
        for (int q = 0; q < ${K}; ++q) {
            const int tx = ix + ${P} - q;
            if (tx < 0 || tx % ${S} != 0 || tx / ${S} >= ${OW})
                continue;
            const int ox = tx / ${S};
            for (int o = 0; o < ${O}; ++o)
                s += w[(((o * ${OH} + oy) * ${OW} + ox) * ${CIN} + c) * (${K} * ${K}) + u * ${K} + q]
                     * dy[((o * ${NB} + img) * ${OH} + oy) * ${OW} + ox];
        }
    }
    dx[e] = s;
}
"""


def _consts(c) -> dict:
    a = c.attrs
    cin, h, w = c.in_shape
    o, oh, ow = c.out_shape
    k = a["size"]
    return dict(CIN=cin, H=h, W=w, K=k, S=a["stride"], P=a["pad"], O=o, OH=oh, OW=ow,
                NB=c.batch, RELU=int(bool(c.layer.relu)), NOUT=c.out_elements,
                NIN=c.in_elements, NBIAS=o * oh * ow, NW=o * oh * ow * cin * k * k)


def _call(c, k, name, template, names, roles, n, flops, doc):
    gs, ls = elementwise_launch(n)
    return Call(Kernel(f"{c.prefix}_{name}", template, params(*names), k, gs, ls, flops=flops,
                       layer=c.layer.name,
                       doc=f"{c.layer.name} part {c.part.index} local: {doc}\n"
                           f"launch: one work-item per element written ({n})"), roles)


def forward_kernels(c):
    k = _consts(c)
    macs = k["NOUT"] * k["CIN"] * k["K"] ** 2
    return [_call(c, k, "fwd", LOCAL_FWD, ("in x", "in w", "in b", "out y"),
                  ("x", "w", "b", "y"), k["NOUT"], 2 * macs,
                  "y[o, img, oy, ox] = b[o, oy, ox] + sum_(c, u, v) w[o, oy, ox, c, u, v] * "
                  f"xpad[c, img, oy*{k['S']} + u, ox*{k['S']} + v]"
                  f"{', then ReLU' if k['RELU'] else ''}")]


def backward_kernels(c):
    k = _consts(c)
    macs = k["NOUT"] * k["CIN"] * k["K"] ** 2
    calls = [
        _call(c, k, "bwd_bias", LOCAL_BIAS, ("out dy", "in y", "out db"), ("dy", "y", "db"),
              k["NBIAS"], k["NOUT"],
              f"{'ReLU backward (dy <- dy * [y > 0] in place) and ' if k['RELU'] else ''}"
              "bias gradient db[o, oy, ox] = sum_img dy[o, img, oy, ox]"),
        _call(c, k, "bwd_weight", LOCAL_WGRAD, ("in dy", "in x", "out dw"), ("dy", "x", "dw"),
              k["NW"], 2 * macs,
              "dw[o, oy, ox, c, u, v] = sum_img dy[o, img, oy, ox] * xpad[c, img, oy*S + u, "
              "ox*S + v]"),
    ]
    if c.input_grad:
        calls.append(_call(
            c, k, "bwd_data", LOCAL_DGRAD, ("in dy", "in w", "out dx"), ("dy", "w", "dx"),
            k["NIN"], 2 * macs,
            "dx[c, img, iy, ix] = sum_(o, u, v) w[o, oy, ox, c, u, v] * dy[o, img, oy, ox] "
            "over the taps with oy*S + u = iy + P, ox*S + v = ix + P"))
    return calls


# -- host kernels (the cpu backend: codegen/cpu_kernels.py collects HOST_KERNELS) --------------
# C with OpenMP, layouts the reference's (x NCHW, w (O, Ho, Wo, C, K, K), b (O, Ho, Wo)). The
# forward and the weight gradient run over the output pixels' filter banks, each work item
# one bank for every image (the bank read from memory once); the data gradient over blocks of
# 8 images, each work item owning its images' dx.

HOST_LOCAL_FWD = r"""
$kernel local_fwd(const float *$restrict x, const float *$restrict w,
                  const float *$restrict b, float *$restrict y, long N, long C, long H, long W,
                  long O, long K, long S, long P, long Ho, long Wo, long relu)
{
    const long M = O * Ho * Wo;
    $parallel if (N * M * C * K * K > SERIAL)
    for (long m = 0; m < M; ++m) {                 /* one filter bank, kept in cache, per item */
        const long oy = (m / Wo) % Ho, ox = m % Wo;
        const float *wm = w + m * C * K * K;
        for (long n = 0; n < N; ++n) {
            float v = 0.0f;
            for (long c = 0; c < C; ++c)
                for (long u = 0; u < K; ++u) {
                    const long iy = oy * S - P + u;
                    if (iy < 0 || iy >= H)
                        continue;
                    for (long q = 0; q < K; ++q) {
                        const long ix = ox * S - P + q;
                        if (ix >= 0 && ix < W)
                            v += wm[(c * K + u) * K + q] * x[((n * C + c) * H + iy) * W + ix];
                    }
                }
            v += b[m];
            y[n * M + m] = relu && !(v > 0.0f) ? 0.0f : v;
        }
    }
}
"""

# g = dy · [y > 0] (relu) into g; per filter bank m: db = Σ_n g, dw[m] = Σ_n g[n, m] · its
# window of x[n] (the bank's row stays in cache); with input_grad, dx by blocks of LOCAL_IMAGES
# images (each work item owns its images' dx, and reads w once per block), zeroed first
HOST_LOCAL_BWD = r"""
$kernel local_bwd(const float *$restrict x, const float *$restrict w,
                  const float *$restrict y, const float *$restrict dy, float *$restrict g,
                  float *$restrict dw, float *$restrict db, float *$restrict dx, long N, long C,
                  long H, long W, long O, long K, long S, long P, long Ho, long Wo, long relu,
                  long input_grad)
{
    const long M = O * Ho * Wo, B = 8, blocks = (N + B - 1) / B;
    for (long i = 0; i < N * M; ++i)
        g[i] = relu && !(y[i] > 0.0f) ? 0.0f : dy[i];
    $parallel if (N * M * C * K * K > SERIAL)
    for (long m = 0; m < M; ++m) {
        const long oy = (m / Wo) % Ho, ox = m % Wo;
        float *dwm = dw + m * C * K * K;
        float s = 0.0f;
        for (long i = 0; i < C * K * K; ++i)
            dwm[i] = 0.0f;
        for (long n = 0; n < N; ++n) {
            const float gm = g[n * M + m];
            s += gm;
            for (long c = 0; c < C; ++c)
                for (long u = 0; u < K; ++u) {
                    const long iy = oy * S - P + u;
                    if (iy < 0 || iy >= H)
                        continue;
                    for (long q = 0; q < K; ++q) {
                        const long ix = ox * S - P + q;
                        if (ix >= 0 && ix < W)
                            dwm[(c * K + u) * K + q] += gm * x[((n * C + c) * H + iy) * W + ix];
                    }
                }
        }
        db[m] = s;
    }
    if (!input_grad)
        return;
    $parallel if (N * M * C * K * K > SERIAL)
    for (long bl = 0; bl < blocks; ++bl) {
        const long n0 = bl * B, n1 = n0 + B < N ? n0 + B : N;
        for (long i = n0 * C * H * W; i < n1 * C * H * W; ++i)
            dx[i] = 0.0f;
        for (long m = 0; m < M; ++m) {
            const long oy = (m / Wo) % Ho, ox = m % Wo;
            const float *wm = w + m * C * K * K;
            for (long n = n0; n < n1; ++n) {
                const float gm = g[n * M + m];
                float *dxn = dx + n * C * H * W;
                for (long c = 0; c < C; ++c)
                    for (long u = 0; u < K; ++u) {
                        const long iy = oy * S - P + u;
                        if (iy < 0 || iy >= H)
                            continue;
                        for (long q = 0; q < K; ++q) {
                            const long ix = ox * S - P + q;
                            if (ix >= 0 && ix < W)
                                dxn[(c * H + iy) * W + ix] += wm[(c * K + u) * K + q] * gm;
                        }
                    }
            }
        }
    }
}
"""

HOST_KERNELS = [("local_fwd", "f* f* f* f* l l l l l l l l l l l", HOST_LOCAL_FWD),
                ("local_bwd", "f* f* f* f* f* f* f* f* l l l l l l l l l l l l",
                 HOST_LOCAL_BWD)]


def _host_geometry(a, x_shape, b_shape):
    n, c, h, w = x_shape
    o, ho, wo = b_shape
    return n, c, h, w, o, a["size"], a["stride"], a["pad"], ho, wo


def host_forward(run, a, x, params=(), *, relu=False):
    """The forward on the host kernels: (y, cache)."""
    w, b = (np.ascontiguousarray(p, np.float32) for p in params)
    n, _, _, _, o, _, _, _, ho, wo = geo = _host_geometry(a, x.shape, b.shape)
    y = np.empty((n, o, ho, wo), np.float32)
    run("local_fwd", x, w, b, y, *geo, int(bool(relu)))
    return y, (x, w, b.shape, y, bool(relu))


def host_backward(run, a, dy, cache, *, input_grad=True):
    x, w, b_shape, y, relu = cache
    geo = _host_geometry(a, x.shape, b_shape)
    g = np.empty_like(dy)
    dw, db = np.empty_like(w), np.empty(b_shape, np.float32)
    dx = np.empty_like(x) if input_grad else g
    run("local_bwd", x, w, y, dy, g, dw, db, dx, *geo, int(relu), int(bool(input_grad)))
    return (dx if input_grad else None), (dw, db)
