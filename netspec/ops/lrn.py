"""lrn: local response normalisation across maps, the paper's formula (§3.3):

b[i] = a[i] / (k + α Σ_{j=max(0, i−n/2)}^{min(N−1, i+n/2)} a[j]²)^β

α is not divided by n (PyTorch's and Caffe's LRN divide it). The sum stays within each GPU's
part of the layer, as in cuda-convnet2, since the paper's GPUs communicate only at certain
layers; on one GPU it spans all maps.

Backward, with s[i] = k + α Σ_j a[j]² over i's window and b[i] = a[i] · s[i]^−β: the windows
are symmetric (j is in i's window exactly when i is in j's), so
dL/da[i] = dy[i] · s[i]^−β − 2αβ · a[i] · Σ_{j in i's window} dy[j] · a[j] · s[j]^(−β−1).
"""
from __future__ import annotations

import math

import numpy as np

from ..kernel import Call, Kernel, elementwise_launch, params
from .base import AttrDef, Op


def window_sum(v: np.ndarray, n: int) -> np.ndarray:
    """out[:, i] = Σ v[:, j] for j in [i − n//2, i + n//2] ∩ [0, C − 1]: a clipped sum over
    adjacent channels (axis 1), one shifted add per offset."""
    out = v.copy()
    for d in range(1, n // 2 + 1):
        out[:, d:] += v[:, :-d]
        out[:, :-d] += v[:, d:]
    return out


def negative_power(s: np.ndarray, beta: float) -> np.ndarray:
    """s^−β. The paper's β = 0.75 (and 0.5, 1) by square roots, several times faster than
    np.power's generic pow."""
    if beta == 0.75:
        r = np.sqrt(s)
        r *= np.sqrt(r)                                      # s^(1/2) · s^(1/4)
        return np.reciprocal(r, out=r)
    if beta == 0.5:
        r = np.sqrt(s)
        return np.reciprocal(r, out=r)
    if beta == 1.0:
        return np.reciprocal(s)
    return np.power(s, -beta)


class LRN(Op):
    type = "lrn"
    doc = "local response normalisation across adjacent maps (paper's formula)"
    grouped = True
    spans_channels = True
    colour, label = "#93cbbf", "response norm."
    spatial_input = True
    attrs = {
        "size": AttrDef("int", required=True, minimum=1, doc="n, adjacent maps summed"),
        "alpha": AttrDef("float", default=1e-4, minimum=0.0),
        "beta": AttrDef("float", default=0.75, minimum=0.0),
        "k": AttrDef("float", default=2.0, minimum=0.0),
    }

    def describe(self, a):
        return f"LRN n={a['size']}"

    def check(self, a, in_shape, report):
        if a["size"] % 2 == 0:
            report("size", f"size {a['size']} must be odd, so the window is centred on the map")
        if a["k"] == 0 and a["beta"] > 0:
            report("k", "k must be positive, or the normalisation divides by zero on a zero input")
        return True

    def part_macs(self, a, in_shape, out_shape, in_ch, out_ch):
        # the sum of squares over the window: n multiply-adds per output element
        return out_ch * math.prod(out_shape[1:]) * a["size"]

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        scale = window_sum(x * x, a["size"])
        scale *= a["alpha"]
        scale += a["k"]
        r = negative_power(scale, a["beta"])                  # s^−β
        return x * r, (x, scale, r)

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        x, scale, r = cache
        t = dy * x
        t *= r
        t /= scale                                            # dy · a · s^(−β−1)
        dx = window_sum(t, a["size"])
        dx *= x
        dx *= -2.0 * a["alpha"] * a["beta"]
        dx += dy * r
        return dx, ()


    onnx_per_part = True          # the window stops at each part's edges (§3.3)

    def onnx_node(self, a):
        # ONNX (like Caffe and PyTorch) divides alpha by size: bias + alpha/size · Σ x².
        # The paper's sum is k + alpha · Σ x², so the exported alpha is alpha · size.
        return "LRN", {"size": a["size"], "alpha": a["alpha"] * a["size"],
                       "beta": a["beta"], "bias": a["k"]}

    def torch(self, a, *, relu=False, groups=1, train=True, noise=None):
        import torch.nn.functional as F

        def lrn(x):
            # torch divides alpha by n; the paper (and netspec) does not
            return F.local_response_norm(x, a["size"], alpha=a["alpha"] * a["size"],
                                         beta=a["beta"], k=a["k"])
        return lrn


OP = LRN()


# -- kernel templates ----------------------------------------------------------------------------
# Owned by the kernel compiler (netspec.codegen); one text, rendered in CUDA C and OpenCL C.
# Device layout (C, N, H, W): the maps of one pixel are PIX = N·H·W elements apart, and C is
# this part's channel count, so the window stops at the part's edges (the paper's per-GPU sum).
# The forward keeps s = k + α Σ a² in a scratch buffer `scale` for the backward.

# One pass per pixel: a work-item walks the C maps of one pixel with a running window sum,
# adding the map entering the window and subtracting the one leaving it, so each input is read
# twice instead of n times (and the launch reads PIX consecutive pixels per map: coalesced).
# s^-β uses square roots for the paper's β = 0.75 (pow is a slow library call on PoCL).

LRN_FWD = r"""
$kernel $name($params)
{
    const int p = $gid0;
    if (p >= ${PIX})
        return;
    float sum = 0.0f;
    for (int j = 0; j < ${HALF} && j < ${C}; ++j) {
        const float a = x[j * ${PIX} + p];
        sum += a * a;
    }
    for (int c = 0; c < ${C}; ++c) {
        if (c + ${HALF} < ${C}) {
            const float a = x[(c + ${HALF}) * ${PIX} + p];
            sum += a * a;
        }
        if (c - ${HALF} - 1 >= 0) {
            const float a = x[(c - ${HALF} - 1) * ${PIX} + p];
            sum -= a * a;
        }
        const int e = c * ${PIX} + p;
        const float s = ${K} + ${ALPHA} * sum;
        @NEGPOW@
        scale[e] = s;
        y[e] = x[e] * r;
    }
}
"""

# dL/da_i = dy_i s_i^-β − 2αβ a_i Σ_{j ∈ window(i)} dy_j y_j / s_j  (the window is symmetric),
# the window sum running along the maps as in the forward.
LRN_BWD = r"""
$kernel $name($params)
{
    const int p = $gid0;
    if (p >= ${PIX})
        return;
    float sum = 0.0f;
    for (int j = 0; j < ${HALF} && j < ${C}; ++j) {
        const int f = j * ${PIX} + p;
        sum += dy[f] * y[f] / scale[f];
    }
    for (int c = 0; c < ${C}; ++c) {
        if (c + ${HALF} < ${C}) {
            const int f = (c + ${HALF}) * ${PIX} + p;
            sum += dy[f] * y[f] / scale[f];
        }
        if (c - ${HALF} - 1 >= 0) {
            const int f = (c - ${HALF} - 1) * ${PIX} + p;
            sum -= dy[f] * y[f] / scale[f];
        }
        const int e = c * ${PIX} + p;
        const float s = scale[e];
        @NEGPOW@
        dx[e] = dy[e] * r - ${TWO_ALPHA_BETA} * x[e] * sum;
    }
}
"""


def negative_power_c(beta: float) -> str:
    """C statements setting `r = s^-β` (the device twin of `negative_power`)."""
    if beta == 0.75:
        return "float r = $rsqrt(s); r *= $sqrt(r);"          # s^-1/2 · s^-1/4
    if beta == 0.5:
        return "const float r = $rsqrt(s);"
    if beta == 1.0:
        return "const float r = 1.0f / s;"
    return "const float r = $pow(s, -${BETA});"


def _consts(c) -> dict:
    a = c.attrs
    return dict(C=c.out_shape[0], PIX=c.batch * math.prod(c.out_shape[1:]), HALF=a["size"] // 2,
                K=float(a["k"]), ALPHA=float(a["alpha"]), BETA=float(a["beta"]),
                TWO_ALPHA_BETA=2.0 * float(a["alpha"]) * float(a["beta"]))


def scratch_buffers(c) -> dict:
    return {"scale": c.out_elements}


def _template(text: str, c) -> str:
    return text.replace("@NEGPOW@", negative_power_c(float(c.attrs["beta"])))


def forward_kernels(c):
    k = _consts(c)
    gs, ls = elementwise_launch(k["PIX"])
    return [Call(Kernel(
        f"{c.prefix}_fwd", _template(LRN_FWD, c), params("in x", "out y", "out scale"), k,
        gs, ls, flops=c.out_elements * (2 * c.attrs["size"] + 4), layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} LRN: y = x / (k + alpha * sum_window x^2)^beta, "
            f"n={c.attrs['size']} maps, clipped to this part's {k['C']}\n"
            f"launch: one work-item per pixel ({k['PIX']}), walking its {k['C']} maps with a "
            f"running window sum"),
        ("x", "y", "scale"))]


def backward_kernels(c):
    if not c.input_grad:
        return []
    k = _consts(c)
    gs, ls = elementwise_launch(k["PIX"])
    return [Call(Kernel(
        f"{c.prefix}_bwd", _template(LRN_BWD, c),
        params("in dy", "in x", "in y", "in scale", "out dx"), k, gs, ls, flops=c.out_elements * (3 * c.attrs["size"] + 6), layer=c.layer.name,
        doc=f"{c.layer.name} part {c.part.index} LRN gradient: dx_i = dy_i s_i^-beta - "
            f"2 alpha beta x_i sum_(j in window(i)) dy_j y_j / s_j\n"
            f"launch: one work-item per pixel ({k['PIX']}), walking its {k['C']} maps with a "
            f"running window sum"),
        ("dy", "x", "y", "scale", "dx"))]
