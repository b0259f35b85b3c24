"""Kernel descriptions: what op modules build and codegen renders, below both of them.

`netspec.kernel` is a leaf: it imports nothing from netspec, so every op module may import it at
module level (ops <- kernel, no cycle). It holds a kernel before rendering (`Kernel`: name,
template, parameters, compile-time constants and launch), its parameter list (`Param`,
`params`), a launch of it with buffers (`Call`), the launch helpers (`elementwise_launch`,
`ceil_div`) and what a builder sees of one part (`PartContext`); the tiled GEMM skeleton is in
`netspec.kernel.gemm`, the CUDA C / OpenCL C token tables in `netspec.kernel.dialects`.

Kernels are specialised on static shapes: every size and stride is a constant substituted into
the template (`${H}` becomes `27`), so the compiler folds the index arithmetic. The launch is
OpenCL-style: `global_size` counts work-items (a multiple of `local_size`); CUDA's grid is
global / local.

Device layout, used by every template: a part's activations are (C, N, H, W), channel-major.
A part's input is its sources concatenated along channels, so with channels outermost each
source is one contiguous block: gathering is plain copies, and a GEMM's N axis (images x
pixels) is contiguous. Weights keep PyTorch's layout, one part's slice (O, C, kh, kw).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

from .dialects import Dialect

# parameter kinds -> C declaration (the dialect adds the buffer qualifier and restrict)
_PARAM_C = {
    "in": "const float*",     # read-only float buffer
    "out": "float*",          # written (or read and written) float buffer
    "in_int": "const int*",   # read-only int32 buffer (labels)
    "float": "float",         # scalar, by value
    "uint": "unsigned int",   # 32-bit unsigned scalar, by value (the dropout noise's key words)
}
SCALAR_KINDS = frozenset({"float", "uint"})   # passed by value: no buffer behind them


@dataclass(frozen=True, slots=True)
class Param:
    kind: str
    name: str

    @property
    def scalar(self) -> bool:
        """Passed by value (a float or uint), not a buffer."""
        return self.kind in SCALAR_KINDS

    def declare(self, d: Dialect) -> str:
        c = _PARAM_C[self.kind]
        if c.endswith("*"):
            return f"{d.buf}{c} {d.restrict} {self.name}"
        return f"{c} {self.name}"


@dataclass(slots=True)
class Kernel:
    """One specialised kernel. `template` is C with `$name`, `$params`, dialect tokens and the
    `consts`; `doc` states the math and the launch layout (rendered as a comment above it)."""

    name: str
    template: str
    params: tuple[Param, ...]
    consts: dict
    global_size: tuple[int, ...]
    local_size: tuple[int, ...]
    doc: str = ""
    flops: int = 0
    shared_bytes: int = 0
    layer: str = ""                    # for error messages
    # dialect name -> the template that dialect renders instead of `template` (the same math
    # and launch: a tensor-core GEMM's wmma text for CUDA, kernel/gemm.py)
    dialect_templates: dict = field(default_factory=dict)
    precision: str = "fp32"            # a GEMM's operand format (kernel/gemm.py TC_FORMATS)

    def render(self, d: Dialect) -> str:
        params = ",\n    ".join(p.declare(d) for p in self.params)
        body = d.render(self.dialect_templates.get(d.name, self.template), name=self.name,
                        params=params, **self.consts)
        comment = "".join(f"// {line}".rstrip() + "\n" for line in self.doc.strip().splitlines())
        return f"{comment}{body.strip()}\n"

    @property
    def threads(self) -> int:
        return math.prod(self.local_size)


@functools.cache
def params(*spec: str) -> tuple[Param, ...]:
    """params("in x", "out y", "float lr", "uint step") -> Param tuple."""
    out = []
    for s in spec:
        kind, name = s.split()
        out.append(Param(kind, name))
    return tuple(out)


def ceil_div(a: int, b: int) -> int:
    """⌈a / b⌉ for integers (b > 0): groups to cover a items, b to a group. Exact, no floats."""
    return -(-a // b)


@functools.lru_cache(maxsize=1024)   # one shared pair of tuples per size, not per kernel
def elementwise_launch(n: int, local: int = 256) -> tuple[tuple[int], tuple[int]]:
    """One work-item per element, `local` to a group; the kernel guards `i < n`."""
    return (max(local, ceil_div(n, local) * local),), (local,)


@dataclass(frozen=True)
class Call:
    """A kernel and the buffers (by role: 'x', 'y', 'w', 'dy', ... or scratch roles the op
    declares) it is launched with, in parameter order. `when`: 'always', 'train' or 'test'
    (forward only; dropout differs)."""

    kernel: Kernel
    args: tuple[str, ...]
    when: str = "always"


@dataclass
class PartContext:
    """What an op's kernel builders see of one part: shapes per image (part_in_shape, channels
    first), the batch size, and where the kernels' names come from."""

    layer: Any                          # netspec.ir.graph.Layer (not imported: ir is above)
    part: Any                           # netspec.ir.graph.Part
    batch: int
    input_grad: bool                    # False when the input is the network's data
    tiles: dict = field(default_factory=dict)
    sm_count: int = 132                 # the device's multiprocessors (H100/H200 without one)
    precision: str = "fp32"             # the recipe's `precision`: the GEMMs' operand format
    # the layer's index in the graph's compute layers: the `layer` of the dropout noise's key
    # (runtime/noise.py); None where the builder doesn't say (autotune's GEMM contexts)
    layer_index: int | None = None

    @property
    def prefix(self) -> str:
        # a C identifier: the parser admits only those as layer names (dsl/parser.py)
        return f"{self.layer.name}_g{self.part.index}"

    @property
    def attrs(self) -> dict:
        return self.layer.attrs

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.layer.part_in_shape(self.part)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.layer.part_out_shape(self.part)

    @property
    def in_elements(self) -> int:
        return self.batch * math.prod(self.in_shape)

    @property
    def out_elements(self) -> int:
        return self.batch * math.prod(self.out_shape)
