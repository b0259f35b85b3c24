"""The C dialects a kernel template is rendered in. The differences are data.

A template is C text with `$tokens` (string.Template syntax); a `Dialect` supplies every token
that differs between CUDA C and OpenCL C, as tinygrad's cstyle renderers do. Templates never
spell `__syncthreads`, `get_local_id`, `expf` and the like themselves: a new target is a new
`Dialect` object, not new kernels.

Tokens a template may use:

    $kernel      the kernel qualifier, before the name
    $buf         the qualifier of a buffer parameter ('' / '__global ')
    $restrict    the no-alias qualifier of a pointer parameter
    $shared      the qualifier of a work-group (block) shared array
    $barrier     a work-group barrier over shared memory, as a statement
    $lid0 $lid1  index of the work-item inside its group (threadIdx / get_local_id)
    $grp0 $grp1  index of the group (blockIdx / get_group_id)
    $gid0        global index along dimension 0
    $exp $log $pow $fmax $sqrt $rsqrt   float math function names
    $inf         positive infinity as a float expression
    $u64         the 64-bit unsigned integer type (Philox's 32x32 -> 64 bit products)
    $parallel    the pragma that splits the next loop over the host's threads (C only: the
                 GPU dialects are parallel by launch and render it empty), two iterations
                 at a time to whichever thread is free (schedule(dynamic, 2)): a thread
                 the OS has descheduled holds back only the iterations it took
    $float4      the 4-float vector type (both device dialects: `float4`, components .x .y .z .w)
    $gload4 $sload4 $sstore4   a cast that reads (writes) a float4 through a pointer to a
                 16-byte aligned float in global (shared) memory: `$gload4(&w[i])` is one
                 128-bit load (LDG.128 / LDS.128 in the machine code)
    $align16     the attribute that aligns a shared array to 16 bytes, after its declarator
                 (CUDA's `$shared` already carries `__align__(16)`)

CUDA and OpenCL C render the plan's kernels for a device. The third dialect, `C` (C99 with
OpenMP, built by the system compiler), renders the host kernels of the fast CPU backend
(codegen/cpu_kernels.py), as tinygrad's clang renderer does: a kernel is a plain function whose
outer loop `$parallel` spreads over the cores. It has no work-groups, so a template that asks for
shared memory, a barrier or a work-item index in C is an error, not a silent miscompile.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from string import Template


@dataclass(frozen=True)
class Dialect:
    name: str                   # 'cuda' | 'opencl' | 'c': its key in DIALECTS
    suffix: str                 # file extension of a rendered module
    kernel: str
    buf: str
    restrict: str
    shared: str
    barrier: str
    local_id: tuple[str, str, str]
    group_id: tuple[str, str, str]
    global_id: tuple[str, str, str]
    math: dict[str, str] = field(default_factory=dict)
    inf: str = "INFINITY"
    prelude: str = ""           # once at the top of a module
    parallel: str = ""          # a pragma line that parallelises the next loop (host C)
    host: bool = False          # no work-groups: shared memory, barriers and ids don't exist
    vector: dict[str, str] = field(default_factory=dict)   # $float4, $gload4, ... (device only)
    uint64: str = "unsigned long long"

    def tokens(self) -> dict[str, str]:
        t = {"kernel": self.kernel, "buf": self.buf, "restrict": self.restrict,
             "shared": self.shared, "barrier": self.barrier, "inf": self.inf,
             "parallel": self.parallel, "u64": self.uint64}
        for d in range(3):
            t[f"lid{d}"] = self.local_id[d]
            t[f"grp{d}"] = self.group_id[d]
            t[f"gid{d}"] = self.global_id[d]
        if self.host:
            for word in ("shared", "barrier", *(f"{w}{d}" for w in ("lid", "grp", "gid")
                                                 for d in range(3))):
                del t[word]             # Template.substitute then raises KeyError naming it
        t.update(self.math)
        t.update(self.vector)
        return t

    def render(self, template: str, **consts) -> str:
        """Substitute the dialect's tokens and the kernel's compile-time constants. A token that
        is neither is an error (KeyError), so a template can't silently keep a `$name`."""
        values = self.tokens()
        clash = set(values) & set(consts)
        if clash:
            raise ValueError(f"constants shadow dialect tokens: {sorted(clash)}")
        values.update({k: _literal(v) for k, v in consts.items()})
        return Template(template).substitute(values)


