"""conv: 2-D convolution, cross-correlation as in PyTorch, with stride and zero padding.

y[n, o, i, j] = b[o] + Σ_c Σ_u Σ_v w[o, c, u, v] · xpad[n, c, i·s + u, j·s + v]
Output size is floor((H + 2·pad − size) / stride) + 1.
A part reads the input channels its `connect` mode gives it (its own GPU's for `same-gpu`,
all for `all`), so a `same-gpu` layer is a grouped convolution.
"""
from __future__ import annotations

from .base import AttrDef, Op


def conv_out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


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


OP = Conv()
