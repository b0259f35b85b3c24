"""Protocol Buffers text format (a Caffe `.prototxt`), read into plain nested messages.

The grammar (protobuf's text format, the part Caffe's files use):

    message := field*
    field   := NAME ':' scalar | NAME ':'? ('{' message '}' | '<' message '>')
    scalar  := NUMBER | IDENT (an enum value, true/false, inf, nan) | STRING ("..." or '...',
               adjacent strings concatenated)

`#` starts a comment to the end of the line; `,` and `;` between fields are allowed. Nothing
is evaluated: numbers are read by `int`/`float`, strings unescaped by hand. Every value keeps
its line and column, so that an importer's error points at it (`FILE:LINE:COL: error:`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..dsl.errors import Collector, Pos, SpecError

MAX_BYTES = 64 << 20          # a deploy file is a few KiB; a larger one is not a net definition
MAX_DEPTH = 100

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v,;]+) | (?P<nl>\n) | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[:{}<>\[\]])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


@dataclass
class Value:
    """A scalar: `value` is an int, float, bool, str (a string) or Enum (an identifier)."""

    value: object
    pos: Pos


class Enum(str):
    """An identifier value (an enum constant such as MAX or CONVOLUTION)."""


@dataclass
class Message:
    """A message: its fields in file order, (name, Value | Message, position of the name)."""

    pos: Pos
    fields: list[tuple[str, object, Pos]] = field(default_factory=list)

    def all(self, name: str) -> list:
        return [v for n, v, _ in self.fields if n == name]

    def one(self, name: str, default=None):
        """The last value of a field (protobuf's rule for a repeated singular field), its
        scalar unwrapped; `default` when absent."""
        vals = self.all(name)
        if not vals:
            return default
        v = vals[-1]
        return v.value if isinstance(v, Value) else v

    def msg(self, name: str) -> Message | None:
        v = self.one(name)
        return v if isinstance(v, Message) else None

    def where(self, name: str) -> Pos:
        """The position of a field's (last) value, else of this message."""
        for n, v, _ in reversed(self.fields):
            if n == name:
                return v.pos
        return self.pos

    def names(self) -> list[tuple[str, Pos]]:
        return [(n, p) for n, _, p in self.fields]


def _tokens(text: str, errs: Collector):
    line, start, i = 1, 0, 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            errs.error(Pos(line, i - start + 1), f"unexpected character {text[i]!r}")
            i += 1
            continue
        kind = m.lastgroup
        if kind == "nl":
            line, start = line + 1, m.end()
        elif kind not in ("space", "comment"):
            yield kind, m.group(), Pos(line, i - start + 1)
        i = m.end()
    yield "end", "", Pos(line, i - start + 1)


def _unquote(s: str) -> str:
    out, body, i = [], s[1:-1], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _scalar(kind: str, text: str):
    if kind == "string":
        return _unquote(text)
    if kind == "ident":
        low = text.lower()
        if low in ("true", "false", "t", "f"):
            return low in ("true", "t")
        if low.lstrip("-") in ("inf", "infinity", "nan"):
            return float(low)
        return Enum(text)
    t = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
    try:
        return int(t, 0) if re.fullmatch(r"[-+]?(0[xX][0-9a-fA-F]+|\d+)", t) else float(t)
    except ValueError:
        return float(t)


class _Reader:
    def __init__(self, tokens, errs: Collector):
        self.toks, self.i, self.errs = tokens, 0, errs

    def peek(self):
        return self.toks[self.i]

    def take(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def message(self, pos: Pos, close: str | None, depth: int) -> Message:
        msg = Message(pos)
        while True:
            kind, text, p = self.peek()
            if kind == "end":
                if close:
                    self.errs.error(p, f"missing '{close}' for the '{_OPEN[close]}' at {pos}")
                return msg
            if kind == "punct" and text == close:
                self.take()
                return msg
            if kind != "ident":
                self.errs.error(p, f"expected a field name, found {text!r}")
                self.take()
                continue
            self.take()
            self.field(msg, text, p, depth)

    def field(self, msg: Message, name: str, pos: Pos, depth: int) -> None:
        kind, text, p = self.peek()
        colon = kind == "punct" and text == ":"
        if colon:
            self.take()
            kind, text, p = self.peek()
        if kind == "punct" and text in "{<":
            self.take()
            if depth >= MAX_DEPTH:
                self.errs.error(p, f"messages nested more than {MAX_DEPTH} deep")
                raise SpecError(self.errs.diagnostics, self.errs.path, self.errs.source)
            msg.fields.append((name, self.message(p, _CLOSE[text], depth + 1), pos))
        elif colon and kind in ("number", "ident", "string"):
            self.take()
            value = _scalar(kind, text)
            while kind == "string" and self.peek()[0] == "string":   # "a" "b" is "ab"
                value += _scalar("string", self.take()[1])
            msg.fields.append((name, Value(value, p), pos))
        elif colon and kind == "punct" and text == "[":               # name: [1, 2, 3]
            self.take()
            while self.peek()[0] in ("number", "ident", "string"):
                k, t, q = self.take()
                msg.fields.append((name, Value(_scalar(k, t), q), pos))
            if self.peek()[1] == "]":
                self.take()
            else:
                self.errs.error(self.peek()[2], "expected ']'")
        else:
            self.errs.error(p, f"expected a value after '{name}:'" if colon else
                            f"expected ':' or '{{' after the field name '{name}'")


_CLOSE = {"{": "}", "<": ">"}
_OPEN = {"}": "{", ">": "<"}


def parse_prototxt(text: str, path: str = "<prototxt>") -> Message:
    """The top-level message of a text-format file. SpecError with every syntax error found
    (`FILE:LINE:COL: error:`, a caret under the token)."""
    errs = Collector(path, text)
    if len(text) > MAX_BYTES:
        raise SpecError.file(f"{len(text)} characters: larger than any net definition "
                             f"({MAX_BYTES >> 20} MiB)", path)
    tokens = list(_tokens(text, errs))
    top = _Reader(tokens, errs).message(Pos(1, 1), None, 0)
    errs.raise_if_any()
    return top


def read_text_file(path) -> str:
    """A text file's contents; SpecError (`FILE: error:`) when missing, a directory, too
    large, or not UTF-8."""
    from pathlib import Path
    p = Path(path)
    try:
        data = p.read_bytes() if p.stat().st_size <= MAX_BYTES else None
    except IsADirectoryError:
        raise SpecError.file("is a directory, not a file", str(path)) from None
    except OSError as e:
        raise SpecError.file(e.strerror or str(e), str(path)) from None
    if data is None:
        raise SpecError.file(f"larger than {MAX_BYTES >> 20} MiB: not a model definition",
                             str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpecError.at(Pos(line, col), "bytes that are not UTF-8 text: is this the binary "
                           "weights file given as the definition?", str(path),
                           data[:e.start].decode("utf-8", "replace")) from None
