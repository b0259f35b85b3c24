"""Reading a training run for the figures, and running its network on images.

A run directory holds:
    state.json              {"spec_text": ..., "classes": [names], "data": path, ...}
    metrics.jsonl           one JSON object per evaluation: epoch, step, lr, train_loss,
                            train_top1_error, train_top5_error, val_top1_error,
                            val_top5_error, images_per_sec
    checkpoint.safetensors  parameters under the IR's PyTorch-style names (conv1.weight is
                            (out, in, kh, kw)), and the optimiser's momentum.* buffers

The network is run with the numpy backend (netspec.runtime.build), on centre crops with the
training set's mean image subtracted, as the data loader feeds validation images.
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

BATCH = 32


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
            self._graph = build_graph(self.spec_text)
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
    classifier = graph.layer(head.inputs[0]) if head.type == "softmax" else head
    return list(classifier.inputs)


# -- running the network on a data set -----------------------------------------------------

def _network(run: Run, backend: str):
    try:
        from ..runtime import build
    except ImportError:
        raise VizError("running a network needs netspec.runtime, which this build lacks") \
            from None
    try:
        net = build(run.graph, backend=backend)
    except ValueError as e:   # an unknown or unavailable backend
        raise VizError(str(e)) from None
    try:
        net.load_parameters(run.parameters())
    except ValueError as e:
        raise RunError(f"{run.path}: {e}") from None
    return net


def _dataset(run: Run, data: str | None):
    from ..data import open_dataset

    source = data or run.data
    if not source:
        raise VizError(f"{run.path}: state.json names no data set; give --data DIR")
    recipe = run.graph.recipe
    crop = recipe.crop or run.graph.input_shape[1]
    base = recipe.base or crop
    ds = open_dataset(source, base=None if source == "demo" else base)
    ds.channels = 1 if run.graph.input_shape[0] == 1 else 3
    if run.classes and list(ds.classes) != run.classes:
        raise VizError(f"{source} has {len(ds.classes)} classes that differ from the "
                       f"{len(run.classes)} the run was trained on")
    return ds, crop


def _pick(n_total: int, n: int) -> np.ndarray:
    """n indices spread evenly over 0..n_total-1 (folders list images class by class, so the
    first n would all be one class)."""
    n = min(n, n_total)
    return np.unique(np.linspace(0, n_total - 1, n).round().astype(np.int64)) if n else \
        np.zeros(0, dtype=np.int64)


def _crops(ds, split: str, indices, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre crops as shown (uint8 N×crop×crop×3) and as the net reads them (float32
    N×3×crop×crop, the mean image subtracted)."""
    top = (ds.base - crop) // 2
    window = (slice(top, top + crop), slice(top, top + crop))
    mean = np.asarray(ds.mean, dtype=np.float32)[window]
    shown = np.stack([ds.image(split, int(i))[window] for i in indices])
    x = (shown.astype(np.float32) - mean).transpose(0, 3, 1, 2)
    if getattr(ds, "channels", 3) == 1:  # a 1xHxW net reads grey (ITU-R 601 luma)
        x = np.einsum("nchw,c->nhw", x, np.float32([0.299, 0.587, 0.114]))[:, None]
    return shown, np.ascontiguousarray(x)


def _batched(fn, x: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])


def run_predictions(run: Run, data: str | None = None, count: int = 8,
                    backend: str = "numpy"):
    """(images, probs, labels, class_names) for `count` validation images of the data set."""
    ds, crop = _dataset(run, data)
    split = "val" if "val" in ds.splits else "train"
    indices = _pick(ds.size(split), count)
    if not len(indices):
        raise VizError(f"the data set's {split} split has no images")
    images, x = _crops(ds, split, indices, crop)
    net = _network(run, backend)
    probs = _batched(net.predict_proba, x)
    labels = ds.labels(split)[indices]
    return images, probs, labels, run.class_names or list(ds.class_names)


def _features(net, graph: Graph, x: np.ndarray) -> np.ndarray:
    layers = last_hidden_layers(graph)
    feats = [_batched(lambda b, n=name: net.features(b, n), x).reshape(len(x), -1)
             for name in layers]
    return np.concatenate(feats, axis=1)


def run_neighbours(run: Run, data: str | None = None, count: int = 5, k: int = 6,
                   search: int = 10000, backend: str = "numpy"):
    """For `count` validation images, the k training images nearest in the last hidden layer's
    features, among `search` training images spread over the set (0: all of them).

    Returns (query_images, neighbour_images, distances, query_names, neighbour_names, searched).
    """
    from .neighbours import nearest_neighbours

    ds, crop = _dataset(run, data)
    if "train" not in ds.splits:
        raise VizError("the data set has no train split to search")
    split = "val" if "val" in ds.splits else "train"
    names = run.class_names or list(ds.class_names)
    q_idx = _pick(ds.size(split), count)
    n_train = ds.size("train")
    t_idx = _pick(n_train, n_train if search <= 0 else search)
    if not len(q_idx) or not len(t_idx):
        raise VizError("the data set has too few images for neighbours")
    net = _network(run, backend)
    queries, xq = _crops(ds, split, q_idx, crop)
    q_feats = _features(net, run.graph, xq)
    t_feats = []
    for start in range(0, len(t_idx), 256):    # never hold every training crop at once
        _, xt = _crops(ds, "train", t_idx[start:start + 256], crop)
        t_feats.append(_features(net, run.graph, xt))
    found, dist = nearest_neighbours(q_feats, np.concatenate(t_feats), k)
    chosen = t_idx[found]
    neighbour_images = np.stack([_crops(ds, "train", row, crop)[0] for row in chosen])
    q_labels, t_labels = ds.labels(split)[q_idx], ds.labels("train")
    return (queries, neighbour_images, dist, [names[i] for i in q_labels],
            [[names[t_labels[i]] for i in row] for row in chosen], len(t_idx))


__all__ = ["Run", "open_run", "read_metrics", "read_checkpoint", "layer_kernels",
           "last_hidden_layers", "run_predictions", "run_neighbours"]
