"""`netspec compile SPEC`: check a spec, report its layers and memory, emit its kernels."""
from __future__ import annotations

import functools
import gc
import json

import click

from .options import FiniteFloatRange, batch_size_option, json_option, out_dir_option, tune_options


def _without_gc(f):
    """Run a command with the cyclic collector off: a compile builds millions of long-lived,
    acyclic objects that the collector would rescan to no effect. Back on afterwards (tests
    call commands in one process)."""
    @functools.wraps(f)
    def run(*args, **kwargs):
        was = gc.isenabled()
        gc.disable()
        try:
            return f(*args, **kwargs)
        finally:
            if was:
                gc.enable()
    return run


@click.command("compile")
@click.argument("spec", type=click.Path())
@json_option()
@out_dir_option("Write kernels.cu, kernels.cl, kernels.c (host C + OpenMP) and plan.json into "
                "this directory (made with its parents).")
# -o was this directory's short spelling; -o names a file in every other command
@click.option("-o", "out_short", type=click.Path(file_okay=False), hidden=True,
              help="The old spelling of --out.")
@batch_size_option("Batch size for the memory figures (default: the spec's).")
@tune_options()
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="K data-parallel replicas (mpirun -n K): report the gradient allreduce.")
@click.option("--link-gbps", type=FiniteFloatRange(min=0, min_open=True), default=100,
              show_default=True, help="Interconnect bandwidth per replica, Gb/s.")
@click.option("--gpu", "roofline_gpu", type=click.Choice(["H200", "H100", "A100", "V100",
                                                           "GTX580"]),
              default="H200", show_default=True, help="GPU of the roofline compute time.")
@_without_gc
def compile_cmd(spec, as_json, out, out_short, batch_size, tune, tune_budget, replicas,
                link_gbps, roofline_gpu):
    """Check SPEC, report its layers, and emit kernels with --out DIR."""
    from ..ir.build import build_graph
    from ..ir.report import summary, table_lines
    from ..runtime import autotune

    if out and out_short:
        raise click.UsageError("give the directory once: --out DIR")
    out = out or out_short
    graph = build_graph(path=spec)
    # the plan first: its builder's scratch is freed before the report's rows exist (peak)
    compiled = autotune.compile_tuned(graph, batch_size or graph.recipe.batch_size,
                                      tune=True if tune else None, tune_budget_s=tune_budget)
    if tune:
        click.echo(autotune.describe_stats(autotune.LAST), err=True)
    # keep the plan's memory figures only and drop the plan (once --out has written it)
    # before the report's rows are built: both at once would be a long spec's peak memory
    arena = [int(compiled.plan.memory(gpu)["arena"]) for gpu in range(graph.gpus)]
    total = [int(m) for m in compiled.memory_per_gpu]
    if out:
        compiled.write(out)
    compiled = None
    info = summary(graph)
    if batch_size:
        from ..ir.report import device_rows
        info["batch_size"] = batch_size
        info["devices"] = device_rows(graph, batch_size)
    for d in info["devices"]:
        d["activation_bytes"] = arena[d["gpu"]]
        d["memory_bytes"] = total[d["gpu"]]
    from ..ir.scaling import data_parallel, format_data_parallel
    info["data_parallel"] = data_parallel(graph, replicas, link_gbps, roofline_gpu,
                                          info["batch_size"], rows=info["layers"])
    if any(l.data_parallel for l in graph.layers):       # `parallel data` layers: hybrid
        from ..ir.scaling import format_hybrid, hybrid_schemes
        info["hybrid"] = hybrid_schemes(graph, link_gbps, roofline_gpu)
    if as_json:
        click.echo(json.dumps(info))
    else:
        echo_lines(table_lines(info))
        if replicas > 1:
            click.echo("\n" + format_data_parallel(info["data_parallel"]))
        if "hybrid" in info:
            click.echo("\n" + format_hybrid(info["hybrid"]))
        if out:
            click.echo(f"\nwrote {out}/kernels.cu, {out}/kernels.cl, {out}/kernels.c, "
                       f"{out}/plan.json")


def echo_lines(lines, chunk: int = 4096):
    """Echo an iterable of lines in blocks (a 200,000-layer table is never one string)."""
    block = []
    for line in lines:
        block.append(line)
        if len(block) == chunk:
            click.echo("\n".join(block))
            block = []
    if block:
        click.echo("\n".join(block))
