"""`netspec eval`: load a checkpoint into the spec's network and score the validation set."""
from __future__ import annotations

from pathlib import Path

from ..errors import RunError
from .checkpoint import STATE, WEIGHTS, load_weights
from .evaluate import evaluate
from .saved_run import run_state


def run_eval(*, spec=None, checkpoint, data=None, ten_crop=False, backend="auto",
             devices=None, batch_size=None, workers=0) -> dict:
    from ..data import open_dataset
    from ..ir.build import build_graph
    from ..runtime import build

    ckpt = Path(checkpoint)
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
    net = build(graph, backend, **({"devices": list(devices)} if devices else {}))
    try:
        net.load_parameters(params)
    except ValueError as e:
        raise RunError(f"{ckpt}: the checkpoint does not match {graph.name}'s spec: {e}") \
            from None
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


def describe_hardest(result: dict, count: int = 5) -> str:
    """One line: the classes with the highest top-1 error, by their human names."""
    scored = [c for c in result.get("per_class", []) if c["images"]]
    worst = sorted(scored, key=lambda c: (-c["top1_error"], c["class"]))[:count]
    if not worst:
        return ""
    return "hardest classes (top-1 error): " + ", ".join(
        f"{c['name']} {100 * c['top1_error']:.0f}%" for c in worst)
