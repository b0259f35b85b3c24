"""netspec/dsl/parser.py's reading of plain lines (words and numbers only) without lark, checked
against lark's own parse of the same text (netspec.lark): the same statements, items, values
and positions, and an error wherever lark finds one."""
from __future__ import annotations

import lark
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netspec.dsl.errors import Pos, SpecError
from netspec.dsl.parser import _parser, parse_statements

# whole tokens and the pieces that make lines lark reads differently or refuses
TOKENS = ["relu", "r1", "conv", "c_2", "filters", "_x", "a-b", "96", "-1", "+2.5", ".5", "1.",
          "1e5", "2E-3", "1e", "e5", "1x2", "3×4", "1,2", "a,b", "f(1)", "gauss(0.01)", "(",
          ")", ",", "#", "# note", "-", "+", ".", "1.2.3", "9" * 30, "x1-", "é", "1-2"]
BLANKS = [" ", "  ", "\t", "\f", "\r", " \t ", "\v", "\xa0"]


@st.composite
def lines(draw) -> str:
    n = draw(st.integers(0, 6))
    parts = [draw(st.sampled_from(["", " ", "\t"]))]
    for i in range(n):
        if i:
            parts.append(draw(st.sampled_from(BLANKS + [""])))
        parts.append(draw(st.sampled_from(TOKENS)))
    parts.append(draw(st.sampled_from(["", " ", "\r", " # end", "#c"])))
    return "".join(parts)


def lark_statements(text: str):
    """The statements as lark alone reads `text` (None: a syntax error)."""
    try:
        stmts = _parser().parse(text if text.endswith("\n") else text + "\n")
    except lark.exceptions.LarkError:
        return None
    rows = [line.removesuffix("\r") for line in text.split("\n")]
    return [(s.keyword, s.pos, s.items, Pos(s.pos.line, len(rows[s.pos.line - 1]) + 1))
            for s in stmts]


@settings(max_examples=400, deadline=None)
@given(st.lists(lines(), min_size=1, max_size=6))
def test_plain_lines_read_as_lark_reads_them(rows):
    text = "\n".join(rows)
    want = lark_statements(text)
    if want is None:
        with pytest.raises(SpecError):
            parse_statements(text)
        return
    got = parse_statements(text)
    assert [(s.keyword, s.pos, s.items, s.end) for s in got] == want


def test_a_spec_of_plain_lines_is_read_without_lark(monkeypatch):
    """Only the lines that aren't plain reach lark (here: the dims and the list)."""
    seen = []
    real = _parser()

    class Spy:
        def parse(self, text):
            seen.append([line for line in text.split("\n") if line])
            return real.parse(text)

    monkeypatch.setattr("netspec.dsl.parser._parser", lambda: Spy())
    text = ("network n # a comment\ninput 3x8x8\nclasses 4\n\nrelu r1\nfc f outputs 4 "
            "split 2,2\n# only a comment\n")
    got = parse_statements(text)
    assert seen == [["input 3x8x8", "fc f outputs 4 split 2,2"]]
    assert [(s.keyword, s.pos.line) for s in got] == [("network", 1), ("input", 2),
                                                     ("classes", 3), ("relu", 5), ("fc", 6)]
    assert got[2].items[0].value == 4 and got[2].items[0].pos == Pos(3, 9)
