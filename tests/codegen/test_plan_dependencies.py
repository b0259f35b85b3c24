"""The plan's cross-stream waits (`Step.deps`, netspec/codegen/plan/waits.py), checked
against every pair of steps by brute force: each pair of steps on different streams that touch
the same memory (after placement), one of them writing, must be ordered by the waits and the
streams' own order; and every wait must be such a pair."""
from __future__ import annotations

import pathlib
import sys

import pytest

from netspec.codegen.compile import compile_network
from netspec.ir.build import build_graph

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from compile_scaling import alexnet  # noqa: E402

from net_specs import BRANCHES, SUBRANGE, tiny_four_gpus  # noqa: E402

SPECS = {
    "alexnet": lambda: (ROOT / "specs/alexnet.net").read_text(),
    "tiny": lambda: (ROOT / "examples/tiny-alexnet.net").read_text(),
    "tiny-4gpus": lambda: tiny_four_gpus((ROOT / "examples/tiny-alexnet.net").read_text()),
    "alexnet-8gpus": lambda: alexnet(8),
    "branches": lambda: BRANCHES,
    "subrange": lambda: SUBRANGE,
}


def _spans(plan, s):
    """(gpu, region, first byte, end byte, writes) of each buffer range a step touches."""
    out = []
    if s.kind == "copy":
        ranges = [(s.src, s.src_offset, s.src_offset + s.elements, False),
                  (s.dst, s.dst_offset, s.dst_offset + s.elements, True)]
    elif s.kind in ("upload", "download"):
        ranges = [(s.buffer, 0, plan.buffers[s.buffer].elements, s.kind == "upload")]
    else:
        k = plan.kernels[s.kernel]
        ranges = [(a, 0, plan.buffers[a].elements, p.kind == "out")
                  for p, a in zip(k.params, s.args) if not p.scalar]
    for name, a, e, w in ranges:
        b = plan.buffers[name]
        out.append((b.gpu, b.region, b.offset + 4 * a, b.offset + 4 * e, w))
    return out


def _conflict(x, y) -> bool:
    return any(g1 == g2 and r1 == r2 and a1 < e2 and a2 < e1 and (w1 or w2)
               for g1, r1, a1, e1, w1 in x for g2, r2, a2, e2, w2 in y)


@pytest.mark.parametrize("name", list(SPECS))
def test_every_conflict_is_ordered_and_every_wait_is_a_conflict(name):
    plan = compile_network(build_graph(SPECS[name]()), 4).plan
    steps = plan.steps
    spans = [_spans(plan, s) for s in steps]
    streams = sorted({s.gpu for s in steps})
    # clock[i][g]: the last step of stream g known finished when step i starts (a vector
    # clock over the waits and each stream's own order)
    clock: list[dict[int, int]] = []
    last_on: dict[int, int] = {}
    for s in steps:
        c = {g: -1 for g in streams}
        prev = last_on.get(s.gpu)
        sources = ([prev] if prev is not None else []) + list(s.deps)
        for d in sources:
            for g in streams:
                c[g] = max(c[g], clock[d][g])
            c[steps[d].gpu] = max(c[steps[d].gpu], d)
        clock.append(c)
        last_on[s.gpu] = s.id
        for d in s.deps:
            assert d < s.id and steps[d].gpu != s.gpu
            assert _conflict(spans[s.id], spans[d]), (s, steps[d])
    unordered = [(t.id, s.id) for s in steps for t in steps[:s.id]
                 if t.gpu != s.gpu and clock[s.id][t.gpu] < t.id
                 and _conflict(spans[s.id], spans[t.id])]
    assert unordered == []
    if len(streams) > 1:
        assert any(s.deps for s in steps)


def test_waits_are_worked_out_when_the_steps_are_first_read():
    """`netspec compile` without -o reads the memory plan only; the waits come with the
    steps, for -o and the backends."""
    plan = compile_network(build_graph(SPECS["tiny"]()), 4).plan
    assert plan._waits is not None and plan.memory(0)["arena"] > 0
    assert plan._waits is not None
    assert any(s.deps for s in plan.steps) and plan._waits is None
