"""maxpool: max over z×z windows spaced s apart; overlapping when z > s (§3.4).

Output size is floor((H − z) / s) + 1. The gradient goes to the window's argmax (the first one
in row-major order on ties).
"""
from __future__ import annotations

from .base import AttrDef, Op
from .conv import conv_out


class Pool(Op):
    type = "maxpool"
    doc = "max pooling, overlapping when size > stride"
    spatial_input = True
    attrs = {
        "size": AttrDef("int", required=True, minimum=1, doc="z, the window"),
        "stride": AttrDef("int", required=True, minimum=1, doc="s, the spacing"),
    }

    def check(self, a, in_shape, report):
        _, h, w = in_shape
        if a["size"] > h or a["size"] > w:
            report("size", f"window {a['size']} is larger than the input {h}x{w}")
            return False
        return True

    def output_shape(self, a, in_shape):
        c, h, w = in_shape
        return (c, conv_out(h, a["size"], a["stride"], 0), conv_out(w, a["size"], a["stride"], 0))


OP = Pool()
