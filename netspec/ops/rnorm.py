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

RNORM_FWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NE})
        return;
@WIN@
    float sum = 0.0f;
    for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) {
            const float a = x[base + iy * ${W} + ix];
            sum += a * a;
        }
    const float s = ${K} + ${ALPHA_N} * sum;
    @NEGPOW@
    scale[e] = s;
    y[e] = x[e] * r;
}
""".replace("@WIN@", WIN)

RNORM_BWD = r"""
$kernel $name($params)
{
    const int e = $gid0;
    if (e >= ${NE})
        return;
@ADJOINT@
    float sum = 0.0f;
    for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) {
            const int f = base + iy * ${W} + ix;
            sum += dy[f] * y[f] / scale[f];
        }
    const float s = scale[e];
    @NEGPOW@
    dx[e] = dy[e] * r - ${TWO_BETA_ALPHA_N} * x[e] * sum;
}
""".replace("@ADJOINT@", ADJOINT)


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
