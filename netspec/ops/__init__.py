"""Layer types, one module each. `OPS` maps the spec keyword to its `Op`.

Adding a layer type means adding one module here that defines `OP`; nothing else changes.
A layer type defined outside this folder (a plugin, a test's) joins with `register(op)`.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import AttrDef, Op, ParamDef


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


def register(op: Op, *, replace: bool = False) -> Op:
    """Make `op` a layer type: specs may then use its `type` keyword. Raises ValueError when
    the keyword is taken (unless `replace`). Returns `op`."""
    if not isinstance(op, Op) or not op.type:
        raise ValueError(f"register: {op!r} is not an Op with a type")
    if op.type in OPS and not replace and OPS[op.type] is not op:
        raise ValueError(f"register: layer type '{op.type}' exists already")
    OPS[op.type] = op
    return op


def unregister(type_name: str) -> None:
    """Forget a registered layer type (tests)."""
    OPS.pop(type_name, None)


__all__ = ["AttrDef", "Op", "OPS", "ParamDef", "register", "unregister"]
