"""The reference backend: every layer part runs its op's NumPy math (netspec/ops/) on the host.

Arrays are host `np.ndarray`s in the net's dtype; the logical GPUs are only a partition of the
work, so a "transfer" is reading another part's array.
"""
from __future__ import annotations

import os
import platform

import numpy as np

from ..ir.graph import Layer, Part
from ..kernel.precision import round_operands
from .net import Net


class NumpyNet(Net):
    backend = "numpy"
    requires = ("NumPy",)

    @property
    def device_name(self) -> str:
        return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, NumPy)"

    def to_device(self, a):
        return a

    def to_host(self, a):
        return a

    def concat_channels(self, arrays):
        return np.concatenate(arrays, axis=1)

    def slice_channels(self, a, start, stop):
        return a[:, start:stop]

    def add(self, a, b):
        return a + b

    def part_params(self, layer: Layer, part: Part):
        if not layer.weighted:
            return ()
        slot = self._slots[layer.name, part.index]
        return tuple(self._params[n][r] for n, r in zip(slot.names, slot.rows))

    def rounds_operands(self, layer: Layer) -> bool:
        """Whether this layer's GEMMs round their operands (the recipe's `precision` other
        than fp32, on a layer whose GEMMs are the tensor cores' on CUDA: `Op.tuned`)."""
        return self.graph.recipe.precision != "fp32" and layer.op.tuned

    def _rounded(self, a):
        return round_operands(a, self.graph.recipe.precision).astype(a.dtype, copy=False)

    def forward_part(self, layer, part, x, params, *, train, noise):
        if self.rounds_operands(layer):      # r(x), r(w): what the device's loaders store
            x, params = self._rounded(x), (self._rounded(params[0]), *params[1:])
        return layer.op.forward(layer.attrs, x, params, relu=layer.relu, train=train,
                                noise=noise)

    def backward_part(self, layer, part, dy, cache, *, input_grad):
        if not self.rounds_operands(layer):
            return layer.op.backward(layer.attrs, dy, cache, input_grad=input_grad)
        # the weight and data gradients are GEMMs of r(dy) (rounding commutes with the ReLU
        # mask: r(0) = 0); the other gradients (the bias: a sum) take dy as it is
        dx, grads = layer.op.backward(layer.attrs, self._rounded(dy), cache,
                                      input_grad=input_grad)
        _, exact = layer.op.backward(layer.attrs, dy, cache, input_grad=False)
        return dx, (grads[0], *exact[1:])

    def softmax_loss(self, z, labels):
        return self.head.op.loss(z, labels)

    def softmax_proba(self, z):
        return self.head.op.forward(self.head.attrs, z)[0]
