"""The launch plan and its memory plan, checked against the IR independently of how they were
built."""
from __future__ import annotations

import json
import math
import pathlib
import sys

import pytest

from netspec.codegen.compile import compile_network
from netspec.ir.build import build_graph
from netspec.ir.report import device_rows

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
from net_specs import BRANCHES, SUBRANGE, one_gpu_grouped, tiny_four_gpus  # noqa: E402

SPECS = {
    "alexnet": (ROOT / "specs/alexnet.net").read_text(),
    "alexnet-1gpu": (ROOT / "specs/alexnet-1gpu.net").read_text(),
    "tiny": (ROOT / "examples/tiny-alexnet.net").read_text(),
    "alexnet-grouped-1gpu": one_gpu_grouped((ROOT / "specs/alexnet.net").read_text()),
    "tiny-4gpus": tiny_four_gpus((ROOT / "examples/tiny-alexnet.net").read_text()),
    "branches": BRANCHES,
    "subrange": SUBRANGE,
}


@pytest.fixture(params=list(SPECS), scope="module")
def compiled(request):
    return compile_network(build_graph(SPECS[request.param]), 8)


def _touched(plan, s):
    return [(n, w) for n, _, _, w in _ranges(plan, s)]


def _ranges(plan, s):
    """(buffer, first element, end element, writes) per buffer a step touches."""
    if s.kind == "copy":
        return [(s.src, s.src_offset, s.src_offset + s.elements, False),
                (s.dst, s.dst_offset, s.dst_offset + s.elements, True)]
    return [(n, 0, plan.buffers[n].elements, w) for n, w in _touched_whole(plan, s)]


def _touched_whole(plan, s):
    if s.kind in ("upload", "download"):
        return [(s.buffer, s.kind == "upload")]
    k = plan.kernels[s.kernel]
    return [(a, p.kind == "out") for p, a in zip(k.params, s.args) if not p.scalar]


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


def _cross(plan, phase):
    return [s for s in plan.steps if s.kind == "copy" and s.phase == phase
            and s.src_gpu != s.dst_gpu]


def test_cross_gpu_copies_are_the_ir_transfers_once(compiled):
    """Forward: one copy per IR transfer, of exactly its channels (deduplicated however many
    parts there read it); backward: its gradient goes back, the same amount."""
    plan, g = compiled.plan, compiled.graph
    fwd = sorted((s.src.split(".")[0], int(s.src.split(".")[1][1:]), s.dst_gpu, s.elements)
                 for s in _cross(plan, "forward"))
    want = sorted((t.layer, t.part, t.dst_gpu, t.elements * 8) for t in g.transfers)
    assert fwd == want
    back: dict = {}
    for s in _cross(plan, "backward"):
        key = (s.dst.split(".")[0], int(s.dst.split(".")[1][1:]), s.src_gpu)
        back[key] = back.get(key, 0) + s.elements
    assert back == {(t.layer, t.part, t.dst_gpu): t.elements * 8 for t in g.transfers}
    for s in _cross(plan, "forward") + _cross(plan, "backward"):
        # the first step on the receiving GPU that touches the data waits for the copy (or a
        # later step of the sender's in-order stream)
        a, e = s.dst_offset, s.dst_offset + s.elements
        later = [t for t in plan.steps[s.id + 1:] if t.gpu == s.dst_gpu
                 and any(n == s.dst and lo < e and a < hi for n, lo, hi, _ in _ranges(plan, t))]
        assert later and any(d >= s.id and plan.steps[d].gpu == s.gpu for d in later[0].deps)


def test_data_crosses_gpus_only_at_connect_all_and_the_softmax(compiled):
    g = compiled.graph
    for t in g.transfers:
        for name in t.consumers:
            consumer = g.layer(name)
            assert consumer.connect == "all" or consumer.type == "softmax", (t, name)


def test_each_gpu_computes_in_its_own_memory(compiled):
    """Parameters, gradients, momenta and activations of a logical GPU live in its own regions;
    kernels touch only those; only copies cross (on the sender's stream)."""
    plan, g = compiled.plan, compiled.graph
    for s in plan.steps:
        gpus = {plan.buffers[n].gpu for n, _ in _touched(plan, s)}
        if s.kind == "copy":
            assert plan.buffers[s.src].gpu == s.gpu == s.src_gpu
            assert plan.buffers[s.dst].gpu == s.dst_gpu
        else:
            assert gpus == {s.gpu}, (s.id, s.kernel, gpus)
    for b in plan.parameters:
        layer = g.layer(b.layer)
        for entry in b.parts:
            gpu = entry["gpu"]
            assert {plan.buffers[entry[k]].gpu for k in ("buffer", "grad", "velocity")} == {gpu}
            assert gpu in {p.gpu for p in layer.parts}
    for gpu in range(g.gpus):
        assert plan.memory(gpu)["params"] >= 3 * 4 * sum(
            math.prod(l.weight_shape(p)) + p.channels
            for l in g.weighted_layers for p in l.parts if p.gpu == gpu)


def test_plan_traffic_is_the_reported_traffic(compiled):
    """The bytes the plan's cross-GPU copies move per step, by sender, are the report's
    sent_bytes_per_step."""
    plan, g = compiled.plan, compiled.graph
    sent = [0] * g.gpus
    for s in _cross(plan, "forward") + _cross(plan, "backward"):
        sent[s.src_gpu] += 4 * s.elements
    assert sent == [d["sent_bytes_per_step"] for d in device_rows(g, 8)]


