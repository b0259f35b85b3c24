"""Reading a training run for the figures.

A run directory holds:
    state.json              {"spec_text": ..., "classes": [names], "data": path, ...}
    metrics.jsonl           one JSON object per evaluation: epoch, step, lr, train_loss,
                            train_top1_error, train_top5_error, val_top1_error,
                            val_top5_error, images_per_sec
    checkpoint.safetensors  parameters under the IR's PyTorch-style names (conv1.weight is
                            (out, in, kh, kw)), and the optimiser's momentum.* buffers

Figures come from the IR and saved runs only: running the network on images (Figure 4's
predictions and features) is netspec/train/saved_net.py's, which hands the figures plain arrays.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dsl.attrs import suggest
from ..errors import RunError
from ..ir.build import build_graph
from ..ir.graph import Graph
from .errors import VizError


@dataclass
class Run:
    path: Path
    state: dict[str, Any]
    _graph: Graph | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def spec_text(self) -> str:
        return self.state["spec_text"]

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.state.get("classes") or []]

    @property
    def class_names(self) -> list[str]:
        """Human names ("tench") where the data had a synset mapping; else the classes."""
        return [str(c) for c in self.state.get("class_names") or []] or self.classes

    @property
    def data(self) -> str | None:
        return self.state.get("data")

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            self._graph = build_graph(text=self.spec_text)
        return self._graph

    def metrics(self) -> list[dict]:
        return read_metrics(self.path / "metrics.jsonl")

    def parameters(self) -> dict[str, np.ndarray]:
        """The network's parameters from the checkpoint (the momentum buffers left out)."""
        tensors = read_checkpoint(self.path / "checkpoint.safetensors")
        return {k: v for k, v in tensors.items() if not k.startswith("momentum.")}


def open_run(path: str | os.PathLike) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    state_path = path / "state.json"
    if not state_path.is_file():
        raise RunError(f"{path}: not a run directory (it has no state.json)")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{state_path}: cannot read it: {e}") from None
    if not isinstance(state, dict) or not isinstance(state.get("spec_text"), str):
        raise RunError(f"{state_path}: has no \"spec_text\"; was it written by netspec train?")
    return Run(path, state)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The evaluations in a metrics.jsonl file, in file order; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such file; the run has not been evaluated yet")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise RunError(f"{path}:{n}: not a JSON object: {e}") from None
        if not isinstance(row, dict):
            raise RunError(f"{path}:{n}: not a JSON object")
        rows.append(row)
    return rows


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such file; the run has no checkpoint yet")
    try:
        from safetensors.numpy import load_file
        return load_file(str(path))
    except ImportError:
        raise RunError("reading checkpoints needs the safetensors package") from None
    except Exception as e:   # safetensors reports a bad file with its own error types
        raise RunError(f"{path}: cannot read the checkpoint: {e}") from None


def layer_kernels(graph: Graph, params: dict[str, np.ndarray], name: str):
    """A conv layer's kernels and their GPU sections: (weights, [(gpu, start, stop)]).

    weights is one (out, in, kh, kw) array, or one per part where the parts read different
    numbers of input channels (their per-part names).
    """
    convs = [l.name for l in graph.layers if l.type == "conv"]
    try:
        layer = graph.layer(name)
    except KeyError:
        raise VizError(f"{graph.name} has no layer '{name}'{suggest(name, convs)}; its conv "
                       f"layers: {', '.join(convs) or 'none'}") from None
    if layer.type != "conv":
        raise VizError(f"{name} is not a conv layer (it is {layer.type}); --filters shows the "
                       f"kernels of one of "
                       f"{', '.join(convs) or 'none'}")
    parts = [(p.gpu, p.start, p.stop) for p in layer.parts]
    shapes = layer.param_shapes()
    if f"{name}.weight" in shapes:
        keys = [f"{name}.weight"]
    else:
        keys = [f"{name}.part{p.index}.weight" for p in layer.parts]
    arrays = []
    for key in keys:
        if key not in params:
            raise RunError(f"the checkpoint has no '{key}'")
        want = shapes[key]
        if tuple(params[key].shape) != tuple(want):
            raise RunError(f"the checkpoint's '{key}' has shape {tuple(params[key].shape)}, but "
                           f"the spec gives {tuple(want)}")
        arrays.append(np.asarray(params[key]))
    return (arrays[0] if len(arrays) == 1 else arrays), parts


def last_hidden_layers(graph: Graph) -> list[str]:
    """The layers whose outputs feed the classifier (the layer before the softmax): the
    'last hidden layer' whose features Figure 4 compares."""
    head = graph.compute_layers[-1]
    classifier = graph.layer(head.inputs[0]) if head.op.loss_layer else head
    return list(classifier.inputs)


__all__ = ["Run", "open_run", "read_metrics", "read_checkpoint", "layer_kernels",
           "last_hidden_layers"]
