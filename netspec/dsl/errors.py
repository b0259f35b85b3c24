"""Spec errors that point into the source, printed as compilers print them:

    alexnet.net:14:3: error: conv3: filters 385 cannot be split evenly over 2 GPUs
       14 | conv conv3 filters 385 size 3 pad 1 relu connect all
          |                    ^
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import NetspecError

MAX_ERRORS = 20
_PICTURES = {c: 0x2400 + c for c in range(32)}


@dataclass(frozen=True, order=True, slots=True)
class Pos:
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One error. `pos` None: about the file as a whole (it can't be read, say), printed as
    `FILE: error: ...`. `message` may be a function giving the text, for messages that cost
    time to write (a "did you mean" over every layer name): only the shown ones are written."""

    pos: Pos | None
    message: Any

    @property
    def text(self) -> str:
        return self.message() if callable(self.message) else self.message


def _order(d: Diagnostic) -> Pos:
    return d.pos or Pos(0, 0)


class SpecError(NetspecError):
    """One or more errors in a spec file, each with its line and column."""

    def __init__(self, diagnostics: list[Diagnostic], path: str = "<spec>", source: str = ""):
        self.diagnostics = [Diagnostic(d.pos, d.text) for d in
                            sorted(diagnostics, key=_order)[:MAX_ERRORS]]
        self.truncated = max(0, len(diagnostics) - MAX_ERRORS)
        self.path = path
        self.source = source
        super().__init__(self.render())

    @classmethod
    def at(cls, pos: Pos, message: str, path: str = "<spec>", source: str = "") -> SpecError:
        return cls([Diagnostic(pos, message)], path, source)

    @classmethod
    def file(cls, message: str, path: str) -> SpecError:
        """An error about the file itself (missing, a directory, unreadable): `FILE: error:`."""
        return cls([Diagnostic(None, message)], path)

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]

    def render(self) -> str:
        # lines as the parser counts them: at "\n" only (not at form feeds or U+2028)
        lines = [line.removesuffix("\r") for line in self.source.split("\n")]
        out = []
        for d in self.diagnostics:
            if d.pos is None:
                out.append(f"{self.path}: error: {d.message}")
                continue
            out.append(f"{self.path}:{d.pos.line}:{d.pos.col}: error: {d.message}")
            if 1 <= d.pos.line <= len(lines):
                # tabs as one space and control characters as their Unicode pictures (a NUL
                # as ␀), one column each, so that the caret stays under its column
                text = lines[d.pos.line - 1].expandtabs(1).translate(_PICTURES)
                text, col = _window(text, d.pos.col)
                gutter = f"{d.pos.line:>5} | "
                out.append(gutter + text)
                out.append(" " * (len(gutter) - 2) + "| " + " " * (col - 1) + "^")
        if self.truncated:
            out.append(f"... and {self.truncated} more errors")
        n = len(self.diagnostics) + self.truncated
        out.append(f"{n} error{'s' if n != 1 else ''}")
        return "\n".join(out)


def _window(text: str, col: int, width: int = 120) -> tuple[str, int]:
    """A long source line as at most `width` characters around column `col` (… where cut),
    and the caret's column in what is shown."""
    if len(text) <= width:
        return text, col
    a = max(0, min(col - 1 - width // 2, len(text) - width))
    shown = ("…" if a else "") + text[a:a + width] + ("…" if a + width < len(text) else "")
    return shown, col - a + (1 if a else 0)


class Collector:
    """Gathers diagnostics so that one pass reports every error it finds."""

    def __init__(self, path: str = "<spec>", source: str = ""):
        self.path, self.source = path, source
        self.diagnostics: list[Diagnostic] = []
        # lines with a syntax error, read on as well as they could be: later errors on them
        # would be about the guess, so they are not recorded
        self.broken_lines: set[int] = set()
        # lines of layer statements left out (no name, an unknown type, a name given twice):
        # the layers after one may read another layer than meant, so their shapes are not
        # checked in the same run
        self.dropped_layers: set[int] = set()

    def error(self, pos: Pos, message) -> None:
        """Record an error at `pos`; `message` is its text, or a function giving it."""
        if pos is not None and pos.line in self.broken_lines:
            return
        self.diagnostics.append(Diagnostic(pos, message))

    def lines_with_errors(self) -> set[int]:
        return {d.pos.line for d in self.diagnostics if d.pos is not None}

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise SpecError(self.diagnostics, self.path, self.source)
