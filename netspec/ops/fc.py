"""fc: fully connected. y = x_flat · Wᵀ + b, the input flattened in (C, H, W) order.

A part holds a slice of the output neurons and reads every input part (`all`), or only its own
GPU's parts (`same-gpu`), concatenated in channel order before flattening.
"""
from __future__ import annotations

import math

from .base import AttrDef, Op


class FC(Op):
    type = "fc"
    doc = "fully connected; `relu` fuses the activation"
    weighted = True
    attrs = {"outputs": AttrDef("int", required=True, minimum=1, doc="neurons")}

    def output_shape(self, a, in_shape):
        return (a["outputs"],)

    def weight_shape(self, a, in_shape, in_ch, out_ch):
        return (out_ch, in_ch * math.prod(in_shape[1:]))

    def part_macs(self, a, in_shape, out_shape, in_ch, out_ch):
        return out_ch * in_ch * math.prod(in_shape[1:])


OP = FC()
