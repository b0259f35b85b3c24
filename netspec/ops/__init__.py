"""Layer types, one module each. `OPS` maps the spec keyword to its `Op`.

Adding a layer type means adding one module here that defines `OP`; nothing else changes.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import AttrDef, Op


def _discover() -> dict[str, Op]:
    found: dict[str, Op] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        op = getattr(module, "OP", None)
        if isinstance(op, Op):
            found[op.type] = op
    return found


OPS: dict[str, Op] = _discover()

__all__ = ["AttrDef", "Op", "OPS"]
