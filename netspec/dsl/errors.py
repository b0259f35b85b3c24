"""Spec errors that point into the source, printed as compilers print them:

    alexnet.net:14:3: error: conv3: filters 385 cannot be split evenly over 2 GPUs
       14 | conv conv3 filters 385 size 3 pad 1 relu connect all
          |                    ^
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import NetspecError

MAX_ERRORS = 20


@dataclass(frozen=True, order=True)
class Pos:
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    pos: Pos
    message: str


class SpecError(NetspecError):
    """One or more errors in a spec file, each with its line and column."""

    def __init__(self, diagnostics: list[Diagnostic], path: str = "<spec>", source: str = ""):
        self.diagnostics = sorted(diagnostics, key=lambda d: d.pos)[:MAX_ERRORS]
        self.truncated = max(0, len(diagnostics) - MAX_ERRORS)
        self.path = path
        self.source = source
        super().__init__(self.render())

    @classmethod
    def at(cls, pos: Pos, message: str, path: str = "<spec>", source: str = "") -> "SpecError":
        return cls([Diagnostic(pos, message)], path, source)

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]

    def render(self) -> str:
        lines = self.source.splitlines()
        out = []
        for d in self.diagnostics:
            out.append(f"{self.path}:{d.pos.line}:{d.pos.col}: error: {d.message}")
            if 1 <= d.pos.line <= len(lines):
                text = lines[d.pos.line - 1].expandtabs(1)
                gutter = f"{d.pos.line:>5} | "
                out.append(gutter + text)
                out.append(" " * (len(gutter) - 2) + "| " + " " * (d.pos.col - 1) + "^")
        if self.truncated:
            out.append(f"... and {self.truncated} more errors")
        n = len(self.diagnostics) + self.truncated
        out.append(f"{n} error{'s' if n != 1 else ''}")
        return "\n".join(out)


class Collector:
    """Gathers diagnostics so that one pass reports every error it finds."""

    def __init__(self, path: str = "<spec>", source: str = ""):
        self.path, self.source = path, source
        self.diagnostics: list[Diagnostic] = []

    def error(self, pos: Pos, message: str) -> None:
        self.diagnostics.append(Diagnostic(pos, message))

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise SpecError(self.diagnostics, self.path, self.source)
