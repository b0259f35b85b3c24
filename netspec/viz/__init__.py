"""Figures: the architecture diagram of a spec (the paper's Figure 2).

Every figure is laid out once as a `Layout` (layout.py: boxes, lines, text, bitmaps with
positions) and rendered by svg.py or png.py, chosen by the output file's suffix.

    from netspec.ir.build import build_graph
    from netspec.viz import render_diagram
    render_diagram(build_graph("specs/alexnet.net"), "alexnet.svg")
"""
from .diagram import diagram_layout, graph_edges, render_diagram
from .errors import VizError
from .layout import Layout, overlapping_texts
from .png import render_png
from .render import save_layout
from .svg import render_svg

__all__ = [
    "Layout", "VizError", "diagram_layout", "graph_edges", "overlapping_texts", "render_diagram",
    "render_png", "render_svg", "save_layout",
]
