"""cnorm: cuda-convnet's contrast normalisation within each map.

    m[p] = mean of x over win(p) ∩ map               (the pixels inside the map only)
    d    = x − m
    s[p] = k + (α / n²) · Σ_{q ∈ win(p)} d[q]²,      y[p] = x[p] · s[p]^−β

win(p) is rnorm's n×n window (ops/rnorm.py: rows [py − ⌊n/2⌋, py − ⌊n/2⌋ + n), clipped).
This is cuda-convnet's forward as its source has it (layer.cu, ContrastNormLayer::fpropActs):
`convLocalPool(images, meanDiffs, ..., size, -size/2, 1, ..., AvgPooler())` (AvgPooler divides
by the window's cells inside the image, conv_util.cuh), `meanDiffs.add(images, -1, 1)` (so
d = x − m), then `convContrastNorm(images, meanDiffs, ...)`, whose kernels take
`1 + addScale · Σ d²` and multiply the *input* x (not d) by its −pow power. α is the cfg's
`scale` (layer.py divides it by size², as for rnorm), β its `pow`, k = 1 (cuda-convnet2's
`minDiv`).

The backward here is the exact derivative of that forward (mean included). cuda-convnet's own
bpropActs (`convContrastNormUndo`) reuses rnorm's undo with d in place of x and takes the mean
as a constant, an approximation; netspec does not copy it. With g[p] = dy · y / s,
    e[q]     = −2β (α/n²) · d[q] · Σ_{p : q ∈ win(p)} g[p]       (dL/dd)
    dL/dx[q] = dy[q] · s[q]^−β + e[q] − Σ_{p : q ∈ win(p)} e[p] / cells(p)
"""
from __future__ import annotations

import math

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import AttrDef, Op
from .lrn import negative_power
from .rnorm import (
    ADJOINT,
    HOST_HELPERS,
    T_GATHER,
    WIN,
    normalise_fwd,
    onnx_normalise,
    torch_window_sum,
    window_consts,
    window_sum,
    with_negpow,
)


def window_cells(h: int, w: int, n: int) -> np.ndarray:
    """cells(p): how many pixels of win(p) lie inside an h×w map, shape (h, w), float64."""
    return window_sum(np.ones((h, w)), n)


class CNorm(Op):
    type = "cnorm"
    doc = ("contrast normalisation within each map (cuda-convnet's cnorm): "
           "x / (k + α/size² Σ (x − window mean)²)^β")
    colour, label = "#cfe6b8", "contrast norm."
    spatial_input = True
    attrs = {
        "size": AttrDef("int", required=True, minimum=1, doc="n, the window's side in pixels"),
        "alpha": AttrDef("float", default=1e-4, minimum=0.0,
                         doc="divided by size² (cuda-convnet's `scale`)"),
        "beta": AttrDef("float", default=0.75, minimum=0.0, doc="cuda-convnet's `pow`"),
        "k": AttrDef("float", default=1.0, minimum=0.0, doc="cuda-convnet2's `minDiv`"),
    }

    def describe(self, a):
        return f"cnorm {a['size']}×{a['size']}"

    def check(self, a, in_shape, report):
        if a["k"] == 0 and a["beta"] > 0:
            report("k", "k must be positive, or the normalisation divides by zero on a flat map")
        return True

    def part_macs(self, a, in_shape, out_shape, in_ch, out_ch):
        # the window mean and the window's sum of squares: 2n² per output element
        return out_ch * math.prod(out_shape[1:]) * 2 * a["size"] ** 2

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        n = a["size"]
        cells = window_cells(*x.shape[-2:], n).astype(x.dtype)
        d = x - window_sum(x, n) / cells
        s = window_sum(d * d, n)
        s *= a["alpha"] / (n * n)
        s += a["k"]
        r = negative_power(s, a["beta"])
        return x * r, (x, d, s, r, cells)

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        x, d, s, r, cells = cache
        n = a["size"]
        g = dy * x
        g *= r
        g /= s                                              # dy · y / s
        e = window_sum(g, n, adjoint=True)
        e *= d
        e *= -2.0 * a["beta"] * a["alpha"] / (n * n)        # dL/dd
        dx = dy * r
        dx += e
        dx -= window_sum(e / cells, n, adjoint=True)
        return dx, ()

    def onnx_graph(self, a, x: str, out: str):
        """The window mean is ONNX's AveragePool without the pad counted (count_include_pad
        0: Σ / cells), d = x − mean, then rnorm's nodes on d (ops/rnorm.py)."""
        n = a["size"]
        lo, hi = n // 2, n - 1 - n // 2
        mean = ("AveragePool", [x], [f"{out}.mean"],
                {"kernel_shape": [n, n], "strides": [1, 1], "pads": [lo, lo, hi, hi],
                 "count_include_pad": 0})
        diff = ("Sub", [x, f"{out}.mean"], [f"{out}.diff"], {})
        nodes, floats = onnx_normalise(a, x, f"{out}.diff", out)
        return [mean, diff, *nodes], floats

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        def cnorm(x):
            import torch
            n = a["size"]
            cells = torch_window_sum(torch.ones_like(x), n)
            d = x - torch_window_sum(x, n) / cells
            s = a["k"] + (a["alpha"] / (n * n)) * torch_window_sum(d * d, n)
            return x * s.pow(-a["beta"])
        return cnorm


