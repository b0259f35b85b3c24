"""Graph -> plan.json and one kernels<suffix> per device dialect (kernels.cu, kernels.cl):
`compile_network(graph, batch_size)`.

Every source is rendered from the same kernels (one template each, one dialect per target:
kernel/dialects.py's DIALECTS) in plan order; every device runtime executes the same plan.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write
from ..errors import DeviceLimitError, KernelBuildError
from ..ir.graph import Graph
from ..kernel.dialects import DIALECTS, Dialect
from ..kernel.gemm import DEFAULT_SM_COUNT
from .cpu_kernels import render_cpu_module
from .plan import LaunchPlan, build_plan
from .winograd_gpu import winograd_tiles

# What any CUDA device of compute capability >= 3.0 allows; checked before rendering so that a
# spec that can never run says so at compile time, naming the layer.
CUDA_MAX_THREADS = 1024
CUDA_MAX_SHARED = 48 * 1024


@dataclass
class Source:
    """A rendered module and where each kernel starts in it (1-based lines), so a compiler
    message about line L can be traced to a kernel and its layer."""

    dialect: Dialect
    text: str
    lines: dict[str, tuple[int, int]] = field(default_factory=dict)

    def locate(self, line: int) -> str | None:
        for name, (a, b) in self.lines.items():
            if a <= line <= b:
                return name
        return None

    def excerpt(self, line: int, context: int = 2) -> str:
        rows = self.text.splitlines()
        lo, hi = max(1, line - context), min(len(rows), line + context)
        return "\n".join(f"{'>' if i == line else ' '}{i:5d} | {rows[i - 1]}"
                         for i in range(lo, hi + 1))


@dataclass
class Compiled:
    """A planned network. Its sources are rendered when first asked for (`source(dialect)`),
    once per dialect, so that `netspec compile` without --out (which reports the plan's memory,
    not the sources) does not render them."""

    graph: Graph
    batch_size: int
    plan: LaunchPlan
    _sources: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def source(self, dialect: str | Dialect) -> Source:
        """The plan's kernels rendered in `dialect` (a Dialect or its name in DIALECTS).
        KeyError for an unknown name; a host dialect (C) can't render device kernels.
        A Source set on the instance under the dialect's name (as `cuda`/`opencl` cache
        theirs) is the one returned, so a copy can carry an edited source."""
        d = DIALECTS[dialect] if isinstance(dialect, str) else dialect
        held = self.__dict__.get(d.name)
        if isinstance(held, Source):
            return held
        if d.name not in self._sources:
            self._sources[d.name] = render_source(self.plan, d)
        return self._sources[d.name]

    @functools.cached_property
    def cuda(self) -> Source:
        return self.source("cuda")

    @functools.cached_property
    def opencl(self) -> Source:
        return self.source("opencl")

    @property
    def cuda_source(self) -> str:
        return self.cuda.text

    @property
    def opencl_source(self) -> str:
        return self.opencl.text

    @property
    def plan_json(self) -> dict:
        return self.plan.to_json()

    @property
    def memory_per_gpu(self) -> list[int]:
        """Bytes each logical GPU needs at this batch size: parameters, their gradients and
        momenta, plus the activation arena's peak."""
        return self.plan.memory_per_gpu

    def write(self, directory: str | os.PathLike) -> dict[str, Path]:
        """kernels<suffix> for every device dialect (kernels.cu, kernels.cl), the host C +
        OpenMP kernels the cpu backend builds (kernels.c: the same for every network, shapes
        are arguments; codegen/cpu_kernels.py) and plan.json in `directory` (made if
        missing). Returns {dialect name | 'host' | 'plan': path}."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out = {}
        for dialect in device_dialects():
            out[dialect.name] = d / f"kernels{dialect.suffix}"
            atomic_write(out[dialect.name], self.source(dialect).text)
        out["host"] = d / "kernels.c"
        atomic_write(out["host"], render_cpu_module())
        out["plan"] = d / "plan.json"
        atomic_write(out["plan"], json.dumps(self.plan.to_json(), indent=1) + "\n")
        return out


def device_dialects() -> list[Dialect]:
    """The dialects a plan's kernels are rendered in: every registered one with work-groups
    (the host C dialect renders codegen/cpu_kernels.py's kernels instead)."""
    return [d for d in DIALECTS.values() if not d.host]


def render_source(plan: LaunchPlan, dialect: Dialect) -> Source:
    parts = [dialect.prelude, f"// network {plan.network}, batch {plan.batch}, "
                              f"{plan.gpus} logical GPU(s); {len(plan.kernels)} kernels\n"]
    lines: dict[str, tuple[int, int]] = {}
    line = sum(p.count("\n") for p in parts) + 1
    for k in plan.kernels.values():
        text = "\n" + k.render(dialect)
        lines[k.name] = (line + 1, line + text.count("\n") - 1)
        line += text.count("\n")
        parts.append(text)
    return Source(dialect, "".join(parts), lines)


def check_limits(plan: LaunchPlan, max_threads: int, max_shared: int, device: str) -> None:
    for k in plan.kernels.values():
        if k.threads > max_threads:
            raise DeviceLimitError(
                f"layer '{k.layer}': kernel {k.name} needs work-groups of {k.threads} "
                f"work-items, but {device} allows at most {max_threads}; use smaller tiles "
                f"for this layer")
        if k.shared_bytes > max_shared:
            raise DeviceLimitError(
                f"layer '{k.layer}': kernel {k.name} needs {k.shared_bytes} bytes of "
                f"shared/local memory per work-group, but {device} has {max_shared}; use "
                f"smaller tiles for this layer")


def compile_network(graph: Graph, batch_size: int | None = None,
                    tiles: dict | None = None, sm_count: int = DEFAULT_SM_COUNT,
                    winograd: bool = True) -> Compiled:
    """Plan and render every kernel of `graph` at `batch_size` (the spec's batch by default).
    `tiles` optionally maps a layer name to {"fwd"|"bwd_weight"|"bwd_data": GemmTiles}; the
    GEMMs it doesn't name take the default tiles. Nothing runs here: autotuned tiles come from
    netspec.runtime.autotune (`compile_tuned`), which times kernels and then calls this.
    `sm_count`: the CUDA device's multiprocessors, which GEMM grids and split-K fill (132, an
    H100's or H200's, where no device says otherwise). `winograd`: run the stride-1 convs'
    directions the tiles don't name as Winograd where the estimate says it wins
    (codegen/winograd_gpu.py)."""
    batch = batch_size or graph.recipe.batch_size
    if winograd:
        tiles = winograd_tiles(graph, batch, tiles or {}, sm_count)
    plan = build_plan(graph, batch, tiles or {}, sm_count)
    check_limits(plan, CUDA_MAX_THREADS, CUDA_MAX_SHARED, "a CUDA device")
    return Compiled(graph, batch, plan)


def build_error(source: Source, log: str, what: str) -> KernelBuildError:
    """The compiler's log, with the generated line(s) it points at and their kernel/layer."""
    import re
    shown = []
    for row in log.splitlines():
        if "error" not in row.lower():
            continue
        m = re.search(r"\((\d+)\)\s*:|:(\d+):\d+:", row)   # NVRTC "(12):", clang ":12:3:"
        if m:
            n = int(m.group(1) or m.group(2))
            if n not in shown:
                shown.append(n)
        if len(shown) >= 3:
            break
    msg = [f"{what} failed to build the generated {source.dialect.name} kernels"]
    for n in shown:
        k = source.locate(n)
        where = f" (kernel {k})" if k else ""
        msg.append(f"\nat generated line {n}{where}:\n{source.excerpt(n)}")
    msg.append("\ncompiler log:\n" + log.strip())
    return KernelBuildError("\n".join(msg))
