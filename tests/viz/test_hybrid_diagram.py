"""The diagram of a hybrid spec: data-parallel layers are a replica in every GPU's lane, and
where a model-parallel layer reads one, every GPU's batch slice reaches every part (the
all-gather), drawn in its own style."""
from __future__ import annotations

from netspec.ir.build import build_graph
from netspec.viz.diagram import ARROWS, graph_edges, render_diagram

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


def test_all_gather_edges(tmp_path):
    g = build_graph(SPEC)
    edges = graph_edges(g)
    into_fc6 = [e for e in edges if e.dst == "fc6"]
    # each of fc6's 4 parts reads all 4 slices of pool1: 4 local, 12 across GPUs
    assert sorted((e.src_gpu, e.dst_gpu) for e in into_fc6) == \
        [(a, b) for a in range(4) for b in range(4)]
    assert {e.kind for e in into_fc6 if e.src_gpu != e.dst_gpu} == {"batch"}
    # the replicas stay on their GPUs
    assert all(e.kind == "same-gpu" for e in edges if e.dst in ("conv1", "pool1"))
    out = render_diagram(g, tmp_path / "h.svg")
    assert ARROWS["batch"].label.split(" (")[0] in out.read_text()
