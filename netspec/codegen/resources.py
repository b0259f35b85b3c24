"""Static GPU readiness, compile-only: what each kernel of a compiled network asks of an SM and
what the roofline lets it reach, before any GPU runs it.

- Resources, from ptxas (`nvcc --resource-usage -cubin -arch=sm_90`): registers per thread,
  spill stores and loads, stack frame, static shared memory, barriers.
- Theoretical occupancy on sm_90 (NVIDIA's occupancy calculator rules for compute capability
  9.0: 65,536 registers, 64 warps, 32 blocks and 228 KiB of shared memory per SM, 1 KiB of it
  reserved per block; registers allocated per warp in units of 256).
- A roofline bound per kernel launch: FLOPs from the IR (`Kernel.flops`), bytes as the
  compulsory traffic of its buffer arguments (each input read once, each output written once:
  a lower bound, since tiles re-read what does not fit in cache), against H200 peaks of
  67 TFLOP/s fp32 (non-tensor) and 4.8 TB/s HBM3e (NVIDIA H200 datasheet).

`readiness(compiled)` returns one `KernelReadiness` per kernel; `format_readiness` the table
`netspec bench --roofline` prints. The limits checked in tests: no spills, registers x threads
per block <= 65,536, static shared memory <= 48 KiB.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .compile import Compiled

H200_FP32_FLOPS = 67e12           # FLOP/s, fp32 without tensor cores
H200_BYTES_PER_S = 4.8e12         # HBM3e
REGISTERS_PER_BLOCK = 65536
STATIC_SHARED_LIMIT = 48 * 1024

# compute capability 9.0 (CUDA occupancy calculator)
_SM90 = {"regs": 65536, "warps": 64, "blocks": 32, "smem": 228 * 1024, "smem_reserved": 1024,
         "reg_unit": 256}


@dataclass
class KernelReadiness:
    name: str
    layer: str
    phase: str
    threads: int                  # per block
    blocks: int
    registers: int | None = None  # per thread (None: nvcc not run)
    spill_stores: int | None = None
    spill_loads: int | None = None
    stack: int | None = None
    shared: int | None = None     # static shared memory, bytes
    occupancy: float | None = None
    flops: int = 0
    bytes: int = 0
    launches: dict | None = None  # logical GPU -> launches per training step ({}: test only)

    @property
    def compute_s(self) -> float:
        return self.flops / H200_FP32_FLOPS

    @property
    def memory_s(self) -> float:
        return self.bytes / H200_BYTES_PER_S

    @property
    def bound_s(self) -> float:
        """The roofline's lower bound on the kernel's time, seconds."""
        return max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"

    @property
    def intensity(self) -> float:
        """FLOPs per byte of compulsory traffic."""
        return self.flops / self.bytes if self.bytes else 0.0

    def problems(self) -> list[str]:
        """What would stop it running well (or at all) on sm_90, in words."""
        out = []
        if self.spill_stores or self.spill_loads:
            out.append(f"spills ({self.spill_stores} bytes stored, {self.spill_loads} loaded)")
        if self.registers is not None and self.registers * self.threads > REGISTERS_PER_BLOCK:
            out.append(f"{self.registers} registers x {self.threads} threads = "
                       f"{self.registers * self.threads} > {REGISTERS_PER_BLOCK}")
        if self.shared is not None and self.shared > STATIC_SHARED_LIMIT:
            out.append(f"{self.shared} bytes of static shared memory > {STATIC_SHARED_LIMIT}")
        return out

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(bound_s=self.bound_s, bound=self.bound, intensity=self.intensity)
        return d


def occupancy_sm90(registers: int, threads: int, shared: int) -> float:
    """Theoretical occupancy (active warps / 64) of a kernel on one sm_90 SM."""
    a = _SM90
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(max(registers, 1) * 32 / a["reg_unit"]) * a["reg_unit"]
    by_regs = (a["regs"] // per_warp) // warps
    by_smem = a["smem"] // (shared + a["smem_reserved"])
    blocks = min(a["blocks"], a["warps"] // warps, by_regs, by_smem)
    return blocks * warps / a["warps"]


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?, (\d+) bytes smem)?")


def ptxas_usage(source: str, arch: str = "sm_90", nvcc: str | None = None) -> dict[str, dict]:
    """name -> {registers, spill_stores, spill_loads, stack, shared} for every kernel of a CUDA
    source, from `nvcc --resource-usage`. RuntimeError when nvcc is missing or fails."""
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc is not on the PATH (the CUDA toolkit is needed for the "
                           "resource report)")
    with tempfile.TemporaryDirectory(prefix="netspec-ptxas-") as tmp:
        cu = Path(tmp) / "kernels.cu"
        cu.write_text(source)
        r = subprocess.run([nvcc, "--resource-usage", "-cubin", f"-arch={arch}",
                            "-diag-suppress", "177", str(cu), "-o", str(Path(tmp) / "k.cubin")],
                           capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"nvcc -arch={arch} failed:\n{r.stderr.strip()}")
    out: dict[str, dict] = {}
    current = None
    for line in (r.stdout + r.stderr).splitlines():
        m = _ENTRY.search(line)
        if m:
            current = out.setdefault(m.group(1), {"shared": 0})
            continue
        if current is None:
            continue
        m = _FRAME.search(line)
        if m:
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                           spill_loads=int(m.group(3)))
        m = _USED.search(line)
        if m:
            current["registers"] = int(m.group(1))
            if m.group(2):
                current["shared"] = int(m.group(2))
    return out


def readiness(compiled: Compiled, arch: str = "sm_90", with_ptxas: bool = True
              ) -> list[KernelReadiness]:
    """One row per kernel of the plan (test-time ones too), in launch order (update kernels
    last)."""
    plan = compiled.plan
    usage = ptxas_usage(compiled.cuda_source, arch) if with_ptxas else {}
    rows, seen = [], {}
    for s in plan.steps:
        if s.kind != "launch":
            continue
        train = s.when != "test"             # the training step's launches are counted
        if s.kernel in seen:
            if train:
                launches = seen[s.kernel].launches
                launches[s.gpu] = launches.get(s.gpu, 0) + 1
            continue
        k = plan.kernels[s.kernel]
        nbytes = sum(plan.buffers[a].nbytes for p, a in zip(k.params, s.args)
                     if not p.scalar)
        blocks = math.prod(g // max(l, 1) for g, l in zip(k.global_size, k.local_size))
        row = KernelReadiness(k.name, s.layer, s.phase, k.threads, blocks, flops=k.flops,
                              bytes=nbytes, launches={s.gpu: 1} if train else {})
        seen[s.kernel] = row
        u = usage.get(k.name)
        if u is not None:
            row.registers, row.shared = u.get("registers"), u.get("shared", 0)
            row.spill_stores, row.spill_loads = u.get("spill_stores"), u.get("spill_loads")
            row.stack = u.get("stack")
            if row.registers is not None:
                row.occupancy = occupancy_sm90(row.registers, row.threads, row.shared or 0)
        rows.append(row)
    return rows


def format_readiness(rows: list[KernelReadiness], title: str = "") -> str:
    """The table: resources, occupancy and the roofline bound per kernel, then the worst."""
    head = (f"{'kernel':<24} {'phase':<8} {'thr':>4} {'regs':>4} {'spill':>5} {'smem':>6} "
            f"{'occ':>4} {'GFLOP':>7} {'MB':>8} {'FLOP/B':>7} {'bound':>7} {'us':>8}")
    out = [title] if title else []
    out += [f"static readiness on sm_90, roofline at H200 peaks "
            f"({H200_FP32_FLOPS / 1e12:.0f} TFLOP/s fp32, {H200_BYTES_PER_S / 1e12:.1f} TB/s)",
            head]
    for r in rows:
        regs = "-" if r.registers is None else str(r.registers)
        spill = "-" if r.spill_stores is None else str(r.spill_stores + r.spill_loads)
        smem = "-" if r.shared is None else str(r.shared)
        occ = "-" if r.occupancy is None else f"{r.occupancy:.2f}"
        out.append(f"{r.name:<24} {r.phase:<8} {r.threads:>4} {regs:>4} {spill:>5} {smem:>6} "
                   f"{occ:>4} {r.flops / 1e9:7.2f} {r.bytes / 1e6:8.2f} {r.intensity:7.1f} "
                   f"{r.bound:>7} {r.bound_s * 1e6:8.1f}")
    per_gpu: dict[int, float] = {}
    for r in rows:
        for g, n in (r.launches or {}).items():
            per_gpu[g] = per_gpu.get(g, 0.0) + n * r.bound_s
    out.append("roofline bound of one training step's kernels (train-time launches): "
               + ", ".join(f"GPU {g} {t * 1e3:.3f} ms" for g, t in sorted(per_gpu.items())))
    if any(r.occupancy is not None for r in rows):
        low = sorted((r for r in rows if r.occupancy is not None), key=lambda r: r.occupancy)[:3]
        out.append("lowest occupancy: " + ", ".join(f"{r.name} {r.occupancy:.2f} "
                                                    f"({r.registers} regs x {r.threads})"
                                                    for r in low))
    slow = sorted(rows, key=lambda r: -r.bound_s)[:3]
    out.append("longest by the roofline: " + ", ".join(f"{r.name} {r.bound_s * 1e6:.0f} us "
                                                       f"({r.bound})" for r in slow))
    bad = [f"{r.name}: {'; '.join(r.problems())}" for r in rows if r.problems()]
    out.append("problems: " + ("; ".join(bad) if bad else "none (no spills, registers and "
                                                            "static shared memory within sm_90 "
                                                            "limits)"))
    return "\n".join(out)
