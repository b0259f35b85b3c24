"""The `netspec` command. Thin: each command parses flags and calls the library."""
from __future__ import annotations

import functools
import gc
import json
import sys

import click

from . import __version__
from .cli_types import BACKENDS, BATCH_SIZE, FiniteFloatRange
from .dsl.attrs import FLOAT_MAX
from .dsl.errors import SpecError
from .errors import NetspecError


class _Group(click.Group):
    """Reports netspec's own errors as clean messages with exit status 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SpecError as e:          # already FILE:LINE:COL: error: ..., line and caret
            click.echo(str(e), err=True)
            ctx.exit(e.exit_code)
        except NetspecError as e:
            click.echo(f"netspec: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except OSError as e:            # a path given on the command line that can't be used
            if e.filename is None:
                raise
            click.echo(f"netspec: error: {e.filename}: {e.strerror or e}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netspec")
def main():
    """netspec: a declarative compiler for convolutional networks."""
    # A compile allocates millions of small, long-lived objects (a 100,000-line spec); the
    # default collector thresholds rescan them over and over (~30% of the time). mypy raises
    # them the same way.
    gc.set_threshold(200_000, 30, 30)


def _without_gc(f):
    """Run a command with the cyclic collector off: a compile builds millions of long-lived,
    acyclic objects that the collector would rescan to no effect (~13% of a 200,000-line
    compile even with the raised thresholds). Back on afterwards (tests call commands in one
    process)."""
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


@main.command("compile")
@click.argument("spec", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("-o", "--out", type=click.Path(file_okay=False),
              help="Write kernels.cu, kernels.cl and plan.json here.")
@click.option("--batch-size", type=BATCH_SIZE,
              help="Batch size for the memory figures (default: the spec's).")
@click.option("--tune", is_flag=True,
              help="Time the GEMMs' tile candidates on the OpenCL device and cache the "
                   "winners (later compiles reuse them; NETSPEC_AUTOTUNE=0 ignores them).")
@click.option("--tune-budget", type=FiniteFloatRange(min=0), default=300, show_default=True,
              help="Seconds of tuning at most; what is left is tuned by the next --tune.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="K data-parallel replicas (mpirun -n K): report the gradient allreduce.")
@click.option("--link-gbps", type=FiniteFloatRange(min=0, min_open=True), default=100,
              show_default=True, help="Interconnect bandwidth per replica, Gb/s.")
@click.option("--gpu", "roofline_gpu", type=click.Choice(["H200", "H100", "A100", "V100",
                                                           "GTX580"]),
              default="H200", show_default=True, help="GPU of the roofline compute time.")
@_without_gc
def compile_cmd(spec, as_json, out, batch_size, tune, tune_budget, replicas, link_gbps,
                roofline_gpu):
    """Check SPEC, report its layers, and emit kernels with -o."""
    from .ir.build import build_graph
    from .ir.report import summary, table_lines

    graph = build_graph(path=spec)
    from .runtime import autotune

    # the plan first: its builder's scratch is freed before the report's rows exist (peak)
    compiled = autotune.compile_tuned(graph, batch_size or graph.recipe.batch_size,
                                      tune=True if tune else None, tune_budget_s=tune_budget)
    if tune:
        click.echo(autotune.describe_stats(autotune.LAST), err=True)
    # the report shows the plan's memory figures only: the plan goes (once -o has written it)
    # before the report's rows exist, which were a long spec's peak
    arena = [int(compiled.plan.memory(gpu)["arena"]) for gpu in range(graph.gpus)]
    total = [int(m) for m in compiled.memory_per_gpu]
    if out:
        compiled.write(out)
    compiled = None
    info = summary(graph)
    if batch_size:
        from .ir.report import device_rows
        info["batch_size"] = batch_size
        info["devices"] = device_rows(graph, batch_size)
    for d in info["devices"]:
        d["activation_bytes"] = arena[d["gpu"]]
        d["memory_bytes"] = total[d["gpu"]]
    from .ir.scaling import data_parallel, format_data_parallel
    info["data_parallel"] = data_parallel(graph, replicas, link_gbps, roofline_gpu,
                                          info["batch_size"], rows=info["layers"])
    if as_json:
        click.echo(json.dumps(info))
    else:
        echo_lines(table_lines(info))
        if replicas > 1:
            click.echo("\n" + format_data_parallel(info["data_parallel"]))
        if out:
            click.echo(f"\nwrote {out}/kernels.cu, {out}/kernels.cl, {out}/plan.json")


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


def _devices(value):
    if value is None:
        return None
    try:
        devs = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give device numbers separated by commas, e.g. 0,1") from None
    if any(d < 0 for d in devs):
        raise click.BadParameter("device numbers are 0 or more")
    return devs




@main.command("train")
@click.option("--spec", type=click.Path(), help="The network and its recipe.")
@click.option("--data", help="Image folder DIR (class folders, ImageNet's official or Kaggle "
                             "layout), a prepared cache, or "
                             "'demo' (generated on first use).")
@click.option("--backend", type=BACKENDS, default="auto", show_default=True)
@click.option("--devices", callback=lambda c, p, v: _devices(v),
              help="Physical devices for the logical GPUs, e.g. 0,1.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the spec's epochs.")
@click.option("-b", "--batch-size", type=BATCH_SIZE, help="Override the spec's batch.")
@click.option("--lr", type=FiniteFloatRange(min=0, max=FLOAT_MAX, min_open=True),
              help="Override the spec's learning rate.")
@click.option("--max-steps", type=click.IntRange(min=0),
              help="Stop after N optimizer steps in total (resumed steps count).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("-j", "--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data transform processes (0: in the training process).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory (default runs/<network>-<timestamp>).")
@click.option("--resume", type=click.Path(file_okay=False),
              help="Continue the run in this directory exactly; spec, data and recipe come "
                   "from the run.")
@click.option("--init-from", type=click.Path(), metavar="RUN",
              help="Fine-tune: start a new run from RUN's weights where names and shapes "
                   "match (the spec's init elsewhere; momentum 0, step 0).")
@click.option("--print-freq", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--checkpoint-every", type=click.IntRange(min=1),
              help="Also checkpoint every N steps, mid-epoch (default: the spec's "
                   "'checkpoint every N', else at epoch ends only).")
@click.option("--keep", type=click.IntRange(min=1),
              help="Checkpoints to keep, the newest included (default: the spec's, else 1).")
def train_cmd(spec, data, backend, devices, epochs, batch_size, lr, max_steps, seed, workers,
              out, resume, init_from, print_freq, no_progress, checkpoint_every, keep):
    """Train a network as its spec's recipe says (§4-5 of the paper for AlexNet)."""
    from .train.loop import TrainOptions, train

    if resume and (spec or data or epochs or batch_size or out):
        raise click.UsageError("--resume takes the spec, data and recipe from the run; give "
                               "only --max-steps, --lr, --checkpoint-every, --keep (and "
                               "--backend, --devices, -j) with it")
    if resume and init_from:
        raise click.UsageError("--init-from starts a new run from another run's weights; "
                               "--resume continues a run: give one of them")
    if not resume and not (spec and data):
        raise click.UsageError("give --spec SPEC and --data DIR|CACHE|demo, or --resume RUN")
    opts = TrainOptions(spec=spec, data=data, backend=backend, devices=devices, epochs=epochs,
                        batch_size=batch_size, lr=lr, max_steps=max_steps, seed=seed,
                        workers=workers, out=out, resume=resume, init_from=init_from,
                        print_freq=print_freq, progress=not no_progress,
                        checkpoint_every=checkpoint_every, keep=keep)
    result = train(opts, echo=click.echo)
    if result.get("stopped"):
        sys.exit(130)


