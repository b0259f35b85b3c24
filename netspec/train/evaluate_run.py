"""A saved run scored on its validation images: its checkpoint loaded into the spec's network,
then evaluate.evaluate (`netspec eval`; several checkpoints: ensemble.py)."""
from __future__ import annotations

from ..errors import RunError
from .checkpoint import STATE, WEIGHTS, load_weights, resolve_checkpoint
from .evaluate import evaluate
from .saved_run import build_with_weights, run_state


def run_eval(*, spec=None, checkpoint, data=None, ten_crop=False, backend="auto",
             devices=None, batch_size=None, workers=0) -> dict:
    """Top-1 and top-5 error of `checkpoint` (a run directory, a .safetensors file or
    `RUN/checkpoint-best`, the run's best) on the validation images of `data` (default: the
    run's), centre crop or 10 views.

    spec: the network (default: the run's own). Returns evaluate.evaluate's figures with
    network, checkpoint, data, views, layout, labels_source and per_class (class, name,
    images, top1_error per class). RunError when the checkpoint is missing, names no spec or
    data that was not given, or does not match the spec; DataError from the data."""
    from ..data import open_dataset
    from ..ir.build import build_graph

    ckpt = resolve_checkpoint(checkpoint)
    if not ckpt.exists():
        raise RunError(f"{ckpt}: no such run directory or checkpoint")
    # a .safetensors file's state: see saved_run.run_state. The weights are read after the
    # spec, so that a bad --spec is reported first.
    state = run_state(ckpt) if ckpt.is_file() or (ckpt / WEIGHTS).exists() or \
        (ckpt / STATE).exists() else {}
    if spec is None and "spec_text" not in state:
        raise RunError(f"{ckpt}: give --spec (the checkpoint has no run state naming one)")
    graph = (build_graph(path=spec) if spec is not None
             else build_graph(text=state["spec_text"]))
    from ..ir.memory import check_memory
    check_memory(graph, batch_size or graph.recipe.batch_size, False, "evaluating")
    data = data or state.get("data")
    if data is None:
        raise RunError("give --data (the checkpoint has no run state naming its data)")
    r = graph.recipe
    crop = r.crop or graph.input_shape[1]
    base = r.base or crop
    from .input_check import image_channels
    channels = image_channels(graph)
    ds = open_dataset(data, base, workers=workers)
    ds.channels = channels
    if state.get("classes") and list(state["classes"]) != list(ds.classes):
        raise RunError(f"the classes of {data} differ from those the run was trained on")
    params = load_weights(ckpt)
    net = build_with_weights(graph, backend, devices, params, ckpt)
    res = evaluate(net, ds, crop=crop, batch_size=batch_size or r.batch_size,
                   ten_crop=ten_crop, workers=workers)
    counts, errors = res.pop("class_images", []), res.pop("class_top1_error", [])
    from ..data.layouts import display_names
    names = display_names(ds.classes, ds.class_names)
    per_class = [{"class": c, "name": name, "images": k, "top1_error": e}
                 for c, name, k, e in zip(ds.classes, names, counts, errors)]
    return {"network": graph.name, "checkpoint": str(ckpt), "data": str(data),
            "views": 10 if ten_crop else 1, "layout": ds.layout,
            "labels_source": ds.labels_source, **res, "per_class": per_class}

