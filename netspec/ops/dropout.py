"""dropout (inverted): at train time y = x · m / (1 − p), m ~ Bernoulli(1 − p); at test time y = x.

In expectation this equals the paper's "multiply the outputs by 0.5 at test time" (§4.2).
The mask comes from the network's seeded RNG: one draw per dropout layer per training step,
for the whole layer at once, `rng.random((N, *out_shape), dtype=np.float32) >= p` (compared in
float32), then sliced per part along axis 1. See `draw_noise`.
"""
from __future__ import annotations

import numpy as np

from .base import AttrDef, Op


class Dropout(Op):
    type = "dropout"
    doc = "inverted dropout with drop probability p"
    attrs = {"p": AttrDef("float", default=0.5, minimum=0.0, maximum=0.999999,
                          doc="drop probability, 0 <= p < 1")}

    def draw_noise(self, a, shape, rng):
        return rng.random(shape, dtype=np.float32) >= np.float32(a["p"])   # the keep mask

    def forward(self, a, x, params=(), *, relu=False, train=False, noise=None):
        if not train:
            return x, None
        if noise is None or noise.shape != x.shape:
            raise ValueError(f"dropout at train time needs a keep mask of shape {x.shape}")
        scale = noise.astype(x.dtype)
        scale *= 1.0 / (1.0 - a["p"])                       # inverted: kept units scaled up
        return x * scale, scale

    def backward(self, a, dy, cache, *, input_grad=True):
        if not input_grad:
            return None, ()
        return (dy if cache is None else dy * cache), ()


OP = Dropout()
