"""The launch plan and its memory plan, checked against the IR independently of how they were
built."""
from __future__ import annotations

import json
import math

import pytest

from netspec.codegen.compile import compile_network
from netspec.ir.build import build_graph

SPECS = ["specs/alexnet.net", "specs/alexnet-1gpu.net", "examples/tiny-alexnet.net"]


@pytest.fixture(params=SPECS, scope="module")
def compiled(request):
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2]
    return compile_network(build_graph(root / request.param), 8)


def _touched(plan, s):
    if s.kind == "copy":
        return [(s.src, False), (s.dst, True)]
    if s.kind in ("upload", "download"):
        return [(s.buffer, s.kind == "upload")]
    k = plan.kernels[s.kernel]
    return [(a, p.kind == "out") for p, a in zip(k.params, s.args) if p.kind != "float"]


def test_every_read_follows_a_write(compiled):
    """In train order, no step reads an activation buffer nobody has written yet."""
    plan = compiled.plan
    written = {n for n, b in plan.buffers.items() if b.persistent}
    for s in plan.steps_for("forward", True) + plan.steps_for("backward", True):
        for name, writes in _touched(plan, s):
            if not writes and s.kind != "launch" or (not writes):
                assert name in written, f"step {s.id} ({s.kernel or s.kind}) reads {name} " \
                                        f"before any step writes it"
        for name, writes in _touched(plan, s):
            if writes:
                written.add(name)


def test_live_buffers_never_share_memory(compiled):
    plan = compiled.plan
    arena = [b for b in plan.buffers.values() if not b.persistent]
    for i, a in enumerate(arena):
        assert a.offset % plan.alignment == 0
        for b in arena[i + 1:]:
            if a.gpu != b.gpu or a.last < b.first or b.last < a.first:
                continue
            assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset, \
                f"{a.name} and {b.name} are live together and overlap"


def test_activations_needed_by_backward_stay_live(compiled):
    plan = compiled.plan
    for s in plan.steps:
        for name, _ in _touched(plan, s):
            b = plan.buffers[name]
            if not b.persistent:
                assert b.first <= s.id <= b.last


def test_cross_gpu_copies_cover_the_ir_transfers(compiled):
    plan, g = compiled.plan, compiled.graph
    fwd = {(s.src.split(".")[0], int(s.src.split(".")[1][1:]), s.dst_gpu)
           for s in plan.steps if s.kind == "copy" and s.phase == "forward"
           and s.src_gpu != s.dst_gpu}
    want = {(t.layer, t.part, t.dst_gpu) for t in g.transfers}
    assert fwd == want
    for s in plan.steps:
        if s.kind == "copy" and s.src_gpu != s.dst_gpu:
            # the receiving GPU's consumer waits for it
            later = [t for t in plan.steps[s.id + 1:] if t.gpu == s.dst_gpu
                     and t.kind == "launch" and any(n == s.dst for n, _ in _touched(plan, t))]
            assert later and s.id in later[0].deps


def test_memory_per_gpu(compiled):
    plan, g = compiled.plan, compiled.graph
    per_gpu_params = [0] * g.gpus
    for l in g.weighted_layers:
        for p in l.parts:
            per_gpu_params[p.gpu] += 4 * (math.prod(l.weight_shape(p)) + p.channels)
    for gpu, mem in enumerate(compiled.memory_per_gpu):
        # parameters, gradients and momenta, plus at least the largest activation
        assert mem >= 3 * per_gpu_params[gpu]
        biggest = max(4 * 8 * math.prod(l.part_out_shape(p)) for l in g.compute_layers
                      for p in l.parts if p.gpu == gpu)
        assert mem >= 3 * per_gpu_params[gpu] + biggest
        # reuse: less than keeping every buffer at once
        everything = sum(b.nbytes for b in plan.buffers.values()
                         if b.gpu == gpu and b.kind not in ("block",))
        assert mem < everything


def test_write_and_json(compiled, tmp_path):
    files = compiled.write(tmp_path)
    assert set(files) == {"cuda", "opencl", "plan"}
    data = json.loads(files["plan"].read_text())
    assert data["batch"] == 8 and len(data["memory"]) == compiled.graph.gpus
    kinds = {s["kind"] for s in data["steps"]}
    assert kinds >= {"launch", "upload", "download"}
    names = set(data["kernels"])
    for s in data["steps"]:
        if s["kind"] == "launch":
            assert s["kernel"] in names
    assert files["cuda"].read_text() == compiled.cuda_source
