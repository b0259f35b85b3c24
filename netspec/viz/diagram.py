"""The architecture diagram in the spirit of the paper's Figure 2, laid out from the IR.

One horizontal lane per logical GPU. Each layer is a column, in network order, with one 3-D box
per part in the lane of the GPU that holds it: height from the maps' spatial size, width from
the part's channels, so the picture shrinks as the net narrows spatially and widens in depth.
A layer with several parts on one GPU (`groups`) has them stacked in that GPU's lane, one box
per group.
Each column has a header (layer name, kernel size and stride); each box is labelled with its
part's shape, H×W×C as in the paper.

Branches lie side by side: a layer's column is one past its deepest input's (so the branches
of an inception module or a residual block share columns), and where one layer feeds several,
each reader after the first starts a row of its own below it within the lane (`_grid`); the
join that reads them back takes the highest of their rows. A layer on a lower row has its
header over its box, inside the lane. An arrow that skips columns runs along its source's row
when that row is empty up to the reader (a branch's end reaching its join), else along a track
below the lane (a residual connection: drawn under the path it bypasses).

Arrows are the parts' sources: one per (source part, reading part). An arrow between parts on
the same GPU stays in its lane; one between GPUs crosses lanes, red and dashed where a
`connect all` layer reads another GPU's part, purple and dotted where a layer gathers all parts
onto one GPU (the softmax). Arrows run under the boxes and only through the gaps between
columns, so they never cross a label; a layer that reads a non-adjacent one is reached along a
track below its source lane.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..ir.graph import Graph, Layer
from ..ops import OPS
from .fonts import line_metrics, text_width
from .layout import Layout, Polygon, Polyline, Rect, Text, arrow_head
from .render import save_layout

MIN_WIDTH = 1200
MARGIN = 24

TITLE, SUBTITLE, NAME, DETAIL, SHAPE, LANE, LEGEND = 20, 13, 13, 12, 12, 14, 12

# a layer type's colour and legend name are its op's (Op.colour, Op.label); the input is no op
INPUT_COLOUR = "#b5b5b5"
OTHER_COLOUR = "#cccccc"
LANE_FILLS = ("#f3f6fb", "#fbf7ef")
LANE_STROKE = "#d5dce6"


@dataclass(frozen=True)
class ArrowStyle:
    colour: str
    width: float
    dash: tuple[float, ...] | None
    label: str


ARROWS = {
    "same-gpu": ArrowStyle("#4d4d4d", 1.4, None, "stays on its GPU"),
    "all": ArrowStyle("#d62728", 1.7, (7.0, 4.0), "connect all: crosses to another GPU"),
    "gather": ArrowStyle("#7b3fa0", 1.7, (2.0, 3.0), "gathered onto one GPU"),
    "batch": ArrowStyle("#1f77b4", 1.7, (4.0, 2.0, 1.0, 2.0),
                        "all-gather of the batch slices (parallel data: every GPU a replica); "
                        "reduce-scatter back"),
}


@dataclass(frozen=True)
class Edge:
    """Part `src_part` of layer `src` is read by part `dst_part` of layer `dst`."""

    src: str
    src_part: int
    src_gpu: int
    dst: str
    dst_part: int
    dst_gpu: int
    kind: str           # same-gpu | all | gather | batch


def graph_edges(graph: Graph) -> list[Edge]:
    """Every (source part -> reading part) pair of the graph, with its arrow style."""
    edges = []
    for layer in graph.layers:
        for p in layer.parts:
            for s in p.sources:
                src = graph.layer(s.layer)
                if p.slice is None and src.data_parallel:      # every GPU's slice comes
                    edges += [Edge(s.layer, q.index, q.gpu, layer.name, p.index, p.gpu,
                                   "batch" if q.gpu != p.gpu else "same-gpu")
                              for q in src.parts]
                    continue
                if s.gpu == p.gpu:
                    kind = "same-gpu"
                elif layer.connect == "all":
                    kind = "all"
                else:
                    kind = "gather"
                edges.append(Edge(s.layer, s.part, s.gpu, layer.name, p.index, p.gpu, kind))
    return edges


def shape_label(shape: tuple[int, ...]) -> str:
    """55×55×48 for maps (the paper's H×W×C), 2048 for neurons."""
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}×{w}×{c}"
    return "×".join(map(str, shape))


def detail_label(layer: Layer) -> str:
    """What the layer does, briefly: kernel size and stride for conv and pooling."""
    if layer.replicated:
        return "input"
    if layer.groups > 1:
        return f"{_op_label(layer)} · {layer.groups} groups"
    return _op_label(layer)


