"""Run directories written here, in the documented checkpoint format (train/checkpoint.py):
weights and momentum in checkpoint.safetensors, the state in state.json."""
from __future__ import annotations

import json
import pathlib

import numpy as np
from safetensors.numpy import save_file

from netspec.ir.build import build_graph

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = (ROOT / "examples" / "tiny-alexnet.net").read_text()


def write_run(path: pathlib.Path, spec_text: str, *, classes=None, seed=0, std=0.05,
              mean=None, data=None, class_names=None) -> tuple[pathlib.Path,
                                                               dict[str, np.ndarray]]:
    """A run with random N(0, std) parameters; returns (path, params)."""
    graph = build_graph(spec_text)
    rng = np.random.default_rng(seed)
    params = {n: rng.normal(0, std, s).astype(np.float32)
              for n, s in graph.param_shapes().items()}
    tensors = dict(params)
    tensors.update({f"momentum.{n}": np.zeros_like(a) for n, a in params.items()})
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "checkpoint.safetensors"))
    state = {"spec_text": spec_text, "network": graph.name, "data": data, "step": 0,
             "epoch": 0,
             "classes": classes or [f"class{i:02d}" for i in range(graph.classes)]}
    if class_names is not None:
        state["class_names"] = list(class_names)
    if mean is not None:
        state["data_mean"] = np.asarray(mean).tolist()
    (path / "state.json").write_text(json.dumps(state))
    return path, params
