"""The `netspec` command: the click group `main` and its commands, one module per group.

    compile.py    compile
    train.py      train (--resume continues a run)
    evaluate.py   eval, predict
    export.py     export
    import_.py    import (Caffe, ... as a spec and run)
    data.py       prepare
    viz.py        viz
    bench.py      bench
    options.py    the options and click types the commands share

Thin: each command parses flags, calls the library and prints. This is the top layer: it may
import every package, and nothing in netspec imports it.
"""
from __future__ import annotations

import gc

import click

from .. import __version__
from ..dsl.errors import SpecError
from ..errors import NetspecError
from .bench import bench
from .compile import compile_cmd
from .data import prepare
from .evaluate import eval_cmd, predict
from .export import export
from .import_ import import_cmd
from .train import train_cmd
from .viz import viz


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
    # A compile allocates millions of small, long-lived objects; at the default thresholds
    # the cyclic collector rescans them over and over. mypy raises them the same way.
    gc.set_threshold(200_000, 30, 30)


for _command in (compile_cmd, train_cmd, eval_cmd, prepare, bench, export, predict, viz,
                 import_cmd):
    main.add_command(_command)
