"""click parameter types shared by the `netspec` commands (netspec/cli.py and the command
modules of bench, train, data and viz)."""
from __future__ import annotations

import math

import click


class FiniteFloatRange(click.FloatRange):
    """A float option that refuses inf and nan ('1e999' reads as inf) with click's usage
    error, exit 2, as a spec refuses them; otherwise click.FloatRange (min, max, min_open,
    max_open)."""

    name = "float range"        # the help reads as before: FLOAT RANGE

    def convert(self, value, param, ctx):
        rv = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(rv, param, ctx)

    def __repr__(self) -> str:
        return f"Finite{super().__repr__()}"


# --batch-size: what a spec's `batch` takes (1 to a C int's largest, dsl/attrs.py INT_MAX)
BATCH_SIZE = click.IntRange(min=1, max=2_147_483_647)

# --backend: the runtimes a command can pick (netspec/runtime; auto: see runtime.pick_auto)
BACKENDS = click.Choice(["auto", "cuda", "opencl", "cpu", "numpy"])
