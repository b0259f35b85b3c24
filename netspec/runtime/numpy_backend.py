"""The reference backend: every layer part runs its op's NumPy math (netspec/ops/) on the host.

Arrays are host `np.ndarray`s in the net's dtype; the logical GPUs are only a partition of the
work, so a "transfer" is reading another part's array.
"""
from __future__ import annotations

import os
import platform

import numpy as np

from ..ir.graph import Layer, Part
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

    def forward_part(self, layer, part, x, params, *, train, noise):
        return layer.op.forward(layer.attrs, x, params, relu=layer.relu, train=train,
                                noise=noise)

    def backward_part(self, layer, part, dy, cache, *, input_grad):
        return layer.op.backward(layer.attrs, dy, cache, input_grad=input_grad)

    def softmax_loss(self, z, labels):
        return self.head.op.loss(z, labels)

    def softmax_proba(self, z):
        return self.head.op.forward(self.head.attrs, z)[0]
