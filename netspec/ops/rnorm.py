"""rnorm: response normalisation within each map over a square window (cuda-convnet's `rnorm`,
Caffe's LRN with `norm_region: WITHIN_CHANNEL`).

    s[p] = k + (α / n²) · Σ_{q ∈ win(p)} x[q]²,        y[p] = x[p] · s[p]^−β

win(p) is the n×n square of rows [py − ⌊n/2⌋, py − ⌊n/2⌋ + n) and the same columns, clipped to
the map (pixels outside count as zeros). Each map is normalised alone, so a layer keeps its
input's parts.

The α convention is both anchors', so their numbers carry over unchanged:
- cuda-convnet (layer.py, NormLayerParser.add_params): `scale /= size**2` for rnorm and cnorm
  (`/= size` only for the cross-map cmrnorm); the kernels (conv_util.cu, kCNorm_*) then take
  `1 + addScale · Σ`. So k = 1 (cuda-convnet2's `minDiv`, default 1), α = `scale`, β = `pow`,
  and cuda-convnet's window start is −size/2 for every size, even ones included.
- Caffe (lrn_layer.cpp, WITHIN_CHANNEL): an AVE pool of x² with pad (n − 1)/2 (dividing by n²:
  the pad counts) into a Power layer of shift 1, scale α, power −β: "(1 + alpha_/N^2 s)^-beta_".
  k is fixed at 1 there (Caffe's `k` only acts ACROSS_CHANNELS) and n must be odd.
netspec's cross-map `lrn` keeps the paper's undivided α instead (ops/lrn.py).

Backward, with g[p] = dy[p] · y[p] / s[p] (= dy · x · s^(−β−1)):
    dL/dx[q] = dy[q] · s[q]^−β − 2β (α / n²) · x[q] · Σ_{p : q ∈ win(p)} g[p]
"""
from __future__ import annotations

import math

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import AttrDef, Op
from .lrn import negative_power, negative_power_c


