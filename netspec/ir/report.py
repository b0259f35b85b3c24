"""What `netspec compile` reports about a graph: per layer and per logical GPU."""
from __future__ import annotations

import math
from typing import Any

from .graph import Graph
from .scaling import sent_bytes_per_gpu

FLOAT_BYTES = 4


def layer_rows(g: Graph) -> list[dict[str, Any]]:
    rows = []
    for l in g.compute_layers:
        rows.append({
            "name": l.name,
            "type": l.type,
            "inputs": list(l.inputs),
            "output_shape": list(l.out_shape),
            "params": l.params,
            "neurons": l.neurons,
            "macs": l.macs,
            "gpu_split": l.gpu_split(g.gpus),
            "connect": "data" if l.data_parallel else l.connect,
            "line": l.pos.line,
        })
    return rows


def device_rows(g: Graph, batch_size: int) -> list[dict[str, int]]:
    """Per logical GPU: parameter bytes and bytes sent to the others in one training step
    (forward activations out, and backward gradients back for the parts it received)."""
    params = [0] * g.gpus            # one pass over the parts and the transfers, not one per GPU
    for l in g.weighted_layers:
        for p in l.parts:
            params[p.gpu] += math.prod(l.weight_shape(p)) + p.channels
    if any(l.data_parallel for l in g.layers):      # with the collectives of hybrid layers
        sent = [sum(d.values()) for d in sent_bytes_per_gpu(g, batch_size)]
    else:
        sent = [n * batch_size * FLOAT_BYTES for n in g.sent_elements_per_gpu()]
    return [{"gpu": gpu, "param_bytes": params[gpu] * FLOAT_BYTES,
             "sent_bytes_per_step": sent[gpu]} for gpu in range(g.gpus)]


# The recipe's statements as the report shows them: (statement, key, Recipe field, where the
# spec gave it: the key in Recipe.pos). A value the spec didn't give is netspec's default.
RECIPE_KEYS = (("batch", "", "batch_size", "batch_size"), ("epochs", "", "epochs", "epochs"),
               ("sgd", "lr", "lr", "lr"), ("sgd", "momentum", "momentum", "momentum"),
               ("sgd", "weight_decay", "weight_decay", "weight_decay"),
               ("schedule", "", "schedule", ("plateau", "at", "none")),
               ("schedule", "at", "drop_epochs", "at"),
               ("schedule", "factor", "factor", "factor"),
               ("schedule", "patience", "patience", "patience"),
               ("schedule", "max_drops", "max_drops", "max_drops"),
               ("augment", "crop", "crop", "crop"), ("augment", "from", "base", "from"),
               ("augment", "flip", "flip", "flip"), ("augment", "pca", "pca_sigma", "pca"),
               ("test", "views", "test_views", "views"),
               ("checkpoint", "every", "checkpoint_every", "every"),
               ("checkpoint", "keep", "keep", "keep"),
               ("precision", "", "precision", "precision"))


def recipe_rows(g: Graph) -> list[dict[str, Any]]:
    """The training recipe, one row per value: statement, key, value (None: not set, e.g.
    no crop), and whether it is netspec's default rather than the spec's (Recipe's
    defaults, dsl/spec.py)."""
    r = g.recipe
    rows = []
    for stmt, key, name, given in RECIPE_KEYS:
        keys = given if isinstance(given, tuple) else (given,)
        value = getattr(r, name)
        rows.append({"statement": stmt, "key": key,
                     "value": list(value) if isinstance(value, tuple) else value,
                     "default": not any(k in r.pos for k in keys)})
    return rows


def _recipe_lines(rows: list[dict[str, Any]]):
    by_stmt: dict[str, list[str]] = {}
    for row in rows:
        value, key = row["value"], row["key"]
        if key == "at" and not value or key == "from" and value is None:
            continue                       # only with `schedule at` / a random crop
        if isinstance(value, bool):
            text = key if value else f"no {key}"
        elif value is None:
            text = {"crop": "crop: the input size", "every": "at epoch ends only"}.get(key, key)
        else:
            value = ",".join(map(str, value)) if isinstance(value, list) else f"{value:g}" \
                if isinstance(value, float) else value
            text = f"{key} {value}".strip()
        by_stmt.setdefault(row["statement"], []).append(text + ("*" if row["default"] else ""))
    for stmt, parts in by_stmt.items():
        yield f"  {stmt:<10} {'  '.join(parts)}"


