"""`netspec bench --spec SPEC`: time a training step per layer and direction, like `caffe
time` (netspec/bench/timing.py says how each backend is timed); with --vs-pytorch, alternate
each step with PyTorch's (bench/vs_pytorch.py); with --roofline, time nothing and report each
kernel's resources and roofline bound (bench/roofline.py)."""
from __future__ import annotations

import json

import click

from .options import backend_option, batch_size_option, json_option, seed_option, tune_options


@click.command("bench")
@click.option("--spec", required=True, type=click.Path(), metavar="SPEC", help="The network.")
@backend_option("Backend to time")
@batch_size_option("Images per step (default: the spec's batch).")
@click.option("--iterations", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed training steps (medians are reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed steps first (kernel builds, allocations).")
@seed_option("Seed of the initial weights and the random batch.")
@click.option("--kernels", "show_kernels", is_flag=True,
              help="Also list every kernel's time and GFLOP/s (opencl, cuda).")
@json_option()
@tune_options(", then time with them")
@click.option("--roofline", is_flag=True,
              help="Time nothing: print every kernel's sm_90 resources (nvcc --resource-usage: "
                   "registers, spills, shared memory, occupancy) and its roofline bound at H200 "
                   "peaks, compile-only.")
@click.option("--sass", is_flag=True,
              help="Time nothing: model every kernel on one H100 from its sm_90 machine code "
                   "(nvdisasm, ptxas -v): the GEMMs' inner-loop instruction mix, bounds, "
                   "occupancy and waves on 132 SMs, and a MODELLED step time, before and after "
                   "the blocked GEMM family (bench/sass.py states the rules). Compile-only; "
                   "needs nvcc and nvdisasm (pip install nvidia-cuda-nvdisasm).")
@click.option("--vs-pytorch", is_flag=True,
              help="Alternate each netspec step with PyTorch's same step (same weights and "
                   "batch, torch.optim.SGD with the recipe's momentum and weight decay; on "
                   "CUDA for --backend cuda, else on the CPU in a process of its own) and compare "
                   "per layer type and "
                   'for the whole step. Needs torch: pip install "netspec[bench]".')
def bench(spec, backend, batch_size, iterations, warmup, seed, show_kernels, as_json, tune,
          tune_budget, roofline, sass, vs_pytorch):
    """Time forward, backward and update of SPEC per layer: ms, GFLOP/s, share, images/s."""
    from ..bench.timing import bench as run_bench
    from ..bench.timing import format_table

    if vs_pytorch:
        _check_vs_pytorch(backend, roofline)
    if sass:
        from ..bench.sass import SassUnavailable, sass_report
        try:
            click.echo(sass_report(spec, batch_size, as_json=as_json))
        except (SassUnavailable, RuntimeError) as e:
            raise click.ClickException(str(e)) from None
        return
    if roofline:
        from ..bench.roofline import roofline_report
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

    if vs_pytorch:
        _bench_vs_pytorch(spec, backend, batch_size, iterations, warmup, seed, show_kernels,
                          as_json)
        return
    res = run_bench(spec, backend, batch_size=batch_size, iterations=iterations,
                    warmup=warmup, seed=seed)
    if as_json:
        click.echo(json.dumps(res.to_json()))
    else:
        click.echo(format_table(res, kernels=show_kernels))


def _check_vs_pytorch(backend: str, roofline: bool) -> None:
    """Usage errors before anything is built: --roofline times nothing, torch missing, or a
    cuda backend against a torch without CUDA."""
    from ..bench.vs_pytorch import (
        NotComparable,
        require_torch,
        torch_device_for,
        torch_importable,
    )

    if roofline:
        raise click.UsageError("--roofline times nothing; it can't be compared with PyTorch "
                               "(drop --vs-pytorch or --roofline)")
    try:
        if backend == "cuda":
            torch_device_for(backend)
        elif not torch_importable():     # torch itself loads in the comparison's own process
            require_torch()
    except (ImportError, NotComparable) as e:
        raise click.UsageError(f"--vs-pytorch: {e}") from None


def _bench_vs_pytorch(spec, backend, batch_size, iterations, warmup, seed, show_kernels,
                      as_json) -> None:
    from ..bench.timing import BenchResult, format_table
    from ..bench.vs_pytorch import NotComparable, compare_with_torch, format_comparison, versions
    from ..ir.build import build_graph

    graph = build_graph(path=spec)
    try:
        run = compare_with_torch(graph, backend, batch_size=batch_size, iterations=iterations,
                                 warmup=warmup, seed=seed)
    except (ImportError, NotComparable) as e:
        raise click.UsageError(f"--vs-pytorch: {e}") from None
    ours, theirs, cmp = run["netspec"], run["torch"], run["comparison"]
    if as_json:
        click.echo(json.dumps(dict(ours, torch=theirs, comparison=cmp, versions=versions(),
                                   load_average_before=run["load_average_before"],
                                   load_average_after=run["load_average_after"])))
        return
    load = "; ".join(f"{when} {', '.join(f'{v:.1f}' for v in run[f'load_average_{when}'])}"
                     for when in ("before", "after"))
    click.echo(format_table(BenchResult.from_json(ours), kernels=show_kernels))
    click.echo("")
    click.echo(format_comparison(run["backend"], run["batch_size"], ours, theirs, cmp,
                                 gemm_rows=False))
    click.echo(f"  PyTorch {theirs['version']}, {theirs['threads']} threads; load average "
               f"{load}")
