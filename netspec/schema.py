"""A small declarative validator for the JSON artefacts netspec reads back (run states, launch
records, metrics rows, cache manifests): field -> type and range, nested.

    STATE = Obj({"step": Int(min=0), "lr": Num(min=0, min_open=True),
                 "classes": List(Str()), "meters": Opt(Obj({...}, closed=True))},
                required=("step",))
    validate(doc, STATE, "runs/a/state.json", RunError)

`validate` raises `error(message)` for the first field that doesn't fit, naming the file and
the field's path (`schedule.lr`, `splits.train.shards[3][0]`), what was expected and what was
found. Nothing is converted: a reader that validated a document may index it freely.

Foundation module: imports nothing from netspec (tests/test_layering.py).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any as _Any


class Mismatch(Exception):
    """A value that doesn't fit its schema: where (a path of keys and indices) and why."""

    def __init__(self, path: tuple, problem: str):
        super().__init__(problem)
        self.path, self.problem = path, problem


def field_name(path: Iterable) -> str:
    """'schedule.lr', 'splits.train.shards[3][0]'; '(the whole document)' for ()."""
    text = ""
    for p in path:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or "(the whole document)"


def _found(value) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value), "a value")
    text = repr(value)
    return kind if len(text) > 40 or isinstance(value, (list, dict)) else f"{kind} ({text})"


class Spec:
    """A schema node. `check(value, path)` raises Mismatch; `expected` says what fits."""

    expected = "a value"

    def check(self, value, path: tuple) -> None:
        raise NotImplementedError

    def fail(self, value, path: tuple):
        raise Mismatch(path, f"should be {self.expected}, not {_found(value)}")


@dataclass(frozen=True)
class Any(Spec):
    expected = "any value"

    def check(self, value, path):
        pass


def _range(lo, hi, lo_open=False) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"<= {hi}")
    return " " + " and ".join(parts) if parts else ""


@dataclass(frozen=True)
class Int(Spec):
    min: int | None = None
    max: int | None = None

    @property
    def expected(self):
        return "an integer" + _range(self.min, self.max)

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int) or \
                (self.min is not None and value < self.min) or \
                (self.max is not None and value > self.max):
            self.fail(value, path)


@dataclass(frozen=True)
class Num(Spec):
    """A number (an integer counts); finite unless finite=False (metrics' NaN errors)."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    finite: bool = True

    @property
    def expected(self):
        return ("a finite number" if self.finite else "a number") + \
            _range(self.min, self.max, self.min_open)

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(value, path)
        if not math.isfinite(value):
            if self.finite:
                self.fail(value, path)
            return
        if (self.min is not None and (value <= self.min if self.min_open else value < self.min)) \
                or (self.max is not None and value > self.max):
            self.fail(value, path)


@dataclass(frozen=True)
class Str(Spec):
    choices: tuple[str, ...] | None = None
    test: Callable[[str], bool] | None = None     # e.g. a path that stays inside a folder
    what: str = ""                                # says what `test` wants

    @property
    def expected(self):
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return f"a string{' ' + self.what if self.what else ''}"

    def check(self, value, path):
        if not isinstance(value, str) or (self.choices and value not in self.choices) or \
                (self.test is not None and not self.test(value)):
            self.fail(value, path)


@dataclass(frozen=True)
class Bool(Spec):
    expected = "true or false"

    def check(self, value, path):
        if not isinstance(value, bool):
            self.fail(value, path)


@dataclass(frozen=True)
class Opt(Spec):
    """`spec` or null."""

    spec: Spec

    @property
    def expected(self):
        return f"{self.spec.expected} or null"

    def check(self, value, path):
        if value is not None:
            self.spec.check(value, path)


@dataclass(frozen=True)
class List(Spec):
    item: Spec = field(default_factory=Any)
    length: int | None = None
    max_len: int | None = None

    @property
    def expected(self):
        n = f" of {self.length}" if self.length is not None else ""
        return f"a list{n} ({self.item.expected} each)"

    def check(self, value, path):
        if not isinstance(value, list) or (self.length is not None and
                                           len(value) != self.length) or \
                (self.max_len is not None and len(value) > self.max_len):
            self.fail(value, path)
        for i, v in enumerate(value):
            self.item.check(v, (*path, i))


@dataclass(frozen=True)
class Tuple(Spec):
    """A list of fixed length whose items have their own schemas."""

    items: tuple[Spec, ...]

    @property
    def expected(self):
        return "a list [" + ", ".join(s.expected for s in self.items) + "]"

    def check(self, value, path):
        if not isinstance(value, list) or len(value) != len(self.items):
            self.fail(value, path)
        for i, (s, v) in enumerate(zip(self.items, value)):
            s.check(v, (*path, i))


@dataclass(frozen=True)
class Map(Spec):
    """An object with any keys (checked by `key`, a Str) and values of one schema."""

    value: Spec = field(default_factory=Any)
    key: Str = field(default_factory=Str)

    @property
    def expected(self):
        return f"an object ({self.value.expected} each)"

    def check(self, value, path):
        if not isinstance(value, dict):
            self.fail(value, path)
        for k, v in value.items():
            try:
                self.key.check(k, (*path, k))
            except Mismatch:
                raise Mismatch((*path, k), f"is not a valid name here (it should be "
                                           f"{self.key.expected})") from None
            self.value.check(v, (*path, k))


@dataclass(frozen=True)
class Obj(Spec):
    """An object with named fields. Fields not listed are allowed unless closed=True."""

    fields: dict[str, Spec]
    required: tuple[str, ...] = ()
    closed: bool = False

    expected = "an object"

    def check(self, value, path):
        if not isinstance(value, dict):
            self.fail(value, path)
        for name in self.required:
            if name not in value:
                raise Mismatch((*path, name), f"is missing (it should be "
                                              f"{self.fields[name].expected})")
        for name, v in value.items():
            spec = self.fields.get(name)
            if spec is None:
                if self.closed:
                    raise Mismatch((*path, name), "is not a field netspec knows here (it "
                                                  f"knows {', '.join(self.fields)})")
                continue
            spec.check(v, (*path, name))

    def requiring(self, *names: str, **fields: Spec) -> Obj:
        """This schema with more required fields (and some fields' schemas replaced)."""
        return replace(self, fields={**self.fields, **fields},
                       required=tuple(dict.fromkeys((*self.required, *names))))


def validate(value: _Any, spec: Spec, where: str, error: type[Exception] = ValueError,
             hint: str = "") -> _Any:
    """`value` if it fits `spec`; else raise error("WHERE: field 'F': problem[; hint]")."""
    try:
        spec.check(value, ())
    except Mismatch as m:
        raise error(f"{where}: field '{field_name(m.path)}' {m.problem}"
                    + (f"; {hint}" if hint else "")) from None
    return value
