"""avgpool: mean over z×z windows spaced s apart. Output size floor((H − z) / s) + 1.

No padding, so every window holds z² inputs; backward spreads dy / z² over each window.
"""
from __future__ import annotations

import numpy as np

from .maxpool import Pool, pool_windows


class AvgPool(Pool):
    type = "avgpool"
    doc = "average pooling"

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        z = a["size"]
        windows = pool_windows(x.shape, z, a["stride"])
        _, _, r0, c0 = next(windows)
        y = x[:, :, r0, c0].copy()
        for _, _, rows, cols in windows:
            y += x[:, :, rows, cols]
        y *= 1.0 / (z * z)
        return y, x.shape

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        z = a["size"]
        dx = np.zeros(cache, dy.dtype)
        share = dy * (1.0 / (z * z))
        for _, _, rows, cols in pool_windows(cache, z, a["stride"]):
            dx[:, :, rows, cols] += share
        return dx, ()


OP = AvgPool()
