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

# Before anything heavy is imported: a Ctrl-C while the command starts up (click, NumPy, the
# backends) ends it with one line and status 130, as a shell reports an interrupted command,
# instead of a KeyboardInterrupt traceback from inside an import. Nothing has been written
# yet, so there is nothing to undo; _Group.invoke hands SIGINT back to Python once the
# command runs, and reports its KeyboardInterrupt the same way.
import os
import signal
import sys


def _run_as_the_command() -> bool:
    """True when this process is the `netspec` command (the console script, or `python -m
    netspec[.cli]`), not a program or test that imports the cli."""
    argv0 = sys.argv[0] if sys.argv else ""
    name = os.path.basename(argv0)
    return name.startswith("netspec") or (
        name == "__main__.py" and os.path.basename(os.path.dirname(argv0)) in ("netspec", "cli"))


def _interrupted_at_start_up(signum, frame):
    os.write(2, b"netspec: interrupted\n")
    os._exit(130)


# SIGINT left ignored by the parent (a background job of a script) stays ignored, as Python
# itself leaves it; a SIGINT held blocked until now is delivered to this handler
if _run_as_the_command() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
    signal.signal(signal.SIGINT, _interrupted_at_start_up)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

import gc  # noqa: E402

import click  # noqa: E402

from .. import __version__  # noqa: E402
from ..dsl.errors import SpecError  # noqa: E402
from ..errors import NetspecError  # noqa: E402
from .bench import bench  # noqa: E402
from .compile import compile_cmd  # noqa: E402
from .data import prepare  # noqa: E402
from .evaluate import eval_cmd, predict  # noqa: E402
from .export import export  # noqa: E402
from .import_ import import_cmd  # noqa: E402
from .train import train_cmd  # noqa: E402
from .viz import viz  # noqa: E402


class _Group(click.Group):
    """Reports netspec's own errors as clean messages with exit status 2, never a traceback."""

    def invoke(self, ctx):
        if signal.getsignal(signal.SIGINT) is _interrupted_at_start_up:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:       # Ctrl-C while the command runs: one line, no traceback
            click.echo("netspec: interrupted", err=True)
            ctx.exit(130)
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
