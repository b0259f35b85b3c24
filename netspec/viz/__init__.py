"""Figures: the architecture diagram of a spec (the paper's Figure 2) and, from a training run,
the first layer's kernels (Figure 3), learning curves, and predictions and nearest neighbours
(Figure 4).

Every figure is laid out once as a `Layout` (layout.py: boxes, lines, text, bitmaps with
positions) and rendered by svg.py or png.py, chosen by the output file's suffix.

    from netspec.ir.build import build_graph
    from netspec.viz import render_diagram
    render_diagram(build_graph("specs/alexnet.net"), "alexnet.svg")
"""
from .curves import curves_layout, draw_curves
from .diagram import diagram_layout, graph_edges, render_diagram
from .errors import VizError
from .filters import draw_filters, filters_layout, normalise_filters
from .layout import Layout, overlapping_texts
from .neighbours import draw_neighbours, nearest_neighbours, neighbours_layout
from .png import render_png
from .predictions import draw_predictions, predictions_layout, top_k
from .render import save_layout
from .svg import render_svg

__all__ = [
    "Layout", "VizError", "curves_layout", "diagram_layout", "draw_curves", "draw_filters",
    "draw_neighbours", "draw_predictions", "filters_layout", "graph_edges", "nearest_neighbours",
    "neighbours_layout", "normalise_filters", "overlapping_texts", "predictions_layout",
    "render_diagram", "render_png", "render_svg", "save_layout", "top_k",
]