def _literal(v) -> str:
    """A compile-time constant as C source: ints as they are, floats as float literals with
    enough digits to round-trip float32 exactly (so `1e-4` is the float the reference uses)."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(float(v))
        if "inf" in r or "nan" in r:
            raise ValueError(f"non-finite constant {v}")
        if "e" not in r and "." not in r:
            r += ".0"
        return r + "f"
    return str(v)


CUDA = Dialect(
    name="cuda", suffix=".cu",
    kernel='extern "C" __global__ void',
    buf="",
    restrict="__restrict__",
    shared="__shared__ __align__(16)",
    barrier="__syncthreads();",
    local_id=("threadIdx.x", "threadIdx.y", "threadIdx.z"),
    group_id=("blockIdx.x", "blockIdx.y", "blockIdx.z"),
    global_id=("(blockIdx.x * blockDim.x + threadIdx.x)",
               "(blockIdx.y * blockDim.y + threadIdx.y)",
               "(blockIdx.z * blockDim.z + threadIdx.z)"),
    math={"exp": "expf", "log": "logf", "pow": "powf", "fmax": "fmaxf", "sqrt": "sqrtf",
          "rsqrt": "rsqrtf"},
    inf="__int_as_float(0x7f800000)",
    prelude="// CUDA C, rendered by netspec.codegen; load with cupy.RawModule\n",
    vector={"float4": "float4", "gload4": "*(const float4*)", "sload4": "*(const float4*)",
            "sstore4": "*(float4*)", "align16": ""},
)

OPENCL = Dialect(
    name="opencl", suffix=".cl",
    kernel="__kernel void",
    buf="__global ",
    restrict="restrict",
    shared="__local",
    barrier="barrier(CLK_LOCAL_MEM_FENCE);",
    local_id=("(int)get_local_id(0)", "(int)get_local_id(1)", "(int)get_local_id(2)"),
    group_id=("(int)get_group_id(0)", "(int)get_group_id(1)", "(int)get_group_id(2)"),
    global_id=("(int)get_global_id(0)", "(int)get_global_id(1)", "(int)get_global_id(2)"),
    math={"exp": "exp", "log": "log", "pow": "pow", "fmax": "fmax", "sqrt": "sqrt",
          "rsqrt": "rsqrt"},
    inf="INFINITY",
    uint64="ulong",
    prelude="// OpenCL C 1.2, rendered by netspec.codegen; build with pyopencl\n",
    vector={"float4": "float4", "gload4": "*(const __global float4*)",
            "sload4": "*(const __local float4*)", "sstore4": "*(__local float4*)",
            "align16": "__attribute__((aligned(16)))"},
)

C = Dialect(
    name="c", suffix=".c",
    kernel="void",
    buf="",
    restrict="restrict",
    shared="", barrier="",
    local_id=("", "", ""), group_id=("", "", ""), global_id=("", "", ""),
    math={"exp": "expf", "log": "logf", "pow": "powf", "fmax": "fmaxf", "sqrt": "sqrtf",
          "rsqrt": "1.0f / sqrtf"},
    inf="INFINITY",
    prelude=("// C99 with OpenMP, rendered by netspec.codegen; built by the system C compiler\n"
             "#include <math.h>\n#include <string.h>\n"),
    parallel="#pragma omp parallel for schedule(dynamic, 2)",
    host=True,
)

# name -> Dialect. codegen renders a plan's kernels in every device dialect here (one
# kernels<suffix> file each, codegen/compile.py); a backend names the one it runs (Net.dialect).
DIALECTS: dict[str, Dialect] = {d.name: d for d in (CUDA, OPENCL, C)}


def register_dialect(dialect: Dialect) -> Dialect:
    """Add a dialect to DIALECTS (a new target's renderer). ValueError when its name or its
    file suffix is taken by another dialect."""
    for d in DIALECTS.values():
        if d.name == dialect.name and d != dialect:
            raise ValueError(f"dialect '{dialect.name}' is already registered")
        if d.suffix == dialect.suffix and d.name != dialect.name:
            raise ValueError(f"dialect '{dialect.name}': suffix {dialect.suffix} is "
                             f"'{d.name}''s")
    DIALECTS[dialect.name] = dialect
    return dialect
