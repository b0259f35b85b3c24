"""`netspec bench --roofline`: the static readiness table (netspec/codegen/resources.py) of a
spec at a batch size, without a device: what the first run on a GPU should expect of each
kernel."""
from __future__ import annotations

import json

import click


def roofline_report(spec, batch_size: int | None, as_json: bool = False) -> str:
    """The table (or one JSON object) for `spec` at `batch_size` (default: the spec's batch).
    Without nvcc the resource columns are empty and a note says so."""
    from ..codegen.compile import compile_network
    from ..codegen.resources import format_readiness, readiness
    from ..ir.build import build_graph

    graph = build_graph(spec)
    n = batch_size or graph.recipe.batch_size
    compiled = compile_network(graph, n)
    note = ""
    try:
        rows = readiness(compiled)
    except RuntimeError as e:
        if "not on the PATH" not in str(e):
            raise click.ClickException(str(e)) from None
        rows, note = readiness(compiled, with_ptxas=False), f"note: {e}"
    if as_json:
        return json.dumps({"spec": graph.name, "batch": n, "arch": "sm_90",
                           "kernels": [r.to_json() for r in rows]})
    title = f"{graph.name}, batch {n}, {graph.gpus} logical GPU(s)"
    return format_readiness(rows, title) + (f"\n{note}" if note else "")
