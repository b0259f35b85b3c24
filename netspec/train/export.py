"""`netspec export`: a spec's network, with a run's weights or its initial ones, as ONNX."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..codegen.onnx_export import ExportError, write_onnx
from ..errors import RunError
from .saved_run import read_run


def export_network(spec, output, *, checkpoint=None, seed: int = 0) -> dict:
    """Write SPEC's network to `output` (.onnx). Weights: the checkpoint's (a run directory or
    .safetensors file), else the spec's initialisation for `seed` (netspec/runtime/net.py's
    draw order, so `netspec.build(spec, seed=seed)` starts from the same numbers).

    Returns {"network", "path", "bytes", "params", "classes", "weights"}. Raises ExportError
    (onnx missing, a checkpoint that doesn't fit) or RunError (unreadable checkpoint).
    """

    from ..ir.build import build_graph
    from ..runtime import build

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("netspec export needs the onnx package: pip install "
                          "'netspec[onnx]'") from None
    graph = build_graph(os.fspath(spec))
    classes = names = mean = None
    if checkpoint is not None:
        params, state = read_run(checkpoint)
        wanted = graph.param_shapes()
        problems = [f"missing {n}" for n in wanted if n not in params]
        problems += [f"{n} has shape {tuple(params[n].shape)}, expected {s}"
                     for n, s in wanted.items() if n in params and tuple(params[n].shape) != s]
        problems += [f"unexpected {n}" for n in params if n not in wanted]
        if problems:
            raise RunError(f"{checkpoint}: the checkpoint does not match {graph.name}'s spec: "
                           + "; ".join(problems))
        classes, names = state.get("classes"), state.get("class_names")
        if state.get("data_mean") is not None:
            mean = np.asarray(state["data_mean"], np.float32)
        weights = f"checkpoint {checkpoint}"
    else:
        params = build(graph, "numpy", seed=seed).parameters()
        weights = f"initial weights for seed {seed}"
    out = Path(output)
    size = write_onnx(graph, params, out, classes=classes, class_names=names, mean=mean)
    return {"network": graph.name, "path": str(out), "bytes": size,
            "params": graph.total_params, "classes": graph.classes, "weights": weights}