def window_offsets(n: int) -> range:
    """The offsets d (rows or columns) of win(p) = p + d: −⌊n/2⌋ .. n − 1 − ⌊n/2⌋."""
    return range(-(n // 2), n - n // 2)


def window_sum(v: np.ndarray, n: int, *, adjoint: bool = False) -> np.ndarray:
    """out[..., p] = Σ_{q ∈ win(p)} v[..., q] over the last two axes, clipped at the edges;
    with `adjoint`, the transposed sum Σ_{p : q ∈ win(p)} v[p] (the offsets negated). One
    shifted add per offset pair."""
    h, w = v.shape[-2:]
    out = np.zeros_like(v)
    offs = [-d for d in window_offsets(n)] if adjoint else list(window_offsets(n))
    for dy in offs:
        ya, yb = max(0, -dy), min(h, h - dy)            # out rows whose row + dy is inside
        if ya >= yb:
            continue
        for dx in offs:
            xa, xb = max(0, -dx), min(w, w - dx)
            if xa < xb:
                out[..., ya:yb, xa:xb] += v[..., ya + dy:yb + dy, xa + dx:xb + dx]
    return out


class RNorm(Op):
    type = "rnorm"
    doc = ("response normalisation within each map over a size×size window "
           "(cuda-convnet's rnorm, Caffe's LRN WITHIN_CHANNEL): x / (k + α/size² Σ x²)^β")
    colour, label = "#b7dcc9", "within-map norm."
    spatial_input = True
    attrs = {
        "size": AttrDef("int", required=True, minimum=1, doc="n, the window's side in pixels"),
        "alpha": AttrDef("float", default=1e-4, minimum=0.0,
                         doc="divided by size² (cuda-convnet's `scale`, Caffe's `alpha`)"),
        "beta": AttrDef("float", default=0.75, minimum=0.0, doc="cuda-convnet's `pow`"),
        "k": AttrDef("float", default=1.0, minimum=0.0, doc="cuda-convnet2's `minDiv`"),
    }

    def describe(self, a):
        return f"rnorm {a['size']}×{a['size']}"

    def check(self, a, in_shape, report):
        if a["k"] == 0 and a["beta"] > 0:
            report("k", "k must be positive, or the normalisation divides by zero on a zero input")
        return True

    def part_macs(self, a, in_shape, out_shape, in_ch, out_ch):
        # the window's sum of squares: n² multiply-adds per output element
        return out_ch * math.prod(out_shape[1:]) * a["size"] ** 2

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        n = a["size"]
        s = window_sum(x * x, n)
        s *= a["alpha"] / (n * n)
        s += a["k"]
        r = negative_power(s, a["beta"])
        return x * r, (x, s, r)

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        x, s, r = cache
        n = a["size"]
        g = dy * x
        g *= r
        g /= s                                              # dy · x · s^(−β−1)
        dx = window_sum(g, n, adjoint=True)
        dx *= x
        dx *= -2.0 * a["beta"] * a["alpha"] / (n * n)
        dx += dy * r
        return dx, ()

    def onnx_graph(self, a, x: str, out: str):
        """ONNX's LRN normalises across channels only, so the within-map form is five nodes:
        AveragePool of x² over win() with the pad counted (count_include_pad: Σ / n²
        exactly, the window padded as win() reaches), · α, + k, ^−β, · x."""
        return onnx_normalise(a, x, x, out)

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        def rnorm(x):
            n = a["size"]
            s = a["k"] + (a["alpha"] / (n * n)) * torch_window_sum(x * x, n)
            return x * s.pow(-a["beta"])
        return rnorm


def onnx_normalise(a: dict, x: str, d: str, out: str):
    """The ONNX nodes of y = x · (k + α · mean_win(d²))^−β (codegen/onnx_export.py's
    `subgraph`), the mean over the n×n window with the pad counted, i.e. Σ / n². Returns
    (nodes, float constants)."""
    n = a["size"]
    lo, hi = n // 2, n - 1 - n // 2
    pool = {"kernel_shape": [n, n], "strides": [1, 1], "pads": [lo, lo, hi, hi],
            "count_include_pad": 1}
    c = {f"{out}.alpha": a["alpha"], f"{out}.k": a["k"], f"{out}.minus_beta": -a["beta"]}
    nodes = [("Mul", [d, d], [f"{out}.sq"], {}),
             ("AveragePool", [f"{out}.sq"], [f"{out}.mean_sq"], pool),
             ("Mul", [f"{out}.mean_sq", f"{out}.alpha"], [f"{out}.scaled"], {}),
             ("Add", [f"{out}.scaled", f"{out}.k"], [f"{out}.s"], {}),
             ("Pow", [f"{out}.s", f"{out}.minus_beta"], [f"{out}.r"], {}),
             ("Mul", [x, f"{out}.r"], [out], {})]
    return nodes, c


def torch_window_sum(v, n: int):
    """window_sum in PyTorch: each map zero-padded as win() reaches, summed by an n×n conv of
    ones (exact, and differentiable)."""
    import torch
    import torch.nn.functional as F
    lo, hi = n // 2, n - 1 - n // 2
    shape = v.shape
    planes = F.pad(v.reshape(-1, 1, *shape[-2:]), (lo, hi, lo, hi))
    ones = torch.ones((1, 1, n, n), dtype=v.dtype)
    return F.conv2d(planes, ones).reshape(shape)


OP = RNorm()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# Device layout (C, N, H, W): every (channel, image) plane is H·W contiguous floats, and the
# window never leaves its plane, so one work-item per element with plane = e / (H·W).
# WIN(py, px) = rows [py − LO, py − LO + Z) ∩ [0, H), the same columns; the pixels p whose window
# holds q are rows (qy + LO − Z, qy + LO] ∩ [0, H) (the adjoint).

WIN = r"""
    const int plane = e / (${H} * ${W}), py = (e / ${W}) % ${H}, px = e % ${W};
    const int base = plane * ${H} * ${W};
    const int y0 = py - ${LO} > 0 ? py - ${LO} : 0, x0 = px - ${LO} > 0 ? px - ${LO} : 0;
    const int y1 = py - ${LO} + ${Z} < ${H} ? py - ${LO} + ${Z} : ${H};
    const int x1 = px - ${LO} + ${Z} < ${W} ? px - ${LO} + ${Z} : ${W};
"""
ADJOINT = r"""
    const int plane = e / (${H} * ${W}), qy = (e / ${W}) % ${H}, qx = e % ${W};
    const int base = plane * ${H} * ${W};
    const int y0 = qy + ${LO} - ${Z} + 1 > 0 ? qy + ${LO} - ${Z} + 1 : 0;
    const int x0 = qx + ${LO} - ${Z} + 1 > 0 ? qx + ${LO} - ${Z} + 1 : 0;
    const int y1 = qy + ${LO} + 1 < ${H} ? qy + ${LO} + 1 : ${H};
    const int x1 = qx + ${LO} + 1 < ${W} ? qx + ${LO} + 1 : ${W};
"""

def normalise_fwd(d: str) -> str:
    """The forward kernel of y = x · (k + α/n² Σ_win d²)^−β, the sum over buffer `d`: rnorm's
    (d = x) and cnorm's (d = x − window mean, its scratch `diff`)."""
    return r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NE})
        return;