def _op_label(layer: Layer) -> str:
    """detail_label without the groups: the op's own description."""
    return layer.op.describe(layer.attrs) if layer.type in OPS else layer.type


def type_colour(type_name: str) -> str:
    """The box colour of a layer type (its op's), the input's grey for the input."""
    if type_name == "input":
        return INPUT_COLOUR
    op = OPS.get(type_name)
    return op.colour if op is not None else OTHER_COLOUR


def type_legend(type_name: str) -> str:
    """The legend's name for a layer type (its op's label)."""
    op = OPS.get(type_name)
    return op.legend if op is not None else type_name


def _shade(colour: str, factor: float) -> str:
    """Lighter (factor > 1) or darker (< 1) version of a #rrggbb colour."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    if factor >= 1:
        rgb = [round(c + (255 - c) * (factor - 1)) for c in rgb]
    else:
        rgb = [round(c * factor) for c in rgb]
    return "#" + "".join(f"{min(255, max(0, c)):02x}" for c in rgb)


@dataclass(frozen=True)
class BoxSize:
    w: float      # front face width (channels)
    h: float      # front face height (spatial size)
    d: float      # depth offset of the top and side faces

    @property
    def above(self) -> float:      # extent above the lane's axis (the front face's centre)
        return self.h / 2 + self.d

    @property
    def below(self) -> float:
        return self.h / 2


def _box_sizes(graph: Graph) -> dict[tuple[str, int], BoxSize]:
    maps = [(l, p) for l in graph.layers for p in l.parts if len(l.out_shape) == 3]
    vecs = [(l, p) for l in graph.layers for p in l.parts if len(l.out_shape) != 3]
    hmax = max((l.out_shape[1] for l, _ in maps), default=1)
    cmax = max((p.channels for _, p in maps), default=1)
    nmax = max((p.channels for _, p in vecs), default=1)
    sizes = {}
    for l, p in maps:
        h = 14 + 70 * math.sqrt(l.out_shape[1] / hmax)
        w = 7 + 28 * math.log2(1 + p.channels) / math.log2(1 + max(cmax, 2))
        sizes[(l.name, p.index)] = BoxSize(w, h, 0.32 * h)
    for l, p in vecs:
        h = 22 + 58 * math.sqrt(p.channels / nmax)
        sizes[(l.name, p.index)] = BoxSize(9, h, 5)
    return sizes


def _box(x: float, axis: float, size: BoxSize, colour: str) -> tuple[Polygon, Polygon, Rect]:
    """Top face, side face and front face of a box whose front face is centred on `axis`."""
    w, h, d = size.w, size.h, size.d
    top_y = axis - h / 2
    edge = _shade(colour, 0.62)
    top = Polygon(((x, top_y), (x + d, top_y - d), (x + w + d, top_y - d), (x + w, top_y)),
                  _shade(colour, 1.35), edge, 0.8)
    side = Polygon(((x + w, top_y), (x + w + d, top_y - d), (x + w + d, top_y + h - d),
                    (x + w, top_y + h)), _shade(colour, 0.82), edge, 0.8)
    front = Rect(x, top_y, w, h, colour, edge, 0.8)
    return top, side, front


def _spread(n: int, half: float) -> list[float]:
    """n offsets spaced evenly within ±half, centred on 0; at most 9 px apart."""
    if n == 1:
        return [0.0]
    step = min(9.0, 2 * half / (n - 1))
    return [(i - (n - 1) / 2) * step for i in range(n)]


def _grid(graph: Graph) -> tuple[dict[str, int], dict[str, int]]:
    """Each layer's column and row. Column: one past its inputs' deepest (longest path from
    the input). Row: a layer with one input takes that input's row plus its rank among the
    input's single-input readers (its first reader stays on the row, the next go below); a
    join takes its inputs' highest row; a row taken in that column pushes it further down."""
    col: dict[str, int] = {}
    row: dict[str, int] = {}
    rank: dict[str, int] = {}          # single-input readers of a layer placed so far
    taken: set[tuple[int, int]] = set()
    for l in graph.layers:
        srcs = [s for s in l.inputs if s in col]
        col[l.name] = 1 + max((col[s] for s in srcs), default=-1)
        if len(srcs) == 1:
            want = row[srcs[0]] + rank.get(srcs[0], 0)
            rank[srcs[0]] = rank.get(srcs[0], 0) + 1
        else:
            want = min((row[s] for s in srcs), default=0)
        while (col[l.name], want) in taken:
            want += 1
        row[l.name] = want
        taken.add((col[l.name], want))
    return col, row


