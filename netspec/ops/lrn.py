"""lrn: local response normalisation across maps, the paper's formula (§3.3):

b[i] = a[i] / (k + α Σ_{j=max(0, i−n/2)}^{min(N−1, i+n/2)} a[j]²)^β

α is not divided by n (PyTorch's and Caffe's LRN divide it). The sum stays within each GPU's
part of the layer, as in cuda-convnet2, since the paper's GPUs communicate only at certain
layers; on one GPU it spans all maps.
"""
from __future__ import annotations

import math

from .base import AttrDef, Op


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


OP = LRN()
