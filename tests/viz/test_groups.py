"""`groups G` in the diagram: a layer's several parts on one GPU are stacked in that GPU's lane,
one box per group, with an arrow from each group to the group(s) it reads."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from netspec.ir.build import build_graph
from netspec.viz import diagram_layout, render_diagram
from netspec.viz.layout import boxes_overlap

from .legibility import assert_legible

SVG = "{http://www.w3.org/2000/svg}"

# the two-GPU AlexNet's layers on one GPU: conv2, conv4, conv5 and the LRNs in 2 groups
ALEXNET_1GPU_GROUPED = """\
network alexnet-1gpu-grouped
input   3x224x224
classes 1000
gpus    1

init weight gauss(0.01) bias 0

conv    conv1  filters 96  size 11 stride 4 pad 2  relu
lrn     norm1  size 5 alpha 1e-4 beta 0.75 k 2  groups 2
maxpool pool1  size 3 stride 2
conv    conv2  filters 256 size 5 pad 2  relu  bias 1  groups 2
lrn     norm2  size 5 alpha 1e-4 beta 0.75 k 2  groups 2
maxpool pool2  size 3 stride 2
conv    conv3  filters 384 size 3 pad 1  relu
conv    conv4  filters 384 size 3 pad 1  relu  bias 1  groups 2
conv    conv5  filters 256 size 3 pad 1  relu  bias 1  groups 2
maxpool pool5  size 3 stride 2
fc      fc6    outputs 4096  relu  bias 1
dropout drop6  p 0.5
fc      fc7    outputs 4096  relu  bias 1
dropout drop7  p 0.5
fc      fc8    outputs 1000
softmax prob
"""

# 2 GPUs, conv2 in 2 groups split unevenly: GPU 0 holds group 0 and half of group 1, which
# reads its channels from GPU 1
TWO_GPUS_GROUPED = """\
network grouped-2gpu
input   3x32x32
classes 10
gpus    2

conv    c1    filters 16 size 3 pad 1 relu
conv    c2    filters 32 size 3 pad 1 relu groups 2 split 24,8
lrn     n2    size 3 groups 2
maxpool p2    size 2 stride 2
conv    c3    filters 16 size 3 pad 1 relu connect all
fc      f1    outputs 10 connect all
softmax prob
"""

SPECS = {"alexnet-1gpu-grouped": ALEXNET_1GPU_GROUPED, "grouped-2gpu": TWO_GPUS_GROUPED}


@pytest.fixture(params=list(SPECS), ids=str)
def graph(request):
    return build_graph(SPECS[request.param])


def _classes(el) -> set[str]:
    return set((el.get("class") or "").split())


def test_svg_is_xml_names_every_weighted_layer_one_lane_per_gpu(graph, tmp_path):
    path = tmp_path / "d.svg"
    render_diagram(graph, path)
    root = ET.parse(path).getroot()            # raises on malformed XML
    texts = {t.text for t in root.iter(f"{SVG}text")}
    for layer in graph.weighted_layers:
        assert layer.name in texts
    lanes = [g for g in root.iter(f"{SVG}g") if "lane" in _classes(g)]
    assert sorted(g.get("id") for g in lanes) == [f"lane-gpu{i}" for i in range(graph.gpus)]
    blocks = [g for g in root.iter(f"{SVG}g") if "block" in _classes(g)]
    assert len(blocks) == sum(len(l.parts) for l in graph.layers)


def test_one_box_per_group_stacked_in_its_lane(graph):
    layout = diagram_layout(graph)
    lanes = {int(a.data["gpu"]): a.box for a in layout.find("lane")}
    blocks = {(b.data["layer"], int(b.data["part"])): b for b in layout.find("block")}
    for layer in graph.layers:
        for gpu in range(graph.gpus):
            parts = [p for p in layer.parts if p.gpu == gpu]
            boxes = [blocks[(layer.name, p.index)].box for p in parts]
            for _x0, y0, _x1, y1 in boxes:       # inside its GPU's lane
                lx0, ly0, lx1, ly1 = lanes[gpu]
                assert ly0 < y0 and y1 < ly1, (layer.name, gpu)
            for a, b in zip(boxes, boxes[1:]):  # stacked top to bottom, apart
                assert a[3] < b[1], layer.name
                assert not boxes_overlap(a, b)


def test_arrows_run_from_each_group_to_the_groups_it_reads(graph):
    layout = diagram_layout(graph)
    drawn = sorted((a.data["src"], a.data["dst"]) for a in layout.find("arrow"))
    want = sorted((f"{s.layer}:{s.part}", f"{l.name}:{p.index}")
                  for l in graph.layers for p in l.parts for s in p.sources)
    assert drawn == want
    for a in layout.find("arrow"):           # dashed red exactly where `connect all` crosses
        layer = graph.layer(a.data["dst"].split(":")[0])
        crosses = a.data["src_gpu"] != a.data["dst_gpu"]
        assert (a.data["kind"] == "all") == (crosses and layer.connect == "all")


def test_alexnet_groups_on_one_gpu():
    layout = diagram_layout(build_graph(ALEXNET_1GPU_GROUPED))
    assert len(layout.find("lane")) == 1
    per_layer = {}
    for b in layout.find("block"):
        per_layer[b.data["layer"]] = per_layer.get(b.data["layer"], 0) + 1
    for name in ("norm1", "pool1", "conv2", "norm2", "pool2", "conv4", "conv5", "pool5"):
        assert per_layer[name] == 2, name
    for name in ("conv1", "conv3", "fc6"):
        assert per_layer[name] == 1, name
    texts = [t.text for t in layout.texts()]
    assert texts.count("27×27×128") == 4        # conv2 and norm2, each group
    assert "5×5 s1 · 2 groups" in texts
    # conv3 reads both of pool2's groups; conv4's groups each read conv3
    assert sorted(a.data["src"] for a in layout.find("arrow") if a.data["dst"] == "conv3:0") \
        == ["pool2:0", "pool2:1"]
    assert sorted(a.data["dst"] for a in layout.find("arrow") if a.data["src"] == "conv3:0") \
        == ["conv4:0", "conv4:1"]


def test_no_label_overlaps_and_no_line_through_a_label(graph):
    layout = diagram_layout(graph)
    assert_legible(layout)


def test_png_not_blank(graph, tmp_path):
    path = tmp_path / "d.png"
    render_diagram(graph, path)
    img = Image.open(path)
    assert img.format == "PNG" and img.width >= 1200
    pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10
    colours = pixels.reshape(-1, 3).astype(np.uint32) @ np.array([65536, 256, 1], np.uint32)
    assert len(np.unique(colours)) > 50
