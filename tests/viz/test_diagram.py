"""The architecture diagram: valid SVG and PNG, one lane per GPU, arrows crossing lanes exactly
where parts read another GPU's parts, and nothing drawn over a label."""
from __future__ import annotations

import pathlib
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from netspec.ir.build import build_graph
from netspec.viz import VizError, diagram_layout, render_diagram
from netspec.viz.layout import Polyline, Text

from .conftest import FOUR_GPUS, SHIPPED
from .legibility import assert_legible

SVG = "{http://www.w3.org/2000/svg}"


def _classes(el) -> set[str]:
    return set((el.get("class") or "").split())


def _points(text: str) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in text.split()]


def _svg(graph, tmp_path) -> ET.Element:
    path = tmp_path / f"{graph.name}.svg"
    render_diagram(graph, path)
    return ET.parse(path).getroot()      # raises on malformed XML


def _cross_edges_from_graph(graph) -> tuple[set, set]:
    """(every source part read from another GPU, those read by `connect all` layers), worked
    out from the IR's parts and sources alone."""
    crossing, by_all = set(), set()
    for layer in graph.layers:
        for part in layer.parts:
            for s in part.sources:
                if s.gpu != part.gpu:
                    edge = (f"{s.layer}:{s.part}", f"{layer.name}:{part.index}")
                    crossing.add(edge)
                    if layer.connect == "all":
                        by_all.add(edge)
                src = None if s.layer == "data" else graph.layer(s.layer)
                if src is not None and src.data_parallel and part.slice is None:
                    # the all-gather: every other GPU's batch slice reaches this part
                    crossing.update((f"{s.layer}:{q.index}", f"{layer.name}:{part.index}")
                                    for q in src.parts if q.gpu != part.gpu)
    return crossing, by_all


def test_svg_is_xml_and_names_every_weighted_layer(graph, tmp_path):
    root = _svg(graph, tmp_path)
    texts = {t.text for t in root.iter(f"{SVG}text")}
    for layer in graph.weighted_layers:
        assert layer.name in texts
    assert graph.name in texts


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_one_lane_per_gpu(gpus, tmp_path):
    source = FOUR_GPUS.replace("gpus    4", f"gpus    {gpus}")
    if gpus != 4:
        source = source.replace("  split 3,3,2,2", "")
    graph = build_graph(source)
    root = _svg(graph, tmp_path)
    lanes = [g for g in root.iter(f"{SVG}g") if "lane" in _classes(g)]
    assert len(lanes) == gpus
    assert sorted(g.get("id") for g in lanes) == [f"lane-gpu{i}" for i in range(gpus)]


def test_arrows_cross_lanes_exactly_where_parts_read_another_gpu(graph, tmp_path):
    root = _svg(graph, tmp_path)
    lanes = {}
    for g in root.iter(f"{SVG}g"):
        if "lane" in _classes(g):
            r = g.find(f"{SVG}rect")
            y, h = float(r.get("y")), float(r.get("height"))
            lanes[int(g.get("data-gpu"))] = (y, y + h)

    def lane_of(y):
        (gpu,) = [g for g, (a, b) in lanes.items() if a <= y <= b]
        return gpu

    crossing, crossing_dashed, n_arrows = set(), set(), 0
    for g in root.iter(f"{SVG}g"):
        if "arrow" not in _classes(g):
            continue
        n_arrows += 1
        line = _points(g.find(f"{SVG}polyline").get("points"))
        tip = _points(g.find(f"{SVG}polygon").get("points"))[0]
        edge = (g.get("data-src"), g.get("data-dst"))
        if lane_of(line[0][1]) != lane_of(tip[1]):
            crossing.add(edge)
            if "arrow-all" in _classes(g):
                crossing_dashed.add(edge)
                assert g.find(f"{SVG}polyline").get("stroke-dasharray")
        else:   # an arrow within one GPU never leaves its lane
            assert {lane_of(y) for _, y in line} == {lane_of(tip[1])}
    want_crossing, want_all = _cross_edges_from_graph(graph)
    assert crossing == want_crossing
    assert crossing_dashed == want_all
    # one arrow a source, or one a batch slice where a whole-batch part reads replicas
    assert n_arrows == sum(len(graph.layer(s.layer).parts)
                           if p.slice is None and s.layer != "data"
                           and graph.layer(s.layer).data_parallel else 1
                           for l in graph.layers for p in l.parts for s in p.sources)


def test_alexnet_crosses_at_conv3_and_the_fc_layers():
    layout = diagram_layout(build_graph("specs/alexnet.net"))
    readers = {a.data["dst"].split(":")[0] for a in layout.find("arrow-all")}
    assert readers == {"conv3", "fc6", "fc7", "fc8"}            # §3.5
    assert {a.data["dst"] for a in layout.find("arrow-gather")} == {"prob:0"}


def test_no_label_overlaps_and_no_line_through_a_label(graph):
    layout = diagram_layout(graph)
    assert_legible(layout)


