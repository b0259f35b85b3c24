"""What a command needs in memory at least, from closed-form counts of the graph (no plan, no
allocation), and the refusal when that exceeds the machine: a spec with an fc of 10^9
outputs, an input of 3x100000x100000 or a batch of 2^31 - 1 is refused in one line with the
figure, before anything is allocated or written, instead of dying in MemoryError.

The figures are lower bounds, so a run that fits is never refused:

    parameters      P floats (weights and biases); training keeps gradients and momenta
                    beside them: 3P
    activations     every layer's output for the batch (kept for the backward pass when
                    training; at least the largest one otherwise)
    batch buffers   the input batch on the host (the loader's buffer the backends read)

all float32 (4 bytes). The machine's memory is its physical memory (SC_PHYS_PAGES x
SC_PAGE_SIZE), so a busy machine does not refuse a run it could hold once others finish.
"""
from __future__ import annotations

import math
import os

from ..errors import NetspecError
from .graph import Graph

FLOAT_BYTES = 4


class MemoryNeedError(NetspecError):
    """A command would need more memory than the machine has (exit status 2)."""


def machine_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_need(g: Graph, batch: int, train: bool) -> dict[str, int]:
    """Lower bounds in bytes of what running `g` at `batch` images needs: 'parameters',
    'activations', 'batch' (host input buffer) and 'total'."""
    params = sum(l.params for l in g.layers)
    outputs = [math.prod(l.out_shape) for l in g.compute_layers] or [0]
    acts = sum(outputs) if train else max(outputs)
    need = {"parameters": params * FLOAT_BYTES * (3 if train else 1),
            "activations": acts * batch * FLOAT_BYTES,
            "batch": math.prod(g.input_shape) * batch * FLOAT_BYTES}
    need["total"] = sum(need.values())
    return need


def check_memory(g: Graph, batch: int, train: bool, what: str) -> None:
    """MemoryNeedError when `memory_need` exceeds the machine's memory. `what` names the
    command's work for the message ('training', 'evaluation', ...)."""
    have = machine_memory()
    need = memory_need(g, batch, train)
    if have is not None and need["total"] > have:
        raise MemoryNeedError(
            f"{what} {g.name} at batch {batch:,} needs at least {fmt_bytes(need['total'])} "
            f"(parameters{' with gradients and momenta' if train else ''} "
            f"{fmt_bytes(need['parameters'])}, activations {fmt_bytes(need['activations'])}, "
            f"input batch {fmt_bytes(need['batch'])}); this machine has "
            f"{fmt_bytes(have)} of memory")


def check_bytes(need: int, what: str) -> None:
    """MemoryNeedError when `need` bytes exceed the machine's memory."""
    have = machine_memory()
    if have is not None and need > have:
        raise MemoryNeedError(f"{what} needs at least {fmt_bytes(need)}; this machine has "
                              f"{fmt_bytes(have)} of memory")


def fmt_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"
