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

from .base import AttrDef, Op


def window_sum(v: np.ndarray, n: int) -> np.ndarray:
    """out[:, i] = Σ v[:, j] for j in [i − n//2, i + n//2] ∩ [0, C − 1]: a clipped sum over
    adjacent channels (axis 1), one shifted add per offset."""
    out = v.copy()
    for d in range(1, n // 2 + 1):
        out[:, d:] += v[:, :-d]
        out[:, :-d] += v[:, d:]
    return out


class LRN(Op):
    type = "lrn"
    doc = "local response normalisation across adjacent maps (paper's formula)"
    spatial_input = True
    attrs = {
        "size": AttrDef("int", required=True, minimum=1, doc="n, adjacent maps summed"),
        "alpha": AttrDef("float", default=1e-4, minimum=0.0),
        "beta": AttrDef("float", default=0.75, minimum=0.0),
        "k": AttrDef("float", default=2.0, minimum=0.0),
    }

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
        r = np.power(scale, -a["beta"])                       # s^−β
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


OP = LRN()
