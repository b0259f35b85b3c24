"""avgpool: mean over z×z windows spaced s apart. Output size floor((H − z) / s) + 1."""
from __future__ import annotations

from .maxpool import Pool


class AvgPool(Pool):
    type = "avgpool"
    doc = "average pooling"


OP = AvgPool()
