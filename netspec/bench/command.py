"""`netspec bench --spec SPEC [--backend B] [--batch-size N] [--iterations N] [--json]`: time a
training step per layer and direction, like `caffe time` (see timing.py for how each backend
is timed). Registered in netspec/cli.py as `main.add_command(bench)`."""
from __future__ import annotations

import json

import click

BACKENDS = click.Choice(["auto", "numpy", "cpu", "opencl", "cuda"])


@click.command("bench")
@click.option("--spec", required=True, type=click.Path(), help="The network.")
@click.option("--backend", type=BACKENDS, default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), help="Default: the spec's batch.")
@click.option("--iterations", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed training steps (medians are reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed steps first (kernel builds, allocations).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--kernels", "show_kernels", is_flag=True,
              help="Also list every kernel's time and GFLOP/s (opencl, cuda).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option("--tune", is_flag=True,
              help="First autotune the GEMM tiles on the OpenCL device (cached; see "
                   "netspec compile --tune), then time with them.")
@click.option("--tune-budget", type=click.FloatRange(min=0), default=300, show_default=True,
              help="Seconds of tuning at most.")
@click.option("--roofline", is_flag=True,
              help="Time nothing: print every kernel's sm_90 resources (nvcc --resource-usage: "
                   "registers, spills, shared memory, occupancy) and its roofline bound at H200 "
                   "peaks, compile-only.")
def bench(spec, backend, batch_size, iterations, warmup, seed, show_kernels, as_json, tune,
          tune_budget, roofline):
    """Time forward, backward and update of SPEC per layer: ms, GFLOP/s, share, images/s."""
    from .timing import bench as run_bench
    from .timing import format_table

    if roofline:
        from .roofline import roofline_report
        click.echo(roofline_report(spec, batch_size, as_json=as_json))
        return

    if tune:
        # the winners land in the autotune cache, which the backend's own compile reads
        from ..ir.build import build_graph
        from ..runtime import autotune
        graph = build_graph(path=spec)
        autotune.compile_tuned(graph, batch_size or graph.recipe.batch_size, tune=True,
                               tune_budget_s=tune_budget)
        click.echo(autotune.describe_stats(autotune.LAST), err=True)

    res = run_bench(spec, backend, batch_size=batch_size, iterations=iterations,
                    warmup=warmup, seed=seed)
    if as_json:
        click.echo(json.dumps(res.to_json()))
    else:
        click.echo(format_table(res, kernels=show_kernels))
