"""dropout (inverted): at train time y = x · m / (1 − p), m ~ Bernoulli(1 − p); at test time y = x.

In expectation this equals the paper's "multiply the outputs by 0.5 at test time" (§4.2).
The mask comes from the network's seeded RNG.
"""
from __future__ import annotations

from .base import AttrDef, Op


class Dropout(Op):
    type = "dropout"
    doc = "inverted dropout with drop probability p"
    attrs = {"p": AttrDef("float", default=0.5, minimum=0.0, maximum=0.999999,
                          doc="drop probability, 0 <= p < 1")}


OP = Dropout()
