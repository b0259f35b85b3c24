"""Reading a statement's items against a schema: which words are keys, what each key takes.

The schema is a mapping key -> AttrDef-like object with `kind`, `default`, `required`,
`minimum`, `maximum`, `choices`. Kinds: flag, int, float, word, ints, words, gauss.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Collector, Pos
from .spec import Attr, Item


@dataclass(frozen=True)
class AttrDef:
    """One attribute a layer statement accepts.

    kind: 'flag' (no value), 'int', 'float', 'word', 'ints' (one int or a list), 'words',
    'gauss' (gauss(STD), or the word `he`: N(0, 2/fan_in), He et al. 2015 §2.2, Caffe's
    "msra" filler).
    """

    kind: str
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""


# What a number's type can hold where it is used: ints are C ints in the kernels, floats are
# float32 scalars. A value outside (or not finite: inf, nan, 1e999) is an error at its column.
INT_MIN, INT_MAX = -2 ** 31, 2 ** 31 - 1
FLOAT_MAX = 3.4028234663852886e38

NON_FINITE = ("inf", "infinity", "nan")   # words, to the lexer: named for what they'd mean

MISSPELT = object()  # the value of a keyword that was misspelt (already reported)

KIND_NAMES = {
    "int": "an integer", "float": "a number", "word": "a name", "ints": "an integer or a list "
    "of integers", "words": "a name or a list of names", "gauss": "gauss(STD) or he",
}


def suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def value_range(kind: str, minimum=None, maximum=None) -> str:
    """The values a key of this kind accepts, in words: "an integer from 1 to 2147483647"."""
    if kind in ("int", "ints"):
        lo = INT_MIN if minimum is None else minimum
        hi = INT_MAX if maximum is None else maximum
        return f"an integer from {_fmt(lo)} to {_fmt(hi)}"
    lo = -FLOAT_MAX if minimum is None else minimum
    hi = FLOAT_MAX if maximum is None else maximum
    return f"a finite number from {_fmt(lo)} to {_fmt(hi)}"


def representable(v, kind: str) -> bool:
    """Whether a number fits its type: a finite float32, or a C int."""
    if kind in ("int", "ints"):
        return INT_MIN <= v <= INT_MAX
    try:
        f = float(v)
    except OverflowError:         # an integer literal with hundreds of digits
        return False
    return math.isfinite(f) and abs(f) <= FLOAT_MAX


def shown(text: str, limit: int = 24) -> str:
    """A value's text for a message, cut short if long."""
    return text if len(text) <= limit else text[:limit] + "..."


