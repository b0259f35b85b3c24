"""The launch plan of a hybrid spec (codegen/plan/collectives.py): data-parallel parts run at
their slice's batch, each slice is sent to every fc GPU right after its forward, the fc parts
wait for all of them, and each replica's SGD waits for the allreduce of its gradients."""
from __future__ import annotations

from netspec.codegen.plan import build_plan
from netspec.ir.build import build_graph

SPEC = """\
network hybrid
input   3x12x12
classes 8
gpus    4
conv    conv1  filters 6  size 3 pad 1  relu  parallel data
maxpool pool1  size 2 stride 2
fc      fc6    outputs 16 relu
fc      fc7    outputs 8
softmax prob
"""


def test_slices_gathers_and_waits():
    g = build_graph(SPEC)
    plan = build_plan(g, 10)                       # slices of 3, 3, 2, 2 images
    steps = plan.steps
    assert [plan.buffers[f"conv1.g{i}.y"].elements for i in range(4)] == \
        [6 * 144 * n for n in (3, 3, 2, 2)]
    assert plan.buffers["pool1.all.gpu2"].elements == 6 * 36 * 10
    # pool1's slice q reaches GPU h as 6 copies (one a channel) on q's stream
    gathers = [s for s in steps if s.kind == "copy" and s.phase == "forward"
               and s.dst.startswith("pool1.all.gpu")]
    assert len(gathers) == 4 * 4 * 6 and all(s.gpu == s.src_gpu for s in gathers)
    for h in range(4):
        fc6 = next(s for s in steps if s.kind == "launch" and s.layer == "fc6" and s.gpu == h
                   and s.phase == "forward")
        last = {q: max(s.id for s in gathers if s.src_gpu == q and s.dst_gpu == h)
                for q in range(4) if q != h}
        # it waits for each other GPU's last copy to it (or a later step there)
        assert {steps[d].gpu for d in fc6.deps} == set(last)
        assert all(d >= last[steps[d].gpu] for d in fc6.deps)
    # each GPU's SGD launch happens after every allreduce copy into its conv1 gradients,
    # through its stream's order and the waits (vector clocks: per step, the latest step of
    # each stream known to be done before it)
    clock, seen = {}, {}
    for s in steps:
        vc = dict(seen.get(s.gpu, {}))
        for d in s.deps:
            for q, i in clock[d].items():
                vc[q] = max(vc.get(q, -1), i)
        vc[s.gpu] = s.id
        clock[s.id] = seen[s.gpu] = vc
    for h in range(4):
        sgd = next(s for s in steps if s.kind == "launch" and s.kernel.startswith("sgd")
                   and s.gpu == h)
        into = [s for s in steps if s.kind == "copy" and s.dst.startswith(f"conv1.g{h}.d")]
        assert {s.gpu for s in into} == set(range(4)) - {h}
        assert all(clock[sgd.id].get(s.gpu, -1) >= s.id for s in into)
