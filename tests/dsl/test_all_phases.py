"""One compile reports the errors of every phase (syntax, a layer's keys, shapes, the class
count) for the lines that could be read, sorted by position: a spec with three mistakes needs
one round, not three. Errors that would only be about a guess (a later error on a line with a
syntax error, shapes downstream of a broken layer) are not reported."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from netspec.cli import main
from netspec.dsl.errors import SpecError
from netspec.ir.build import build_graph

GOOD = """\
network t
input 3x8x8
classes 3
conv c1 filters 4 size 3 relu
maxpool p1 size 2 stride 2
fc f1 outputs 3
softmax prob
train
  batch 2
  epochs 1
"""


def spec_with(**lines: str) -> str:
    """GOOD with line N replaced: spec_with(l4='...')."""
    out = GOOD.splitlines()
    for key, text in lines.items():
        out[int(key[1:]) - 1] = text
    return "\n".join(out) + "\n"


def errors(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(SpecError) as e:
        build_graph(text=text)
    return [(d.pos.line, d.pos.col, d.message) for d in e.value.diagnostics]


def test_misspelt_key_equals_typo_and_class_count_in_one_run():
    text = spec_with(l4="conv c1 filtres 4 size 3 relu", l5="maxpool p1 size=2 stride 2",
                     l6="fc f1 outputs 2")
    got = errors(text)
    assert [(line, col) for line, col, _ in got] == [(4, 9), (5, 16), (6, 15)]
    assert got[0][2].startswith("c1: unknown keyword 'filtres' (did you mean 'filters'?)")
    assert got[1][2] == "unexpected character '='"
    assert got[2][2] == ("classes is 3, but the last layer before the softmax, f1, has 2 "
                         "outputs")


def test_the_command_prints_all_three_with_carets_exit_2(tmp_path):
    path = tmp_path / "three.net"
    path.write_text(spec_with(l4="conv c1 filtres 4 size 3 relu",
                              l5="maxpool p1 size=2 stride 2", l6="fc f1 outputs 2"))
    r = CliRunner().invoke(main, ["compile", str(path)])
    assert r.exit_code == 2
    lines = r.output.splitlines()
    assert lines[-1] == "3 errors"
    heads = [line for line in lines if ": error: " in line]
    assert [h.split(": error: ")[0] for h in heads] == [f"{path}:4:9", f"{path}:5:16",
                                                        f"{path}:6:15"]
    assert "Traceback" not in r.output


def test_more_errors_on_a_line_with_a_syntax_error_are_not_guessed_at():
    # 'filtres=4' read as 'filtres 4' would also be an unknown key: only the '=' is reported,
    # and each unexpected character of the line is
    got = errors(spec_with(l4="conv c1 filtres=4 size:3 relu"))
    assert got == [(4, 16, "unexpected character '='"), (4, 23, "unexpected character ':'")]


def test_a_line_that_cannot_be_read_keeps_its_layer_for_its_readers():
    # c1's line fails on a bracket: c1 still exists, so p1 (which reads it) gets no
    # "unknown input" error; the fc's class count is still checked
    got = errors(spec_with(l4="conv c1 filters (4 size 3", l6="fc f1 outputs 5"))
    assert [(line, col) for line, col, _ in got] == [(4, 20), (6, 15)]   # at "size"
    assert got[0][2].startswith("unexpected")
    assert got[1][2].endswith("f1, has 5 outputs")


def test_a_recipe_error_comes_with_the_class_count():
    got = errors(spec_with(l6="fc f1 outputs 4", l10="  epochs 0"))
    assert [(line, m.split(",")[0]) for line, _, m in got] == [(6, "classes is 3"),
                                                              (10, "'epochs' must be at "
                                                                   "least 1")]


def test_a_shape_error_comes_with_the_class_count_and_nothing_downstream():
    # the pool's window 9 does not fit the 6x6 maps: the fc after it is not shape-checked,
    # but its class count is (it does not depend on its input)
    got = errors(spec_with(l5="maxpool p1 size 9 stride 2", l6="fc f1 outputs 7"))
    assert [line for line, _, _ in got] == [5, 6]
    assert got[0][2].startswith("p1: ")
    assert got[1][2].endswith("f1, has 7 outputs")


def test_an_unknown_layer_type_stops_shape_checks_after_it_not_the_class_count():
    got = errors(spec_with(l5="maxpoool p1 size 2 stride 2", l6="fc f1 outputs 2"))
    assert [line for line, _, _ in got] == [5, 6]
    assert got[0][2].startswith("unknown layer type 'maxpoool' (did you mean 'maxpool'?)")


def test_a_clean_spec_still_builds():
    g = build_graph(text=GOOD)
    assert [l.name for l in g.compute_layers] == ["c1", "p1", "f1", "prob"]
    assert g.layer("p1").out_shape == (4, 3, 3)