OP = CNorm()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# Layout and windows as rnorm's (ops/rnorm.py: WIN, ADJOINT), one work-item per element in
# every kernel. Forward: the mean difference d into scratch `diff`, then s and y. Backward:
# t = dy·y/s, e = dL/dd (scratch `dd`), then dx: three passes, each a gather.

CNORM_DIFF = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NE})
        return;
@WIN@
    float sum = 0.0f;
    for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix)
            sum += x[base + iy * ${W} + ix];
    diff[e] = x[e] - sum / (float)((y1 - y0) * (x1 - x0));
}
""".replace("@WIN@", WIN)

CNORM_FWD = normalise_fwd("diff")

CNORM_BWD_D = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NE})
        return;
@T_GATHER@
    dd[e] = -${TWO_BETA_ALPHA_N} * diff[e] * sum;
}
""".replace("@T_GATHER@", T_GATHER)

# e[p] / cells(p): cells(p) = the rows of win(p) inside the map times its columns
CNORM_BWD_X = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NE})
        return;
@ADJOINT@
    float sum = 0.0f;
    for (int iy = y0; iy < y1; ++iy) {
        const int ry = (iy - ${LO} + ${Z} < ${H} ? iy - ${LO} + ${Z} : ${H})
                       - (iy - ${LO} > 0 ? iy - ${LO} : 0);
        for (int ix = x0; ix < x1; ++ix) {
            const int rx = (ix - ${LO} + ${Z} < ${W} ? ix - ${LO} + ${Z} : ${W})
                           - (ix - ${LO} > 0 ? ix - ${LO} : 0);
            sum += dd[base + iy * ${W} + ix] / (float)(ry * rx);
        }
    }
    const float s = scale[e];
    @NEGPOW@
    dx[e] = dy[e] * r + dd[e] - sum;
}
""".replace("@ADJOINT@", ADJOINT)


def scratch_buffers(c) -> dict:
    return {"scale": c.out_elements, "diff": c.out_elements, "dd": c.out_elements}


def _call(c, name, template, names, roles, flops, doc):
    k = window_consts(c)
    gs, ls = elementwise_launch(k["NE"])
    return Call(Kernel(f"{c.prefix}_{name}", with_negpow(template, c), params(*names), k, gs, ls,
                       flops=k["NE"] * flops, layer=c.layer.name,
                       doc=f"{c.layer.name} part {c.part.index} cnorm: {doc}\n"
                           f"launch: one work-item per element ({k['NE']})"), roles)


def forward_kernels(c):
    z2 = c.attrs["size"] ** 2
    return [
        _call(c, "fwd_diff", CNORM_DIFF, ("in x", "out diff"), ("x", "diff"), z2 + 2,
              "d = x - mean of x over the window inside the map"),
        _call(c, "fwd", CNORM_FWD, ("in x", "in diff", "out y", "out scale"),
              ("x", "diff", "y", "scale"), 2 * z2 + 4,
              "y = x / (k + alpha/n^2 * sum_win d^2)^beta"),
    ]


def backward_kernels(c):
    if not c.input_grad:
        return []
    z2 = c.attrs["size"] ** 2
    return [
        _call(c, "bwd_d", CNORM_BWD_D, ("in dy", "in y", "in scale", "in diff", "out dd"),
              ("dy", "y", "scale", "diff", "dd"), 3 * z2 + 3,
              "dd_q = -2 beta alpha/n^2 d_q sum_(p: q in win(p)) dy_p y_p / s_p"),
        _call(c, "bwd", CNORM_BWD_X, ("in dy", "in scale", "in dd", "out dx"),
              ("dy", "scale", "dd", "dx"), 2 * z2 + 6,
              "dx_q = dy_q s_q^-beta + dd_q - sum_(p: q in win(p)) dd_p / cells(p)"),
    ]


# -- host kernels (the cpu backend: codegen/cpu_kernels.py collects HOST_KERNELS) --------------
# As rnorm's (its helpers host_window and host_neg_pow, behind their include guard): one
# (image, channel) plane per work item, the reference's passes in turn within it.

HOST_CNORM_FWD = r"""
$kernel cnorm_fwd(const float *$restrict x, float *$restrict y, float *$restrict scale,
                  float *$restrict diff, long P, long H, long W, long n, float alpha_n,
                  float beta, float k)
{
    $parallel if (P * H * W * n * n > SERIAL)
    for (long pl = 0; pl < P; ++pl) {
        const long o = pl * H * W;
        const float *xp = x + o;
        float *dp = diff + o, *yp = y + o, *sp = scale + o;
        for (long i = 0; i < H; ++i)
            for (long j = 0; j < W; ++j) {
                const long lo = n / 2;
                const long r = (i - lo + n < H ? i - lo + n : H) - (i - lo > 0 ? i - lo : 0);
                const long c = (j - lo + n < W ? j - lo + n : W) - (j - lo > 0 ? j - lo : 0);
                dp[i * W + j] = xp[i * W + j]
                                - host_window(xp, H, W, n, i, j, 0) / (float)(r * c);
            }
        for (long p = 0; p < H * W; ++p) yp[p] = dp[p] * dp[p];    /* d² staged in y */
        for (long i = 0; i < H; ++i)
            for (long j = 0; j < W; ++j)
                sp[i * W + j] = host_window(yp, H, W, n, i, j, 0) * alpha_n + k;
        for (long p = 0; p < H * W; ++p) yp[p] = xp[p] * host_neg_pow(sp[p], beta);
    }
}
"""

# t = dy·x·r/s; e = coef · d · Σ_adj t (coef = −2β·α/n²); dx = dy·r + e − Σ_adj(e / cells)
HOST_CNORM_BWD = r"""
$kernel cnorm_bwd(const float *$restrict x, const float *$restrict scale,
                  const float *$restrict diff, const float *$restrict dy, float *$restrict t,
                  float *$restrict e, float *$restrict dx, long P, long H, long W, long n,
                  float beta, float coef)
{
    $parallel if (P * H * W * n * n > SERIAL)
    for (long pl = 0; pl < P; ++pl) {
        const long o = pl * H * W, lo = n / 2;
        for (long p = o; p < o + H * W; ++p)
            t[p] = dy[p] * x[p] * host_neg_pow(scale[p], beta) / scale[p];
        for (long i = 0; i < H; ++i)
            for (long j = 0; j < W; ++j) {
                const long p = o + i * W + j;
                e[p] = host_window(t + o, H, W, n, i, j, 1) * diff[p] * coef;
            }
        for (long i = 0; i < H; ++i)                     /* t <- e / cells, for the gather */
            for (long j = 0; j < W; ++j) {
                const long r = (i - lo + n < H ? i - lo + n : H) - (i - lo > 0 ? i - lo : 0);
                const long c = (j - lo + n < W ? j - lo + n : W) - (j - lo > 0 ? j - lo : 0);
                t[o + i * W + j] = e[o + i * W + j] / (float)(r * c);
            }
        for (long i = 0; i < H; ++i)
            for (long j = 0; j < W; ++j) {
                const long p = o + i * W + j;
                dx[p] = dy[p] * host_neg_pow(scale[p], beta) + e[p]
                        - host_window(t + o, H, W, n, i, j, 1);
            }
    }
}
"""

HOST_KERNELS = [("cnorm_fwd", "f* f* f* f* l l l l f f f", HOST_HELPERS + HOST_CNORM_FWD),
                ("cnorm_bwd", "f* f* f* f* f* f* f* l l l l f f", HOST_CNORM_BWD)]


def host_forward(run, a, x, params=(), *, relu=False):
    """The forward on the host kernels: (y, cache)."""
    n = a["size"]
    y, s, d = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    run("cnorm_fwd", x, y, s, d, x.shape[0] * x.shape[1], x.shape[2], x.shape[3], n,
        float(np.float32(a["alpha"]) / np.float32(n * n)), a["beta"], a["k"])
    return y, (x, s, d)


def host_backward(run, a, dy, cache, *, input_grad=True):
    if not input_grad:
        return None, ()
    x, s, d = cache
    n = a["size"]
    t, e, dx = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    run("cnorm_bwd", x, s, d, dy, t, e, dx, x.shape[0] * x.shape[1], x.shape[2], x.shape[3],
        n, a["beta"], float(-2.0 * a["beta"] * a["alpha"] / (n * n)))
    return dx, ()