def test_labels_give_shapes_and_kernels():
    layout = diagram_layout(build_graph("specs/alexnet.net"))
    texts = [t.text for t in layout.texts()]
    assert texts.count("55×55×48") == 4          # conv1 and norm1, on each of 2 GPUs
    assert "11×11 s4" in texts and "max 3×3 s2" in texts
    assert "2048" in texts and "1000" in texts
    assert "224×224×3" in texts


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda p: p.stem)
def test_png_default_size_and_not_blank(spec, tmp_path):
    path = tmp_path / "d.png"
    render_diagram(build_graph(spec), path)
    img = Image.open(path)
    assert img.format == "PNG" and img.mode == "RGB"
    assert img.width >= 1200
    pixels = np.asarray(img)
    assert pixels.std() > 10
    colours = pixels.reshape(-1, 3).astype(np.uint32) @ np.array([65536, 256, 1], np.uint32)
    assert len(np.unique(colours)) > 50


@pytest.mark.parametrize("width", [800, 2600])
def test_png_width_is_respected(width, tmp_path):
    path = tmp_path / "d.png"
    render_diagram(build_graph("examples/tiny-alexnet.net"), path, width=width)
    assert Image.open(path).width == width


def test_svg_width_scales_the_drawing(tmp_path):
    path = tmp_path / "d.svg"
    graph = build_graph("examples/tiny-alexnet.net")
    render_diagram(graph, path, width=3000)
    root = ET.parse(path).getroot()
    assert float(root.get("width")) == 3000
    assert root.get("viewBox").split()[2] == f"{diagram_layout(graph).width:g}"


def test_small_net_is_widened_to_the_minimum():
    from .conftest import SMALL
    layout = diagram_layout(build_graph(SMALL))
    assert layout.width >= 1200
    xs = [b.box for b in layout.find("block")]
    assert min(b[0] for b in xs) > 100 and max(b[2] for b in xs) < layout.width - 100


def test_unknown_suffix_is_an_error(tmp_path):
    with pytest.raises(VizError, match=r"\.svg or \.png"):
        render_diagram(build_graph("specs/alexnet.net"), tmp_path / "d.jpg")


def test_text_in_svg_is_escaped():
    from netspec.viz import Layout, render_svg
    layout = Layout(100, 50)
    layout.add("label", Text(5, 20, 'a < b & "c"'), note="<&>")
    root = ET.fromstring(render_svg(layout).encode())
    assert root.find(f"{SVG}g/{SVG}text").text == 'a < b & "c"'
    assert root.find(f"{SVG}g").get("data-note") == "<&>"


ZOO = pathlib.Path(__file__).resolve().parents[2] / "specs" / "zoo"


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "squeezenet1_1"])
def test_zoo_diagrams_are_legible(name):
    assert_legible(diagram_layout(build_graph(path=ZOO / f"{name}.net")))


def _block_x_y(layout) -> dict[str, tuple[float, float]]:
    """Each layer's first box: (its centre x, its top y); a column's boxes are centred."""
    out = {}
    for b in layout.find("block"):
        out.setdefault(b.data["layer"], ((b.box[0] + b.box[2]) / 2, b.box[1]))
    return out


def _arrow_points(arrow) -> list[tuple[float, float]]:
    return [p for s in arrow.shapes if isinstance(s, Polyline) for p in s.points]


def test_inception_branches_lie_side_by_side():
    """An inception module's four branches start in one column, one row each, and end
    along their rows at the concat (no detour below the lane)."""
    layout = diagram_layout(build_graph(path=ZOO / "googlenet.net"))
    pos = _block_x_y(layout)
    starts = ["b1_inception3a", "b2a_inception3a", "b3a_inception3a", "b4_pool_inception3a"]
    assert len({round(pos[n][0], 6) for n in starts}) == 1
    ys = [pos[n][1] for n in starts]
    assert ys == sorted(ys) and len(set(ys)) == 4
    into_concat = [a for a in layout.find("arrow") if a.data["dst"].startswith("inception3a:")]
    assert len(into_concat) == 4
    lowest_box = max(b.box[3] for b in layout.find("block"))
    for a in into_concat:                   # none on the tracks below every box
        assert max(y for _, y in _arrow_points(a)) < lowest_box, a.data


def test_resnet_shortcuts_are_drawn_as_such():
    """An identity shortcut runs under the block it bypasses; a projection (1x1 conv and
    batch norm) sits on its own row beside the block's first conv."""
    graph = build_graph(path=ZOO / "resnet18.net")
    layout = diagram_layout(graph)
    pos = _block_x_y(layout)
    lowest_box = max(b.box[3] for b in layout.find("block"))
    skip = next(a for a in layout.find("arrow")
                if a.data["src"] == "layer1_1:0" and a.data["dst"] == "layer1_2:0")
    assert max(y for _, y in _arrow_points(skip)) > lowest_box     # under every box: the tracks
    assert pos["downsample_layer2_1"][0] == pytest.approx(pos["conv1_layer2_1"][0])
    assert pos["downsample_layer2_1"][1] > pos["conv1_layer2_1"][1]