def test_one_transfer_for_two_readers():
    g = build_graph(BRANCHES)
    c1 = [t for t in g.transfers if t.layer == "c1" and t.dst_gpu == 1]
    assert len(c1) == 1 and c1[0].consumers == ("a", "b", "d")
    plan = compile_network(g, 8).plan
    fwd = [s for s in _cross(plan, "forward") if s.src == "c1.g0.y"]
    bwd = [s for s in _cross(plan, "backward") if s.dst == "c1.g0.dy"]
    assert len(fwd) == 1 and fwd[0].dst == "c1.g0.to1" and fwd[0].elements == 4 * 10 * 10 * 8
    # the readers' gradients are summed on GPU 1 first, then cross once (to a staging buffer
    # on GPU 0, since GPU 0's own readers have written c1's gradient already, then added, with
    # the slice of GPU 0's reader in the same layer, by one kernel)
    bwd = [s for s in _cross(plan, "backward") if s.src == "c1.g0.to1.dy"]
    assert len(bwd) == 1 and bwd[0].elements == fwd[0].elements
    assert bwd[0].dst.startswith("c1.g0.dy.staged")
    assert any(s.kind == "launch" and s.args[:2] == ("c1.g0.dy", bwd[0].dst)
               for s in plan.steps)
    assert len(_cross(plan, "forward")) == len(g.transfers)


def test_a_channel_range_crosses_alone():
    g = build_graph(SUBRANGE)
    t = next(t for t in g.transfers if t.layer == "c1")
    assert (t.part, t.dst_gpu, t.start, t.channels, t.elements) == (0, 1, 2, 2, 2 * 10 * 10)
    plan = compile_network(g, 8).plan
    (fwd,) = [s for s in _cross(plan, "forward") if s.src == "c1.g0.y"]
    per_ch = 8 * 10 * 10
    assert (fwd.src_offset, fwd.elements, fwd.dst) == (2 * per_ch, 2 * per_ch, "d.g1.x")
    (bwd,) = [s for s in _cross(plan, "backward") if s.dst == "c1.g0.dy"]
    assert (bwd.dst_offset, bwd.elements) == (2 * per_ch, 2 * per_ch)


def test_grouped_one_gpu_plan_copies_nothing_across():
    plan = compile_network(build_graph(SPECS["alexnet-grouped-1gpu"]), 8).plan
    assert plan.gpus == 1 and not _cross(plan, "forward") and not _cross(plan, "backward")
    # norm1's groups read halves of conv1's one part: a copy each from channel 0 and 48
    starts = sorted(s.src_offset for s in plan.steps if s.kind == "copy"
                    and s.phase == "forward" and s.src == "conv1.g0.y")
    assert starts == [0, 48 * 8 * 55 * 55]


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
        # reuse: less than keeping every buffer at once (each aligned as the arena aligns)
        align = lambda n: -(-n // plan.alignment) * plan.alignment
        everything = sum(align(b.nbytes) for b in plan.buffers.values()
                         if b.gpu == gpu and b.kind not in ("block",))
        assert mem < everything
        # and the arena is no smaller than what is live at once at any step
        arena = [b for b in plan.buffers.values() if b.gpu == gpu and not b.persistent]
        peak = max(sum(b.nbytes for b in arena if b.first <= s.id <= b.last)
                   for s in plan.steps)
        assert peak <= plan.memory(gpu)["arena"]


def test_write_and_json(compiled, tmp_path):
    files = compiled.write(tmp_path)
    assert set(files) == {"cuda", "opencl", "host", "plan"}
    data = json.loads(files["plan"].read_text())
    assert data["batch"] == 8 and len(data["memory"]) == compiled.graph.gpus
    kinds = {s["kind"] for s in data["steps"]}
    assert kinds >= {"launch", "upload", "download"}
    names = set(data["kernels"])
    for s in data["steps"]:
        if s["kind"] == "launch":
            assert s["kernel"] in names
    assert files["cuda"].read_text() == compiled.cuda_source


def all_to_all(gpus: int) -> str:
    """conv c1 split over `gpus` GPUs, read whole by every part of fc f1 (`connect all`)."""
    return (f"network alltoall\ninput 3x6x6\nclasses 4\ngpus {gpus}\n"
            f"conv c1 filters {2 * gpus} size 3 pad 1 relu\n"
            f"fc f1 outputs {2 * gpus} relu connect all\n"
            "fc out outputs 4 connect all gpu 0\nsoftmax prob\ntrain\n  batch 8\n")


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_connect_all_backward_sums_once_per_source_part(gpus):
    """f1's backward hands each of c1's G parts its G readers' gradient slices: the first is
    copied in, the other G-1 (those from other GPUs through one staging buffer per source
    part) are added by ONE kernel per source part — G launches in all, linear in G (it was
    G(G-1)) — and the cross-GPU copies are the G(G-1) slices themselves."""
    plan = compile_network(build_graph(all_to_all(gpus)), 8).plan
    bwd = [s for s in plan.steps if s.phase == "backward" and s.layer == "f1"]
    sums = [s for s in bwd if s.kind == "launch" and s.args[0].startswith("c1.")]
    assert len(sums) == gpus
    # one per source part, on its GPU, adding into its whole gradient
    assert sorted((s.args[0], s.gpu) for s in sums) == [(f"c1.g{i}.dy", i)
                                                         for i in range(gpus)]
    for s in sums:
        k = plan.kernels[s.kernel]
        assert k.consts["N"] == 2 * 8 * 6 * 6 == plan.buffers[s.args[0]].elements
        if gpus > 2:     # every slot of the staging buffer, read by this one kernel
            assert k.consts["K"] * k.consts["N"] == plan.buffers[s.args[1]].elements
    cross = [s for s in bwd if s.kind == "copy" and s.src_gpu != s.dst_gpu]
    assert len(cross) == gpus * (gpus - 1)
    assert len([s for s in bwd if s.kind == "copy"]) == gpus * (gpus - 1) + 1