@WIN@
    float sum = 0.0f;
    for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) {
            const float a = @D@[base + iy * ${W} + ix];
            sum += a * a;
        }
    const float s = ${K} + ${ALPHA_N} * sum;
    @NEGPOW@
    scale[e] = s;
    y[e] = x[e] * r;
}
""".replace("@WIN@", WIN).replace("@D@", d)


# t summed over the pixels whose window holds e: Σ dy · y / s (rnorm's and cnorm's backward)
T_GATHER = r"""@ADJOINT@
    float sum = 0.0f;
    for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) {
            const int f = base + iy * ${W} + ix;
            sum += dy[f] * y[f] / scale[f];
        }""".replace("@ADJOINT@", ADJOINT)

RNORM_FWD = normalise_fwd("x")

RNORM_BWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NE})
        return;
@T_GATHER@
    const float s = scale[e];
    @NEGPOW@
    dx[e] = dy[e] * r - ${TWO_BETA_ALPHA_N} * x[e] * sum;
}
""".replace("@T_GATHER@", T_GATHER)


def window_consts(c) -> dict:
    """The compile-time constants of a within-map window kernel on this part."""
    a = c.attrs
    n = a["size"]
    _, h, w = c.out_shape
    return dict(NE=c.out_elements, H=h, W=w, Z=n, LO=n // 2, K=float(a["k"]),
                BETA=float(a["beta"]), ALPHA_N=float(a["alpha"]) / (n * n),
                TWO_BETA_ALPHA_N=2.0 * float(a["beta"]) * float(a["alpha"]) / (n * n))


def with_negpow(text: str, c) -> str:
    return text.replace("@NEGPOW@", negative_power_c(float(c.attrs["beta"])))


def scratch_buffers(c) -> dict:
    return {"scale": c.out_elements}


def forward_kernels(c):
    k = window_consts(c)
    gs, ls = elementwise_launch(k["NE"])
    return [Call(Kernel(
        f"{c.prefix}_fwd", with_negpow(RNORM_FWD, c), params("in x", "out y", "out scale"), k,
        gs, ls, flops=k["NE"] * (2 * k["Z"] ** 2 + 4), layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} rnorm: y = x / (k + alpha/n^2 * sum_win x^2)"
            f"^beta over the {k['Z']}x{k['Z']} window in the map\n"
            f"launch: one work-item per element ({k['NE']})"),
        ("x", "y", "scale"))]


def backward_kernels(c):
    if not c.input_grad:
        return []
    k = window_consts(c)
    gs, ls = elementwise_launch(k["NE"])
    return [Call(Kernel(
        f"{c.prefix}_bwd", with_negpow(RNORM_BWD, c),
        params("in dy", "in x", "in y", "in scale", "out dx"), k, gs, ls,
        flops=k["NE"] * (3 * k["Z"] ** 2 + 6), layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} rnorm gradient: dx_q = dy_q s_q^-beta - "
            f"2 beta alpha/n^2 x_q sum_(p: q in win(p)) dy_p y_p / s_p\n"
            f"launch: one work-item per element ({k['NE']})"),
        ("dy", "x", "y", "scale", "dx"))]


# -- host kernels (the cpu backend: codegen/cpu_kernels.py collects HOST_KERNELS) --------------
# C with OpenMP over (image, channel) planes, layout NCHW as the reference's; each window sum
# is added in window_sum's order (rows, then columns, of the offsets), s^−β as
# negative_power; the helpers sit behind an include guard, so every module that uses them
# renders them. `host_forward`/`host_backward` run them: run(name, *args) passes arrays
# (C-contiguous float32) by pointer and numbers as they are.

