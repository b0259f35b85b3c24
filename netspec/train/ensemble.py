"""Ensembles (§6, Table 2): the softmax outputs of several trained networks averaged per image.

"Averaging the predictions of five similar CNNs gives an error rate of 16.4%" against 18.2%
for one: each member scores the same validation images (its own spec, crop and backend), the
ensemble's prediction for an image is the mean of the members' probability vectors, and top-1 /
top-5 error are counted on that mean. The members must share one class list, in one order:
label i has to mean the same class in every run.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import RunError
from .metrics import accuracy
from .saved_run import build_with_weights, read_run


def class_difference(a_name: str, a: Sequence[str], b_name: str, b: Sequence[str]) -> str | None:
    """None if the two class lists are equal, else one line naming the difference: the
    classes only one side has, or the first label where the order differs."""
    a, b = list(a), list(b)
    if a == b:
        return None
    only_a = [c for c in a if c not in set(b)]
    only_b = [c for c in b if c not in set(a)]

    def few(names):
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    if only_a or only_b:
        parts = [f"{len(a)} classes in {a_name}, {len(b)} in {b_name}"]
        if only_a:
            parts.append(f"only in {a_name}: {few(only_a)}")
        if only_b:
            parts.append(f"only in {b_name}: {few(only_b)}")
        return "; ".join(parts)
    if len(a) != len(b):
        return f"{len(a)} class labels in {a_name}, {len(b)} in {b_name} (repeated names)"
    i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return (f"the same {len(a)} classes in another order: label {i} is '{a[i]}' in {a_name} "
            f"but '{b[i]}' in {b_name}")


def ensemble_scores(probs: Sequence[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """Top-1/top-5 error and mean loss of the mean of `probs` (each (N, classes))."""
    mean = np.mean(np.stack([np.asarray(p, np.float64) for p in probs]), axis=0)
    return scores(mean, labels)


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1/top-5 error (fractions) and mean −log p(label) of probabilities (N, classes)."""
    labels = np.asarray(labels)
    a1, a5 = accuracy(probs, labels, (1, 5))
    p = np.maximum(probs[np.arange(len(labels)), labels], 1e-30)
    return {"top1_error": 1.0 - a1, "top5_error": 1.0 - a5,
            "loss": float(-np.log(p).mean())}


def member_probabilities(net, dataset, *, crop: int, batch_size: int, ten_crop: bool = False,
                         split: str = "val", workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, classes) of every image of `split`, in index order (10 views
    averaged with `ten_crop`, §4.1), and the labels (N,)."""
    out, ys = [], []
    if ten_crop:
        batches = dataset.ten_crop_batches(split, batch_size=max(1, batch_size // 10),
                                           crop=crop, workers=workers)
    else:
        batches = dataset.loader(split, batch_size=batch_size, crop=crop, train=False,
                                 workers=workers)
    with batches:
        for x, y in batches:
            x = x.astype(net.dtype, copy=False)
            if ten_crop:
                b, v = x.shape[:2]
                p = net.predict_proba(np.ascontiguousarray(
                    x.reshape(b * v, *x.shape[2:]))).reshape(b, v, -1).mean(axis=1)
            else:
                p = net.predict_proba(x)
            out.append(np.asarray(p, np.float64))
            ys.append(np.array(y))          # the loader reuses its batch buffers
    if not out:
        raise RunError(f"the '{split}' split has no images to score")
    return np.concatenate(out), np.concatenate(ys)


def run_ensemble(*, checkpoints: Sequence[str], spec=None, data=None, ten_crop=False,
                 backend="auto", devices=None, batch_size=None, workers=0) -> dict:
    """Score each run on the validation images and their averaged softmax (see the module
    docstring). Each run uses its own spec (or `spec` for a checkpoint without a run state),
    the first run's data unless `data` is given.

    Returns {"members": [{"checkpoint", "network", "top1_error", "top5_error", "loss"}, ...],
    "ensemble": {"top1_error", "top5_error", "loss"}, "images", "views", "data"}.
    Raises RunError when the class lists differ (naming the difference) or a run can't be
    used.
    """

    from ..data import open_dataset
    from ..ir.build import build_graph

    members = []
    for ckpt in checkpoints:
        params, state = read_run(ckpt)
        if spec is None and "spec_text" not in state:
            raise RunError(f"{ckpt}: give --spec (the checkpoint has no run state naming one)")
        graph = build_graph(state.get("spec_text", spec))
        members.append((str(ckpt), params, state, graph))
    first = members[0]
    for ckpt, _, state, _ in members[1:]:
        if state.get("classes") and first[2].get("classes"):
            diff = class_difference(first[0], first[2]["classes"], ckpt, state["classes"])
            if diff:
                raise RunError(f"the ensemble's runs must share one class list: {diff}")
    classes = {g.classes for *_, g in members}
    if len(classes) > 1:
        raise RunError("the ensemble's networks have different class counts: "
                       + ", ".join(f"{c}: {g.classes}" for c, *_, g in members))
    data = data or first[2].get("data")
    if data is None:
        raise RunError("give --data (the first checkpoint has no run state naming its data)")
    datasets: dict[int, object] = {}
    total = None
    labels = None
    rows = []
    for ckpt, params, state, graph in members:
        r = graph.recipe
        crop = r.crop or graph.input_shape[1]
        base = r.base or crop
        if base not in datasets:
            datasets[base] = open_dataset(data, base, workers=workers)
        ds = datasets[base]
        if state.get("classes"):
            diff = class_difference(ckpt, state["classes"], str(data), ds.classes)
            if diff:
                raise RunError(f"the classes of {data} differ from those {ckpt} was trained "
                               f"on: {diff}")
        net = build_with_weights(graph, backend, devices, params, ckpt)
        p, y = member_probabilities(net, ds, crop=crop, batch_size=batch_size or r.batch_size,
                                    ten_crop=ten_crop, workers=workers)
        if labels is not None and not np.array_equal(labels, y):
            raise RunError(f"{ckpt} scored other validation images than {first[0]}")
        labels = y
        total = p if total is None else total + p
        rows.append({"checkpoint": ckpt, "network": graph.name, **scores(p, y)})
    ens = scores(total / len(members), labels)
    return {"members": rows, "ensemble": ens, "images": len(labels),
            "views": 10 if ten_crop else 1, "data": str(data), "classes": graph.classes}


def format_ensemble(result: dict) -> str:
    """The table `netspec eval` prints for several checkpoints."""
    width = max(len("ensemble"), *(len(m["checkpoint"]) for m in result["members"]))
    n = len(result["members"])
    lines = [(f"ensemble of {n} runs on {result['images']} val images of {result['data']}, "
             f"{'10-crop' if result['views'] == 10 else 'centre crop'} (softmax averaged, §6):")]
    for m in [*result["members"], {"checkpoint": "ensemble", **result["ensemble"]}]:
        top5 = f"  top-5 error {100 * m['top5_error']:6.2f}%" if result.get(
            "classes", 6) > 5 else ""        # 5 classes or fewer: top-5 is always right
        lines.append(f"  {m['checkpoint']:<{width}}  top-1 error {100 * m['top1_error']:6.2f}%"
                     f"{top5}")
    return "\n".join(lines)
