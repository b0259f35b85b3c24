"""Tampered copies of a JSON artefact, one field at a time: for the property-style tests of
every reader (tests/train/test_artefacts.py, tests/data/test_manifest_paths.py).

`mutations(doc, schema)` walks a valid document along its schema (netspec/schema.py) and
yields, for every field present (nested objects, the first item of each list, each entry of a
fixed-length tuple, the first entry of a map):
    ("wrong type", path, copy)      the field holds a value of another JSON kind
    ("nested", path, copy)          the field's value wrapped one level deeper
    ("missing", path, copy)         the field removed, where the schema requires it
The replacement values are the test's own choice (a string for a number, a number for a
string, an object for a list...), not the validator's, so a reader that accepts one of them is
caught."""
from __future__ import annotations

import copy

from netspec.schema import Any, Bool, Int, List, Map, Num, Obj, Opt, Str, Tuple, field_name


def wrong_kind(spec):
    """A JSON value of another kind than `spec` takes; None where any value fits."""
    while isinstance(spec, Opt):
        spec = spec.spec
    if isinstance(spec, (Int, Num)):
        return "7"
    if isinstance(spec, Str):
        return 7
    if isinstance(spec, Bool):
        return "yes"
    if isinstance(spec, (List, Tuple)):
        return {"k": 1}
    if isinstance(spec, (Obj, Map)):
        return [1]
    return None


def _set(doc, path, value=None, delete=False):
    doc = copy.deepcopy(doc)
    node = doc
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def _children(value, spec):
    """(key, child value, child schema, required) of a document node."""
    while isinstance(spec, Opt):
        spec = spec.spec
    if value is None:
        return
    if isinstance(spec, Obj) and isinstance(value, dict):
        for k, v in value.items():
            if k in spec.fields:
                yield k, v, spec.fields[k], k in spec.required
    elif isinstance(spec, List) and isinstance(value, list) and value:
        yield 0, value[0], spec.item, False
    elif isinstance(spec, Tuple) and isinstance(value, list):
        for i, (s, v) in enumerate(zip(spec.items, value)):
            yield i, v, s, False
    elif isinstance(spec, Map) and isinstance(value, dict) and value:
        k = next(iter(value))
        yield k, value[k], spec.value, False


def mutations(doc, spec, path=()):
    node = doc
    for p in path:
        node = node[p]
    for key, value, child, required in _children(node, spec):
        where = (*path, key)
        if isinstance(child, Any):
            continue
        bad = wrong_kind(child)
        if bad is not None:
            yield "wrong type", where, _set(doc, where, bad)
            yield "nested", where, _set(doc, where, {"k": value} if isinstance(value, list)
                                         else [value])
        if required:
            yield "missing", where, _set(doc, where, delete=True)
        yield from mutations(doc, child, where)


def name(path) -> str:
    return field_name(path)