def summary(g: Graph) -> dict[str, Any]:
    rows = layer_rows(g)   # the totals from its figures: each layer's MACs are worked out once
    return {
        "network": g.name,
        "input_shape": list(g.input_shape),
        "classes": g.classes,
        "gpus": g.gpus,
        "batch_size": g.recipe.batch_size,
        "total_params": sum(r["params"] for r in rows)
        + sum(l.params for l in g.layers if l.replicated),
        "total_macs": sum(r["macs"] for r in rows) + sum(l.macs for l in g.layers if l.replicated),
        # the paper's "650,000 neurons": outputs of the weighted layers
        "total_neurons": sum(l.neurons for l in g.weighted_layers),
        "layers": rows,
        "devices": device_rows(g, g.recipe.batch_size),
        "recipe": recipe_rows(g),
        "transfers": [{"layer": t.layer, "part": t.part, "src_gpu": t.src_gpu,
                       "dst_gpu": t.dst_gpu, "elements_per_image": t.elements,
                       "consumers": list(t.consumers)} for t in g.transfers],
    }


def _shape(s) -> str:
    return "x".join(map(str, s))


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def format_table(info: dict[str, Any]) -> str:
    return "\n".join(table_lines(info))


def table_lines(info: dict[str, Any]):
    """`format_table`'s lines, one at a time: the cells are formatted once for the column
    widths and again as each line is written, so a 200,000-layer report never holds them all
    (~70 MB)."""
    head = ("layer", "type", "output", "per GPU", "connect", "params", "neurons", "MACs")
    multi = info["gpus"] > 1

    def cells(r):
        split = "/".join(str(s) for s in r["gpu_split"]) if multi else str(r["gpu_split"][0])
        return (r["name"], r["type"], _shape(r["output_shape"]), split, r["connect"] or "-",
                f"{r['params']:,}", f"{r['neurons']:,}", f"{r['macs']:,}")

    total = ("total", "", "", "", "", f"{info['total_params']:,}",
             f"{info['total_neurons']:,}", f"{info['total_macs']:,}")
    widths = [max(len(head[i]), len(total[i])) for i in range(len(head))]
    for r in info["layers"]:
        for i, c in enumerate(cells(r)):
            widths[i] = max(widths[i], len(c))
    right = {5, 6, 7}
    # one format for every line (str.ljust / rjust, as str.format aligns strings)
    line = "  ".join(f"{{{i}:{'>' if i in right else '<'}{w}}}" for i, w in enumerate(widths))

    def fmt(r):
        return line.format(*r).rstrip()

    yield (f"{info['network']}: input {_shape(info['input_shape'])}, {info['classes']} "
           f"classes, {info['gpus']} logical GPU{'s' if info['gpus'] != 1 else ''}")
    yield ""
    yield fmt(head)
    yield "  ".join("-" * w for w in widths)
    for r in info["layers"]:
        yield fmt(cells(r))
    yield "  ".join("-" * w for w in widths)
    yield fmt(total)
    yield ("(the neurons total counts the weighted layers' outputs, conv and fc, as the paper's "
           "650,000 does)")
    yield ""
    yield f"per logical GPU, batch {info['batch_size']}:"
    for d in info["devices"]:
        extra = ""
        if "activation_bytes" in d:
            extra = f"  activations {_bytes(d['activation_bytes'])}"
        if "memory_bytes" in d:
            extra += f"  total {_bytes(d['memory_bytes'])}"
        yield (f"  GPU {d['gpu']}: params {_bytes(d['param_bytes'])}{extra}  "
               f"sends {_bytes(d['sent_bytes_per_step'])}/step")
    if info.get("recipe"):
        yield ""
        yield "training recipe (* netspec's default: not in the spec):"
        yield from _recipe_lines(info["recipe"])