def _float(v) -> float:
    """A number as a float; an integer literal too large for one is +-inf (refused later,
    with the key's range)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _convert(item: Item, kind: str) -> tuple[bool, Any]:
    """Return (ok, value) for one item read as `kind`."""
    if kind == "int":
        return (item.kind == "number" and isinstance(item.value, int)), item.value
    if kind == "float":
        return item.kind == "number", (_float(item.value) if item.kind == "number" else None)
    if kind == "word":
        return item.kind == "word", item.value
    if kind == "ints":
        if item.kind == "number" and isinstance(item.value, int):
            return True, (item.value,)
        if item.kind == "list" and all(i.kind == "number" and isinstance(i.value, int)
                                       for i in item.value):
            return True, tuple(i.value for i in item.value)
        return False, None
    if kind == "words":
        if item.kind == "word":
            return True, (item.value,)
        if item.kind == "list" and all(i.kind == "word" for i in item.value):
            return True, tuple(i.value for i in item.value)
        return False, None
    if kind == "gauss":
        if item.kind == "call" and item.value[0] == "gauss" and len(item.value[1]) == 1 \
                and item.value[1][0].kind == "number":
            return True, _float(item.value[1][0].value)
        if item.kind == "word" and item.value == "he":
            return True, "he"
        return False, None
    raise ValueError(f"unknown attribute kind {kind!r}")


def _out_of_range(owner: str, key: str, spec: Any, value_item: Item, value: Any,
                  errs: Collector) -> bool:
    """Report the first number of `value` that its kind can't represent or that lies outside
    [spec.minimum, spec.maximum]; True if there was one."""
    for v, where, text in _numbers(value_item, value):
        if not representable(v, spec.kind):
            errs.error(where, f"{owner}: '{key}' must be "
                              f"{value_range(spec.kind, spec.minimum, spec.maximum)}, "
                              f"not {shown(text)}")
            return True
        if spec.minimum is not None and v < spec.minimum:
            errs.error(where, f"{owner}: '{key}' must be at least "
                              f"{_fmt(spec.minimum)}, not {_fmt(v)}")
            return True
        if spec.maximum is not None and v > spec.maximum:
            errs.error(where, f"{owner}: '{key}' must be at most "
                              f"{_fmt(spec.maximum)}, not {_fmt(v)}")
            return True
    return False


def read_attrs(items: tuple[Item, ...], schema: Mapping[str, Any], owner: str, errs: Collector,
               end: Pos) -> dict[str, Attr]:
    """Group items into attributes by `schema`, reporting every problem to `errs`.

    `owner` names the statement in messages ("conv1", "sgd"); `end` is where a missing value
    would have been (the end of the line).
    """
    out: dict[str, Attr] = {}
    i = 0
    while i < len(items):
        item = items[i]
        i += 1
        if item.kind != "word":
            errs.error(item.pos, f"{owner}: expected a keyword, found '{item.text}'")
            continue
        key = item.value
        spec = schema.get(key)
        if spec is None:
            errs.error(item.pos, f"{owner}: unknown keyword '{key}'{suggest(key, schema)}; "
                                 f"expected one of: {', '.join(sorted(schema))}")
            close = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
            if close and close[0] not in out:
                # read it as the keyword it most likely is, so one typo is one error
                guess = schema[close[0]]
                if guess.kind != "flag" and i < len(items) and items[i].kind != "word":
                    i += 1
                out[close[0]] = Attr(close[0], MISSPELT, item.pos, item.pos)
            elif i < len(items) and items[i].kind != "word":
                i += 1   # skip its value
            continue
        if key in out:
            errs.error(item.pos, f"{owner}: '{key}' is given twice")
        if spec.kind == "flag":
            out[key] = Attr(key, True, item.pos, item.pos)
            continue
        if i >= len(items) or (items[i].kind == "word" and items[i].value in schema
                               and spec.kind not in ("word", "words")):
            where = items[i].pos if i < len(items) else end
            errs.error(where, f"{owner}: '{key}' needs {KIND_NAMES[spec.kind]}")
            out[key] = Attr(key, MISSPELT, item.pos, where)
            continue
        value_item = items[i]
        i += 1
        ok, value = _convert(value_item, spec.kind)
        if not ok:
            if spec.kind in ("int", "float", "ints") and value_item.kind == "word" and \
                    value_item.text.lower() in NON_FINITE:
                need = value_range(spec.kind, spec.minimum, spec.maximum)
            else:
                need = KIND_NAMES[spec.kind]
            errs.error(value_item.pos, f"{owner}: '{key}' needs {need}, "
                                       f"found '{shown(value_item.text)}'")
            out[key] = Attr(key, MISSPELT, item.pos, value_item.pos)
            continue
        if spec.choices and value not in spec.choices:
            errs.error(value_item.pos, f"{owner}: '{key}' must be one of "
                                       f"{', '.join(map(str, spec.choices))}, not '{value}'"
                                       f"{suggest(str(value), map(str, spec.choices))}")
            out[key] = Attr(key, MISSPELT, item.pos, value_item.pos)
            continue
        bad = _out_of_range(owner, key, spec, value_item, value, errs)
        out[key] = Attr(key, MISSPELT if bad else value, item.pos, value_item.pos)
    return out


def _numbers(item: Item, value):
    """(number, position, text) for each number in a converted value: one, a list's entries
    (each at its own column), or gauss(STD)'s argument."""
    if item.kind == "list":
        return [(i.value, i.pos, i.text) for i in item.value if i.kind == "number"]
    if item.kind == "call":
        return [(a.value, a.pos, a.text) for a in item.value[1] if a.kind == "number"]
    if item.kind == "number":
        return [(item.value, item.pos, item.text)]
    return []


def valid(attrs: dict[str, Attr]) -> dict[str, Attr]:
    """The attributes whose values were read without error."""
    return {k: a for k, a in attrs.items() if a.value is not MISSPELT}


def resolve(attrs: dict[str, Attr], schema: Mapping[str, Any], owner: str, errs: Collector,
            pos: Pos) -> dict[str, Any]:
    """Plain values with defaults filled in; reports missing required keys at `pos`."""
    values: dict[str, Any] = {}
    for key, spec in schema.items():
        if key in attrs:
            values[key] = None if attrs[key].value is MISSPELT else attrs[key].value
        elif spec.required:
            errs.error(pos, f"{owner}: missing '{key}' ({spec.doc or KIND_NAMES[spec.kind]})")
            values[key] = None
        else:
            values[key] = False if spec.kind == "flag" and spec.default is None else spec.default
    return values


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
