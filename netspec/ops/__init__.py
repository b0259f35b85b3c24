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


# -- the README's table of layer types, written from the ops (their `doc` and `attrs`), so the
# documentation cannot drift from what the language accepts; tests/ops/test_language_table.py
# checks the README holds exactly `layer_table()`.

def _key_text(name, d) -> str:
    if d.kind == "flag":
        text = f"`{name}`"
    else:
        text = f"`{name} {d.kind.upper() if d.kind != 'gauss' else 'gauss(STD)|he'}`"
        if d.choices:
            text = f"`{name} {'|'.join(map(str, d.choices))}`"
    if d.default is not None and d.default is not False and d.kind != "flag":
        text += f" ({d.default:g})" if isinstance(d.default, float) else f" ({d.default})"
    if d.required:
        text += " required"
    return text + (f": {d.doc}" if d.doc else "")


def layer_table() -> str:
    """Markdown: one row per layer type (sorted), its doc and every key with its default."""
    rows = ["| type | what it computes | keys (defaults) |", "|---|---|---|"]
    for name in sorted(OPS):
        op = OPS[name]
        keys = [_key_text(k, d) for k, d in op.attrs.items()]
        extra = []
        if op.weighted and not op.channelwise:
            extra.append("the weighted keys below")
        elif not op.follows_input_parts:
            extra.append("`gpu G`")
        if op.grouped:
            extra.append("`groups G`")
        if op.joins:
            extra.append("reads 2+ inputs: `from a, b`")
        text = "; ".join(keys + extra) or "—"
        rows.append(f"| `{name}` | {op.doc.replace('|', chr(92) + '|')} | "
                    f"{text.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


__all__ = ["AttrDef", "Op", "OPS", "ParamDef", "layer_table", "register", "unregister"]
