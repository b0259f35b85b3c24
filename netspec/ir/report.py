"""What `netspec compile` reports about a graph: per layer and per logical GPU."""
from __future__ import annotations

import math
from typing import Any

from .graph import Graph

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
            "connect": l.connect,
            "line": l.pos.line,
        })
    return rows


def device_rows(g: Graph, batch_size: int) -> list[dict[str, int]]:
    """Per logical GPU: parameter bytes and bytes sent to the others in one training step
    (forward activations out, and backward gradients back for the parts it received)."""
    out = []
    for gpu in range(g.gpus):
        params = 0
        for l in g.weighted_layers:
            for p in l.parts:
                if p.gpu == gpu:
                    w = l.weight_shape(p)
                    params += math.prod(w) + p.channels
        out.append({
            "gpu": gpu,
            "param_bytes": params * FLOAT_BYTES,
            "sent_bytes_per_step": g.sent_elements_per_image(gpu) * batch_size * FLOAT_BYTES,
        })
    return out


def summary(g: Graph) -> dict[str, Any]:
    return {
        "network": g.name,
        "input_shape": list(g.input_shape),
        "classes": g.classes,
        "gpus": g.gpus,
        "batch_size": g.recipe.batch_size,
        "total_params": g.total_params,
        "total_macs": g.total_macs,
        # the paper's "650,000 neurons": outputs of the weighted layers
        "total_neurons": sum(l.neurons for l in g.weighted_layers),
        "layers": layer_rows(g),
        "devices": device_rows(g, g.recipe.batch_size),
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
    head = ("layer", "type", "output", "per GPU", "connect", "params", "neurons", "MACs")
    rows = [head]
    for r in info["layers"]:
        split = "/".join(str(s) for s in r["gpu_split"]) if info["gpus"] > 1 \
            else str(r["gpu_split"][0])
        rows.append((r["name"], r["type"], _shape(r["output_shape"]), split,
                     r["connect"] or "-", f"{r['params']:,}", f"{r['neurons']:,}",
                     f"{r['macs']:,}"))
    rows.append(("total", "", "", "", "", f"{info['total_params']:,}",
                 f"{info['total_neurons']:,}", f"{info['total_macs']:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {5, 6, 7}

    def fmt(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    lines = [f"{info['network']}: input {_shape(info['input_shape'])}, {info['classes']} "
             f"classes, {info['gpus']} logical GPU{'s' if info['gpus'] != 1 else ''}", ""]
    lines.append(fmt(rows[0]))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt(r) for r in rows[1:-1]]
    lines.append("  ".join("-" * w for w in widths))
    lines.append(fmt(rows[-1]))
    lines.append("")
    lines.append(f"per logical GPU, batch {info['batch_size']}:")
    for d in info["devices"]:
        extra = ""
        if "activation_bytes" in d:
            extra = f"  activations {_bytes(d['activation_bytes'])}"
        if "memory_bytes" in d:
            extra += f"  total {_bytes(d['memory_bytes'])}"
        lines.append(f"  GPU {d['gpu']}: params {_bytes(d['param_bytes'])}{extra}  "
                     f"sends {_bytes(d['sent_bytes_per_step'])}/step")
    return "\n".join(lines)
