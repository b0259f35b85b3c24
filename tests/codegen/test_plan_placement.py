"""The arena placement of netspec/codegen/plan/memory.py on both of its paths (greedy by size
up to GREEDY_MAX buffers per GPU, the step-order sweep beyond): buffers live at the same time
never share bytes, offsets are aligned, and the arena is no smaller than the bytes live at once
at the busiest step (a bound computed from the lifetimes alone) and within a margin of it."""
from __future__ import annotations

import pytest

from netspec.codegen import plan as plan_module
from netspec.codegen.compile import compile_network
from netspec.ir.build import build_graph


def chain(layers: int, gpus: int) -> str:
    body = "".join(f"relu r{i}\nconv c{i} filters 4 size 3 pad 1\n" for i in range(layers))
    return (f"network chain\ninput 4x6x6\nclasses 4\ngpus {gpus}\n{body}"
            "fc out outputs 4\nsoftmax prob\ntrain\n  batch 8\n")


@pytest.mark.parametrize("layers,gpus", [(20, 1), (20, 2), (400, 1), (400, 2)])
def test_live_buffers_never_overlap_on_either_path(layers, gpus):
    plan = compile_network(build_graph(chain(layers, gpus)), 8).plan
    for gpu in range(gpus):
        arena = [b for b in plan.buffers.values() if b.gpu == gpu and not b.persistent]
        swept = len(arena) > plan_module.GREEDY_MAX
        assert swept == (layers == 400)         # both paths are exercised
        assert all(b.offset % plan.alignment == 0 for b in arena)
        events = sorted((b.offset, b.offset + b.nbytes, b.first, b.last) for b in arena)
        # overlap in bytes and in time: sweep by offset, compare with the ones still open
        open_: list[tuple] = []
        for a0, a1, f, l in events:
            open_ = [o for o in open_ if o[1] > a0]
            for o in open_:
                assert o[3] < f or l < o[2], ((a0, a1, f, l), o)
            open_.append((a0, a1, f, l))
        steps = max(b.last for b in arena) + 1
        peaks = []
        for nbytes in (lambda b: b.nbytes, lambda b: -(-b.nbytes // plan.alignment) *
                       plan.alignment):
            delta = [0] * (steps + 1)
            for b in arena:
                delta[b.first] += nbytes(b)
                delta[b.last + 1] -= nbytes(b)
            live, peak = 0, 0
            for d in delta:
                live += d
                peak = max(peak, live)
            peaks.append(peak)
        size = plan.memory(gpu)["arena"]
        # at least what is live at once; at most half again what is live at once, aligned
        assert peaks[0] <= size <= 1.5 * peaks[1] + 4 * plan.alignment, (peaks, size)
