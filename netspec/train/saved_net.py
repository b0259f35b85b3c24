"""Running a trained network on a data set's images, for the paper's Figure 4: top-5
predictions on validation images, and the last hidden layer's features of validation and
training images with the nearest training images to each.

The run is a saved run (netspec/viz/run.py's `Run`: its spec, checkpoint, classes and data
set). The network is built with a backend (numpy by default, netspec.runtime.build) and fed
centre crops with the training set's mean image subtracted, as the data loader feeds validation
images. The figures themselves (netspec/viz) get plain arrays from here, so that viz never runs
a network.
"""
from __future__ import annotations

import numpy as np

from ..data import open_dataset
from ..errors import RunError
from ..ir.graph import Graph
from ..runtime import build
from ..viz.errors import VizError
from ..viz.neighbours import nearest_neighbours
from ..viz.run import Run, last_hidden_layers

BATCH = 32


def _network(run: Run, backend: str):
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


__all__ = ["run_predictions", "run_neighbours"]
