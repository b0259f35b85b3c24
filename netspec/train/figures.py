"""The figures `netspec train` writes into the run directory at each evaluation, as
cuda-convnet's shownet and darknet's chart.png users expect: `curves.png` (the learning
curves of metrics.jsonl, netspec/viz/curves.py) and `filters.png` (the first conv layer's
kernels per GPU, Figure 3, netspec/viz/filters.py). The same figures as
`netspec viz --run RUN --curves` and `--filters LAYER`. `--no-figures` turns them off."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..ir.graph import Graph
from ..viz.curves import draw_curves
from ..viz.filters import draw_filters
from ..viz.run import layer_kernels

CURVES, FILTERS = "curves.png", "filters.png"


def write_figures(run_dir: str | os.PathLike, graph: Graph, params: Mapping[str, np.ndarray],
                  metrics: Sequence[Mapping]) -> list[Path]:
    """Write curves.png (from `metrics`, metrics.jsonl's rows) and, where the network has a
    conv layer, filters.png (its first conv layer's kernels from `params`) into `run_dir`,
    each atomically (a temporary name, then a rename). Returns the paths written. Raises
    VizError or OSError when a figure can't be drawn or written."""
    run_dir = Path(run_dir)
    label = f"{graph.name} · {run_dir.name}"
    written = [_atomic(run_dir / CURVES, lambda p: draw_curves(
        metrics, p, title=f"{label} · learning curves"))]
    convs = [layer.name for layer in graph.layers if layer.type == "conv"]
    if convs:
        weights, parts = layer_kernels(graph, dict(params), convs[0])
        written.append(_atomic(run_dir / FILTERS, lambda p: draw_filters(
            weights, p, parts, title=f"{label} · {convs[0]} kernels")))
    return written


def _atomic(path: Path, draw) -> Path:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        draw(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