HOST_HELPERS = r"""
#ifndef NETSPEC_WINDOW_HELPERS
#define NETSPEC_WINDOW_HELPERS
static inline float host_neg_pow(float s, float beta)
{
    if (beta == 0.75f) { float q = $sqrt(s); q *= $sqrt(q); return 1.0f / q; }
    if (beta == 0.5f) return 1.0f / $sqrt(s);
    if (beta == 1.0f) return 1.0f / s;
    return $pow(s, -beta);
}

/* Σ of v over win(i, j) (adj 0) or over the pixels whose window holds (i, j) (adj 1), in an
   H x W plane, window rows [i - lo, i - lo + n) clipped (adjoint: (i + lo - n, i + lo]) */
static inline float host_window(const float *$restrict v, long H, long W, long n, long i,
                                long j, int adj)
{
    const long lo = n / 2;
    const long a = adj ? i + lo - n + 1 : i - lo, b = adj ? j + lo - n + 1 : j - lo;
    const long y0 = a > 0 ? a : 0, y1 = a + n < H ? a + n : H;
    const long x0 = b > 0 ? b : 0, x1 = b + n < W ? b + n : W;
    float s = 0.0f;
    if (adj) {                         /* offsets in window_sum's adjoint order: -d rising */
        for (long y = y1 - 1; y >= y0; --y)
            for (long x = x1 - 1; x >= x0; --x)
                s += v[y * W + x];
    } else {
        for (long y = y0; y < y1; ++y)
            for (long x = x0; x < x1; ++x)
                s += v[y * W + x];
    }
    return s;
}
#endif
"""

HOST_RNORM_FWD = r"""
$kernel rnorm_fwd(const float *$restrict x, float *$restrict y, float *$restrict scale,
                  long P, long H, long W, long n, float alpha_n, float beta, float k)
{
    $parallel if (P * H * W * n * n > SERIAL)
    for (long pl = 0; pl < P; ++pl) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * H * W, *sp = scale + pl * H * W, *sq = sp;
        for (long p = 0; p < H * W; ++p) yp[p] = xp[p] * xp[p];    /* x² staged in y */
        for (long i = 0; i < H; ++i)
            for (long j = 0; j < W; ++j)
                sq[i * W + j] = host_window(yp, H, W, n, i, j, 0) * alpha_n + k;
        for (long p = 0; p < H * W; ++p) yp[p] = xp[p] * host_neg_pow(sp[p], beta);
    }
}
"""

# dx = dy·r + coef · x · Σ_adj(dy·x·r/s), coef = −2β·α/n²; t is scratch of x's shape
HOST_RNORM_BWD = r"""
$kernel rnorm_bwd(const float *$restrict x, const float *$restrict scale,
                  const float *$restrict dy, float *$restrict t, float *$restrict dx,
                  long P, long H, long W, long n, float beta, float coef)
{
    $parallel if (P * H * W * n * n > SERIAL)
    for (long pl = 0; pl < P; ++pl) {
        const long o = pl * H * W;
        for (long p = 0; p < H * W; ++p)
            t[o + p] = dy[o + p] * x[o + p] * host_neg_pow(scale[o + p], beta) / scale[o + p];
        for (long i = 0; i < H; ++i)
            for (long j = 0; j < W; ++j) {
                const long p = o + i * W + j;
                dx[p] = host_window(t + o, H, W, n, i, j, 1) * x[p] * coef
                        + dy[p] * host_neg_pow(scale[p], beta);
            }
    }
}
"""

HOST_KERNELS = [("rnorm_fwd", "f* f* f* l l l l f f f", HOST_HELPERS + HOST_RNORM_FWD),
                ("rnorm_bwd", "f* f* f* f* f* l l l l f f", HOST_RNORM_BWD)]


def host_forward(run, a, x, params=(), *, relu=False):
    """The forward on the host kernels: (y, cache), as `forward`'s."""
    n = a["size"]
    y, s = np.empty_like(x), np.empty_like(x)
    planes = x.shape[0] * x.shape[1]
    run("rnorm_fwd", x, y, s, planes, x.shape[2], x.shape[3], n,
        float(np.float32(a["alpha"]) / np.float32(n * n)), a["beta"], a["k"])
    return y, (x, s)


def host_backward(run, a, dy, cache, *, input_grad=True):
    if not input_grad:
        return None, ()
    x, s = cache
    n = a["size"]
    t, dx = np.empty_like(x), np.empty_like(x)
    run("rnorm_bwd", x, s, dy, t, dx, x.shape[0] * x.shape[1], x.shape[2], x.shape[3], n,
        a["beta"], float(-2.0 * a["beta"] * a["alpha"] / (n * n)))
    return dx, ()
