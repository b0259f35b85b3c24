"""Options and click types shared by the `netspec` commands, so that one flag means one thing
in every command:

    -o, --output FILE     a file the command writes (viz, export)
    --out DIR             a directory the command writes (compile, train, prepare)
    -b, --batch-size N    images per batch, bounded as a spec's `batch`
    --backend NAME        auto or a backend of netspec.runtime, default auto
    -j, --workers N       data processes (0: in the command's own process)
    --seed N              the seed of the initial weights (and of the data order in train)
    --json                one JSON object instead of a table
"""
from __future__ import annotations

import math

import click


class FiniteFloatRange(click.FloatRange):
    """A float option that refuses inf and nan ('1e999' reads as inf) with click's usage
    error, exit 2, as a spec refuses them; otherwise click.FloatRange (min, max, min_open,
    max_open)."""

    name = "float range"        # the help reads FLOAT RANGE, as click.FloatRange's does

    def convert(self, value, param, ctx):
        rv = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(rv, param, ctx)

    def __repr__(self) -> str:
        return f"Finite{super().__repr__()}"


# --batch-size: what a spec's `batch` takes (1 to a C int's largest, dsl/attrs.py INT_MAX)
BATCH_SIZE = click.IntRange(min=1, max=2_147_483_647)


def backend_names() -> list[str]:
    """'auto' and the backends netspec.runtime knows, read when asked (a backend registered
    after this module was imported is offered too)."""
    from ..runtime import backend_names as registered
    return ["auto", *registered()]


class BackendChoice(click.Choice):
    """click.Choice over `backend_names()`, read at each conversion, help and completion
    rather than fixed when the command is defined."""

    def __init__(self) -> None:         # no fixed tuple: `choices` is read each time
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(backend_names())

    def __repr__(self) -> str:
        return "BackendChoice()"


BACKENDS = BackendChoice()

_AUTO = "auto: the first of netspec.runtime.AUTO_ORDER that works here, named on stderr"
# what auto means for the numbers of a command that prints or draws a network's outputs
_AUTO_NUMERICS = ("; its outputs agree with numpy's to float32 rounding, not bit for bit (the "
                  "cpu backend's Winograd convolutions round differently): --backend numpy "
                  "gives the reference's exact numbers")


def backend_option(what: str = "Backend that runs the network", *,
                   numerics: bool = False):
    """--backend NAME, default auto. `numerics`: say in the help what auto means for the
    numbers the command prints or draws (predict, viz)."""
    return click.option("--backend", type=BACKENDS, default="auto", show_default=True,
                        help=f"{what}; {_AUTO}{_AUTO_NUMERICS if numerics else ''}.")


def batch_size_option(help: str, **kwargs):
    """-b/--batch-size N, bounded as a spec's `batch`."""
    return click.option("-b", "--batch-size", type=BATCH_SIZE, help=help, **kwargs)


def seed_option(help: str, default: int | None = 0):
    return click.option("--seed", type=click.IntRange(min=0), default=default,
                        show_default=default is not None, help=help)


def json_option(help: str = "Print one JSON object instead of a table."):
    return click.option("--json", "as_json", is_flag=True, help=help)


def workers_option(help: str, default: int | None = 0):
    return click.option("-j", "--workers", type=click.IntRange(min=0), default=default,
                        show_default=default is not None, metavar="N", help=help)


def out_dir_option(help: str, **kwargs):
    """--out DIR: a directory the command writes."""
    return click.option("--out", type=click.Path(file_okay=False), metavar="DIR", help=help,
                        **kwargs)


def output_option(help: str, metavar: str = "FILE", **kwargs):
    """-o/--output FILE: a file the command writes."""
    return click.option("-o", "--output", type=click.Path(dir_okay=False), metavar=metavar,
                        help=help, **kwargs)


def tune_options(then: str = ""):
    """--tune and --tune-budget: autotune the GEMM tiles on the OpenCL device first; `then`
    ends --tune's help with what the command does next."""
    def add(f):
        f = click.option("--tune-budget", type=FiniteFloatRange(min=0), default=300,
                         show_default=True,
                         help="Seconds of tuning at most; what is left is tuned by the next "
                              "--tune.")(f)
        return click.option("--tune", is_flag=True,
                            help="Time the GEMMs' tile candidates on the OpenCL device and "
                                 "cache the winners (later compiles reuse them; "
                                 f"NETSPEC_AUTOTUNE=0 ignores them){then}.")(f)
    return add


def parse_devices(value: str | None) -> tuple[int, ...] | None:
    """'0,1' -> (0, 1): the physical devices of --devices."""
    if value is None:
        return None
    try:
        devs = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give device numbers separated by commas, e.g. 0,1") from None
    if any(d < 0 for d in devs):
        raise click.BadParameter("device numbers are 0 or more")
    return devs


def devices_option(f):
    return click.option("--devices", callback=lambda c, p, v: parse_devices(v), metavar="N,N",
                        help="Physical devices for the logical GPUs, e.g. 0,1.")(f)