@main.command("eval")
@click.option("--spec", type=click.Path(),
              help="The network (default: the run's own spec).")
@click.option("--checkpoint", required=True, multiple=True, type=click.Path(),
              help="A run directory or a .safetensors file; several: their ensemble (§6).")
@click.option("--data", help="Image folder, prepared cache or 'demo' (default: the run's).")
@click.option("--ten-crop", is_flag=True, help="Average the softmax over 10 crops (§4.1).")
@click.option("--backend", type=BACKENDS, default="auto", show_default=True)
@click.option("--devices", callback=lambda c, p, v: _devices(v),
              help="Physical devices for the logical GPUs, e.g. 0,1.")
@click.option("-b", "--batch-size", type=BATCH_SIZE, help="Images per batch.")
@click.option("-j", "--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def eval_cmd(spec, checkpoint, data, ten_crop, backend, devices, batch_size, workers, as_json):
    """Top-1 and top-5 error of a trained network on the validation images; with several
    --checkpoint, each one's and their averaged softmax's (the paper's ensembles, §6)."""
    from .train.evaluate_cli import run_eval

    if len(checkpoint) > 1:
        from .train.ensemble import format_ensemble, run_ensemble
        result = run_ensemble(checkpoints=checkpoint, spec=spec, data=data, ten_crop=ten_crop,
                              backend=backend, devices=devices, batch_size=batch_size,
                              workers=workers)
        click.echo(json.dumps(result) if as_json else format_ensemble(result))
        return
    checkpoint = checkpoint[0]

    result = run_eval(spec=spec, checkpoint=checkpoint, data=data, ten_crop=ten_crop,
                      backend=backend, devices=devices, batch_size=batch_size,
                      workers=workers)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{result['network']}: {result['images']} val images, "
                   f"{'10-crop' if ten_crop else 'centre crop'}: top-1 error "
                   f"{100 * result['top1_error']:.2f}%, top-5 error "
                   f"{100 * result['top5_error']:.2f}%")
        from .train.evaluate_cli import describe_hardest
        if describe_hardest(result):
            click.echo(describe_hardest(result))


def _add_optional_commands() -> None:
    from .bench.command import bench
    from .data.commands import prepare
    from .train.commands import export, predict
    main.add_command(prepare)
    main.add_command(bench)
    main.add_command(export)
    main.add_command(predict)
    try:
        from .viz.command import viz
    except ImportError:  # the viz package is optional in partial builds
        return
    main.add_command(viz)


_add_optional_commands()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