def diagram_layout(graph: Graph) -> Layout:
    """Lay out the architecture of `graph`: lanes, boxes, labels, arrows, legend, title."""
    layers = graph.layers
    col, row = _grid(graph)
    ncols = max(col.values()) + 1
    rows = max(row.values()) + 1
    gpus = graph.gpus
    sizes = _box_sizes(graph)
    edges = graph_edges(graph)
    stacks: dict[tuple[str, int], list[int]] = {}   # (layer, gpu) -> its parts there, in order
    for l in layers:
        for p in l.parts:
            stacks.setdefault((l.name, p.gpu), []).append(p.index)

    name_asc, name_desc = line_metrics(NAME, True)
    det_asc, det_desc = line_metrics(DETAIL)
    shp_asc, shp_desc = line_metrics(SHAPE)

    # -- columns: as wide as their widest box or label ---------------------------------------
    headers = [(l.name, detail_label(l)) for l in layers]
    col_w = [0.0] * ncols
    for l, (name, det) in zip(layers, headers):
        widths = [text_width(name, NAME, True), text_width(det, DETAIL)]
        for p in l.parts:
            s = sizes[(l.name, p.index)]
            widths += [s.w + s.d, text_width(shape_label(l.part_out_shape(p)), SHAPE)]
        col_w[col[l.name]] = max(col_w[col[l.name]], max(widths) + 6)

    # -- gaps: room for arrows; wider where arrows cross lanes or detour ---------------------
    taken = {(col[l.name], row[l.name]) for l in layers}
    along_row = {e for e in edges if col[e.dst] > col[e.src] + 1 and not any(
        (k, row[e.src]) in taken for k in range(col[e.src] + 1, col[e.dst]))}
    skips = [e for e in edges if col[e.dst] > col[e.src] + 1 and e not in along_row]
    leaving = [0] * ncols            # skip detours turning down in the gap after a column
    entering = [0] * ncols           # ... and up into the gap before one
    for e in skips:
        leaving[col[e.src]] += 1
        entering[col[e.dst]] += 1
    gaps = []
    for i in range(ncols - 1):
        crossing = any(e.src_gpu != e.dst_gpu for e in edges
                       if col[e.src] == i and col[e.dst] == i + 1)
        gap = 30 + (16 + 8 * gpus if crossing else 0)
        gaps.append(gap + 6 * (leaving[i] + entering[i + 1]))

    lane_label_w = max(text_width(f"GPU {g}", LANE, True) for g in range(gpus))
    left = MARGIN + lane_label_w + 18
    natural = left + sum(col_w) + sum(gaps) + MARGIN
    if natural < MIN_WIDTH and gaps:          # spread a narrow net out, then centre it
        extra = min((MIN_WIDTH - natural) / len(gaps), 60)
        gaps = [g + extra for g in gaps]
        natural = left + sum(col_w) + sum(gaps) + MARGIN
    width = max(MIN_WIDTH, math.ceil(natural))
    shift = (width - natural) / 2
    xs = []
    x = left + shift
    for i, w in enumerate(col_w):
        xs.append(x)
        x += w + (gaps[i] if i < len(gaps) else 0)

    # -- rows: title, column headers, lanes, legend ------------------------------------------
    title_base = MARGIN + line_metrics(TITLE, True)[0]
    sub_base = title_base + line_metrics(TITLE, True)[1] + 6 + line_metrics(SUBTITLE)[0]
    name_base = sub_base + line_metrics(SUBTITLE)[1] + 22 + name_asc
    det_base = name_base + name_desc + 3 + det_asc
    lanes_top = det_base + det_desc + 10

    # A layer with several parts on one GPU (`groups`) stacks them in that GPU's lane, each
    # box with its shape label under it; a row is as tall as its tallest stack, and a row
    # below the first has its layers' headers over its boxes.
    above = max(s.above for s in sizes.values())
    below = max(s.below for s in sizes.values())
    label_drop = below + 6 + shp_asc          # a box's axis to its shape label's baseline
    header_h = name_asc + name_desc + 3 + det_asc + det_desc + 6
    tracks = max([sum(1 for e in skips if e.src_gpu == g) for g in range(gpus)] + [0])
    pad = 12
    # each lane's rows: extent above / below the row's middle axis
    up = [[above] * rows for _ in range(gpus)]
    down = [[0.0] * rows for _ in range(gpus)]
    pitch = {}
    for (name, g), idx in stacks.items():
        top = max(sizes[(name, i)].above for i in idx)
        pitch[(name, g)] = top + label_drop + shp_desc + 10
        half = (len(idx) - 1) / 2 * pitch[(name, g)]
        up[g][row[name]] = max(up[g][row[name]], half + top)
        down[g][row[name]] = max(down[g][row[name]], half)
    lane_top, lane_hs, row_axis, track_top = [], [], [], []
    y = lanes_top
    for g in range(gpus):
        lane_top.append(y)
        ys = [y + pad + up[g][0]]
        for r in range(1, rows):
            ys.append(ys[-1] + down[g][r - 1] + label_drop + shp_desc + 8 + header_h
                      + up[g][r])
        row_axis.append(ys)
        track_off = ys[-1] - y + down[g][-1] + label_drop + shp_desc + 8
        track_top.append(y + track_off)
        lane_hs.append(track_off + 7 * tracks + pad - (8 if not tracks else 0))
        y += lane_hs[-1]
    axis = [ys[0] for ys in row_axis]
    part_axis = {}
    for (name, g), idx in stacks.items():
        for k, i in enumerate(idx):
            part_axis[(name, i)] = row_axis[g][row[name]] + \
                (k - (len(idx) - 1) / 2) * pitch[(name, g)]

    layout = Layout(width, 0, title=f"{graph.name}: architecture on {gpus} GPU"
                                    f"{'s' if gpus != 1 else ''}")
    n_weighted = len(graph.weighted_layers)
    layout.add("title", Text(MARGIN, title_base, graph.name, TITLE, "#111111", bold=True))
    sub = (f"{gpus} logical GPU{'s' if gpus != 1 else ''} · input "
           f"{shape_label(graph.input_shape)} · {graph.classes} classes · {n_weighted} "
           f"weighted layers · {graph.total_params:,} parameters")
    if gpus > 1:
        sub += f" · {len(graph.transfers)} cross-GPU transfers per step"
    layout.add("subtitle", Text(MARGIN, sub_base, sub, SUBTITLE, "#444444"))

    for g in range(gpus):
        layout.add("lane", Rect(MARGIN, lane_top[g], width - 2 * MARGIN, lane_hs[g],
                                LANE_FILLS[g % 2], LANE_STROKE),
                   Text(MARGIN + 10, axis[g] + 5, f"GPU {g}", LANE, "#333333", bold=True),
                   id=f"lane-gpu{g}", gpu=g)

    # -- arrows first, so the boxes sit on top of their starts -------------------------------
    box_x = {}
    for l in layers:
        x = xs[col[l.name]]
        for p in l.parts:
            s = sizes[(l.name, p.index)]
            box_x[(l.name, p.index)] = x + (col_w[col[l.name]] - s.w - s.d) / 2
    outs: dict[tuple[str, int], list[Edge]] = {}
    ins: dict[tuple[str, int], list[Edge]] = {}
    for e in edges:
        outs.setdefault((e.src, e.src_part), []).append(e)
        ins.setdefault((e.dst, e.dst_part), []).append(e)
    y_out, y_in = {}, {}
    for key, es in outs.items():
        es.sort(key=lambda e: (e.dst_gpu, col[e.dst]))
        for e, off in zip(es, _spread(len(es), sizes[key].h * 0.35)):
            y_out[e] = part_axis[key] + off
    for key, es in ins.items():
        es.sort(key=lambda e: (e.src_gpu, col[e.src]))
        for e, off in zip(es, _spread(len(es), sizes[key].h * 0.35)):
            y_in[e] = part_axis[key] + off

    used_down = [0] * ncols
    used_up = [0] * ncols
    used_track = [0] * gpus
    for e in edges:
        i, j = col[e.src], col[e.dst]
        src_size = sizes[(e.src, e.src_part)]
        start = (box_x[(e.src, e.src_part)] + src_size.w, y_out[e])
        tip = (box_x[(e.dst, e.dst_part)] - 1, y_in[e])
        right = xs[i] + col_w[i]            # the gap after the source column begins here
        left_d = xs[j]                      # the gap before the reading column ends here
        if j == i + 1:
            pts = [start, (right + 4, start[1]), (left_d - 8, tip[1]), tip]
        elif e in along_row:                # a branch's end: along its empty row to the join
            pts = [start, (xs[j - 1] + col_w[j - 1] + 4, start[1]), (left_d - 8, tip[1]), tip]
        else:
            down_x = right + 8 + 6 * used_down[i]
            up_x = left_d - 10 - 6 * used_up[j]
            track_y = track_top[e.src_gpu] + 7 * used_track[e.src_gpu]
            used_down[i] += 1
            used_up[j] += 1
            used_track[e.src_gpu] += 1
            pts = [start, (down_x, start[1]), (down_x, track_y), (up_x, track_y),
                   (up_x, tip[1]), tip]
        pts = [p for k, p in enumerate(pts) if k == 0 or p != pts[k - 1]]
        style = ARROWS[e.kind]
        head = arrow_head(tip, pts[-2])
        shaft = pts[:-1] + [((head[1][0] + head[2][0]) / 2, (head[1][1] + head[2][1]) / 2)]
        layout.add(f"arrow arrow-{e.kind}",
                   Polyline(tuple(shaft), style.colour, style.width, style.dash),
                   Polygon(head, style.colour),
                   src=f"{e.src}:{e.src_part}", dst=f"{e.dst}:{e.dst_part}",
                   src_gpu=e.src_gpu, dst_gpu=e.dst_gpu, kind=e.kind)

    # -- boxes, their shape labels, and the column headers -----------------------------------
    for l, (name, det) in zip(layers, headers):
        x = xs[col[l.name]]
        cx = x + col_w[col[l.name]] / 2
        colour = type_colour(l.type)
        n_base, d_base = name_base, det_base
        if row[l.name]:                     # over its box, in the lane of its first part
            g = min(p.gpu for p in l.parts)
            d_base = row_axis[g][row[l.name]] - up[g][row[l.name]] - 4 - det_desc
            n_base = d_base - det_asc - 3 - name_desc
        layout.add("header", Text(cx, n_base, name, NAME, "#111111", "middle", True),
                   Text(cx, d_base, det, DETAIL, "#555555", "middle"), layer=l.name)
        for p in l.parts:
            key = (l.name, p.index)
            shape = l.part_out_shape(p)
            layout.add(f"block block-{l.type}", *_box(box_x[key], part_axis[key], sizes[key],
                                                      colour),
                       id=f"{l.name}-part{p.index}", layer=l.name, part=p.index, gpu=p.gpu,
                       type=l.type, shape="x".join(map(str, shape)),
                       channels=f"{p.start}-{p.stop}",
                       stacked=len(stacks[(l.name, p.gpu)]))
            layout.add("part-label", Text(cx, part_axis[key] + label_drop, shape_label(shape),
                                          SHAPE, "#222222", "middle"),
                       layer=l.name, part=p.index)

    # -- legend: arrow styles, then box colours, flowing onto new rows -----------------------
    y = lane_top[-1] + lane_hs[-1] + 26
    leg_asc, leg_desc = line_metrics(LEGEND)
    items = []
    kinds = [k for k in ARROWS if any(e.kind == k for e in edges)]
    for k in kinds:
        items.append(("arrow", k, ARROWS[k].label))
    types = list(dict.fromkeys(l.type for l in layers))
    for t in types:
        items.append(("box", t, type_legend(t)))
    if gpus > 1:
        items.append(("note", "", "the input is copied to every GPU"))
    x = MARGIN
    row_h = leg_asc + leg_desc + 10
    for kind, key, label in items:
        swatch = 34 if kind == "arrow" else (14 if kind == "box" else 0)
        w = swatch + (8 if swatch else 0) + text_width(label, LEGEND) + 22
        if x + w > width - MARGIN and x > MARGIN:
            x, y = MARGIN, y + row_h
        mid = y - leg_asc / 2 + 1
        shapes = []
        if kind == "arrow":
            st = ARROWS[key]
            tip = (x + swatch, mid)
            head = arrow_head(tip, (x, mid))
            shapes += [Polyline(((x, mid), (x + swatch - 6, mid)), st.colour, st.width,
                                st.dash), Polygon(head, st.colour)]
        elif kind == "box":
            c = type_colour(key)
            shapes.append(Rect(x, mid - 7, 14, 14, c, _shade(c, 0.62), 0.8))
        shapes.append(Text(x + swatch + (8 if swatch else 0), y, label, LEGEND, "#333333"))
        layout.add(f"legend legend-{kind}", *shapes, key=key)
        x += w
    layout.height = math.ceil(y + leg_desc + MARGIN)
    return layout


def render_diagram(graph: Graph, path: str | os.PathLike, width: int | None = None) -> Path:
    """Draw `graph`'s architecture to `path`, SVG or PNG by its suffix; `width` in pixels."""
    return save_layout(diagram_layout(graph), path, width)
