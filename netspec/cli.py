"""The `netspec` command. Thin: each command parses flags and calls the library."""
from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import NetspecError


class _Group(click.Group):
    """Reports netspec's own errors as clean messages with exit status 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NetspecError as e:
            click.echo(str(e) if str(e).startswith(("<", "/", ".")) or ": error:" in str(e)
                       else f"netspec: error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netspec")
def main():
    """netspec: a declarative compiler for convolutional networks."""


@main.command("compile")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("-o", "--out", type=click.Path(file_okay=False),
              help="Write kernels.cu, kernels.cl and plan.json here.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Batch size for the memory figures (default: the spec's).")
def compile_cmd(spec, as_json, out, batch_size):
    """Check SPEC, report its layers, and emit kernels with -o."""
    from .ir.build import build_graph
    from .ir.report import format_table, summary

    graph = build_graph(spec)
    info = summary(graph)
    if batch_size:
        from .ir.report import device_rows
        info["batch_size"] = batch_size
        info["devices"] = device_rows(graph, batch_size)
    try:
        from .codegen import compile_network  # the kernel compiler, when present
    except ImportError:
        compile_network = None
    if compile_network is not None:
        compiled = compile_network(graph, info["batch_size"])
        for d, mem in zip(info["devices"], compiled.memory_per_gpu):
            d.update(mem)
        if out:
            compiled.write(out)
    elif out:
        raise NetspecError("the kernel compiler is not available in this build")
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(format_table(info))
        if out:
            click.echo(f"\nwrote {out}/kernels.cu, {out}/kernels.cl, {out}/plan.json")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
