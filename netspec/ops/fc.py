"""fc: fully connected. y = x_flat · Wᵀ + b, the input flattened in (C, H, W) order.

A part holds a slice of the output neurons and reads every input part (`all`), or only its own
GPU's parts (`same-gpu`), concatenated in channel order before flattening.
"""
from __future__ import annotations

import math

import numpy as np

from .base import AttrDef, Op
from .relu import relu_mask_grad


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

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        w, b = params
        x2 = x.reshape(x.shape[0], -1)                        # (N, C·H·W), C-order
        y = x2 @ w.T
        y += b
        if relu:
            np.maximum(y, y.dtype.type(0), out=y)
        return y, (x.shape, x2, w, y if relu else None)

    def backward(self, a, dy, cache, *, input_grad=True):
        x_shape, x2, w, y = cache
        g = relu_mask_grad(dy, y) if y is not None else dy
        grads = (g.T @ x2, g.sum(axis=0))
        return ((g @ w).reshape(x_shape) if input_grad else None), grads


OP = FC()
