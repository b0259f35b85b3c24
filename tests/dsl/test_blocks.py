"""Blocks (dsl/blocks.py): defined once, used and repeated with parameters, expanded at parse
time; the expanded network equals the one written out by hand, and errors point at the
source (the block's line, or the argument at the use)."""
from __future__ import annotations

import re

import pytest

from netspec.dsl.errors import SpecError
from netspec.ir.build import build_graph

HEAD = """network r
input 3x8x8
classes 4
"""
BLOCK = """block basic(planes, stride)
  conv      c1_$name filters $planes size 3 stride $stride pad 1
  batchnorm b1_$name
  relu      r1_$name
  conv      c2_$name filters $planes size 3 pad 1
  batchnorm b2_$name
  add       $name from b2_$name, $in relu
end
"""
TAIL = """avgpool gap global
fc f outputs 4
softmax prob
"""
USES = "conv c0 filters 4 size 3 pad 1\nbasic l1 planes 4 stride 1\n" \
       "repeat 2 basic l2 planes 4 stride 1\n"


def by_hand(name: str, prev: str) -> str:
    return (f"conv c1_{name} filters 4 size 3 stride 1 pad 1\nbatchnorm b1_{name}\n"
            f"relu r1_{name}\nconv c2_{name} filters 4 size 3 pad 1\nbatchnorm b2_{name}\n"
            f"add {name} from b2_{name}, {prev} relu\n")


def _layers(g):
    return [(l.name, l.type, l.inputs, l.attrs, l.out_shape) for l in g.layers]


def test_expansion_equals_the_network_written_out():
    g = build_graph(HEAD + BLOCK + USES + TAIL)
    written = HEAD + "conv c0 filters 4 size 3 pad 1\n" + by_hand("l1", "c0") + \
        by_hand("l2_1", "l1") + by_hand("l2_2", "l2_1") + TAIL
    assert _layers(g) == _layers(build_graph(written))
    assert g.layer("l2_2").inputs == ["b2_l2_2", "l2_1"]     # $in: the layer before the use


def test_positions_are_the_blocks_lines():
    g = build_graph(HEAD + BLOCK + USES + TAIL)
    assert g.layer("c2_l2_1").pos.line == 8                 # the block's own conv line


def test_a_block_may_use_one_defined_above():
    nested = BLOCK + "block stage(planes)\n  basic a_$name planes $planes stride 1\n" \
                     "  basic b_$name planes $planes stride 1\nend\n"
    g = build_graph(HEAD + nested + "conv c0 filters 4 size 1\nstage s1 planes 4\n" + TAIL)
    assert g.layer("b_s1").inputs == ["b2_b_s1", "a_s1"]


def _error(text: str) -> str:
    with pytest.raises(SpecError) as e:
        build_graph(text)
    return str(e.value)


@pytest.mark.parametrize("change,where,message", [
    (("stride $stride", "stride $strid"), "5:52",
     "block basic: unknown parameter '$strid' (did you mean 'stride'?)"),
    (("basic l1 planes 4 stride 1", "basic l1 planes 4.5 stride 1"), "13:17",
     "c1_l1: 'filters' needs an integer, found '4.5'"),
    (("basic l1 planes 4 stride 1", "basic l1 planes 4 strid 1"), "13:19",
     "l1: block basic has no parameter 'strid' (did you mean 'stride'?)"),
    (("basic l1 planes 4 stride 1", "basic l1 planes 4"), "13:7",
     "l1: block basic needs 'stride'"),
    (("repeat 2 basic", "repeat 0 basic"), "14:8", "repeat takes a count from 1"),
    (("repeat 2 basic", "repeat 2 basci"), "14:10",
     "repeat: unknown block 'basci' (did you mean 'basic'?)"),
    (("end\n", ""), "4:1", "block basic: no 'end' closes it"),
    (("conv c0 filters 4", "conv $c0 filters 4"), "12:6", "'$c0': a $parameter outside a block"),
])
def test_errors_point_at_the_source(change, where, message):
    text = _error((HEAD + BLOCK + USES + TAIL).replace(*change, 1))
    assert re.search(rf"<spec>:{where}: error: {re.escape(message)}", text), text


def test_an_unknown_parameter_is_reported_once_not_per_use():
    text = _error((HEAD + BLOCK + USES + TAIL).replace("$planes size 3 pad", "$plane size 3 "
                                                       "pad"))
    assert text.count("unknown parameter") == 1, text
