"""`netspec bench --sass`: a SASS-level performance model of a compiled network on one H100,
compile-only. Every time it reports is MODELLED from machine code, never measured.

Inputs, per kernel: the sm_90 cubin of the network's kernels.cu (`nvcc -cubin -arch=sm_90`),
its disassembly (`nvdisasm -c`, pip `nvidia-cuda-nvdisasm`) and ptxas's resource report
(`--resource-usage`: registers, spills, shared memory). Cubins and reports are cached by a
hash of the source under the kernel cache (`cache_dir("kernels")/sass/`), so a second run
compiles nothing.

The inner loop: the loop (a backward branch and its target) with the most FFMA/HMMA
instructions, the largest such (the K loop with its loaders, not a k-step loop inside it);
loops nested inside it (the strided template's loaders) are counted once per iteration, which
undercounts the baseline's loads. Its instruction mix is
counted by class: FFMA (and FADD/FMUL), HMMA, LDS by width (LDS.32/64/128), STS, LDG (and its
width), BAR, integer (IMAD, IADD3, LEA, ISETP, SHF, LOP3, ...) and other. Per k-step (one
rank-1 update of a work-item's TM x TN tile: FFMA / (TM·TN) k-steps per iteration), per warp:

    issue    = instructions / 4                  4 warp schedulers, 1 instruction/clk each
    fp32     = FFMA / 4                          128 FP32 lanes per SM = 4 warp-FFMA/clk
    shared   = shared wavefronts                 128 B/clk per SM: one wavefront per clock

in SM clocks, the loop's bound being the largest. Shared wavefronts of a GEMM follow from its
thread layout: a warp's A-fragment load touches ⌈32/TX⌉ distinct addresses (broadcast to the
rest), a B-fragment load min(TX, 32), 16 bytes each for LDS.128 (4 bytes for LDS.32), ⌈bytes
/ 128⌉ wavefronts; a store one wavefront per 128 bytes written (the layouts are conflict-free).

A GEMM launch: resident blocks per SM from the registers, threads and shared memory
(the occupancy rules of codegen/resources.py), waves = blocks / (132 × resident); each wave
takes resident_blocks × warps × k-steps × bound cycles, divided by min(1, resident warps / 8)
(fewer than 8 warps per SM cannot hide the ~20-30 cycle latencies of the loop); the launch
is the larger of that and its compulsory DRAM traffic (each buffer argument once) at 3.35
TB/s. Any other kernel (elementwise, pooling, reductions) is its roofline: max(FLOPs / 67
TFLOP/s, bytes / 3.35 TB/s); so are Winograd's transforms (kernel/winograd_gpu.py), whose
batched GEMMs are GEMMs as above. Every launch adds LAUNCH_US. The step is the sum over a training
step's launches, run one after another on one GPU (a 2-GPU spec's parts both on it).

Constants, NVIDIA H100 SXM5 (NVIDIA H100 Tensor Core GPU Architecture whitepaper, 2022, table
3 and the SM section): 132 SMs; 128 FP32 lanes, 4 warp schedulers (one warp instruction per
clock each), 228 KiB shared memory per SM; 1.98 GHz boost clock (132 × 128 × 2 FLOP × 1.98
GHz = 66.9 TFLOP/s, the datasheet's 67 TFLOP/s FP32; the 1.755 GHz sometimes quoted is the
PCIe card's boost); HBM3 3.35 TB/s (H100 SXM datasheet). Shared memory bandwidth 128 B/clk/SM
(32 banks x 4 bytes, CUDA C++ Programming Guide, compute capability 9.0). Not modelled:
instruction latencies beyond the warp rule above, L2 and cache behaviour, tail effects inside
a wave, dual issue, clocks below boost. Uncalibrated: no GPU has timed these kernels yet.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cachedir import cache_dir
from ..codegen.compile import Compiled, compile_network
from ..codegen.resources import occupancy_sm90
from ..kernel import ceil_div
from ..kernel.gemm import GemmTiles

SM_COUNT = 132
CLOCK_HZ = 1.98e9
FP32_LANES = 128
SCHEDULERS = 4
SHARED_BYTES_PER_CLK = 128
HBM_BYTES_PER_S = 3.35e12
PEAK_FP32 = SM_COUNT * FP32_LANES * 2 * CLOCK_HZ
# dense tensor-core peaks of the H100 SXM5 datasheet (FLOP/s, FP32 accumulation): the model
# spreads them evenly over 132 SMs at CLOCK_HZ
PEAK_TENSOR = {"tf32": 494e12, "bf16": 989e12}
# PyTorch + cuDNN's AlexNet b128 fwd+bwd, estimated: soumith's convnet-benchmarks, cuDNN R4
# fp32 on a Maxwell GTX Titan X, 81 ms; its FP32 peak 3072 lanes x 2 x 1.075 GHz = 6.6
# TFLOP/s; scaled by the ratio of peaks (the same fraction of peak on an H100)
CUDNN_ANCHOR_MS, CUDNN_ANCHOR_PEAK = 81.0, 6.6e12
LAUNCH_US = 2.0
LATENCY_WARPS = 8

_INT = {"IMAD", "IADD3", "IADD", "LEA", "ISETP", "SHF", "LOP3", "IABS", "IMNMX", "SEL", "SHL",
        "SHR", "PRMT", "IMUL", "I2F", "F2I", "POPC", "FLO", "BMSK", "VIMNMX", "MOV", "ULDC",
        "S2R", "S2UR", "CS2R", "IMAD.WIDE", "UIADD3", "UMOV", "ULEA", "USHF", "UIMAD", "ISCADD"}


class SassUnavailable(RuntimeError):
    """nvcc or nvdisasm is missing: the model can't run here."""


def nvdisasm_path() -> str | None:
    """nvdisasm on the PATH, else the pip package nvidia-cuda-nvdisasm's."""
    found = shutil.which("nvdisasm")
    if found:
        return found
    try:
        import nvidia
    except ImportError:
        return None
    for root in getattr(nvidia, "__path__", []):
        for sub in ("cu13/bin", "cuda_nvdisasm/bin", "cu12/bin"):
            p = Path(root) / sub / "nvdisasm"
            if p.exists():
                return str(p)
    return None


def unavailable_reason() -> str | None:
    if shutil.which("nvcc") is None:
        return "nvcc is not on the PATH (CUDA toolkit not installed)"
    if nvdisasm_path() is None:
        return ("nvdisasm is not installed (pip install nvidia-cuda-nvdisasm; the CUDA 13 "
                "toolkit here lacks it)")
    return None


def compile_sass(source: str, arch: str = "sm_90") -> tuple[str, str]:
    """(disassembly, ptxas report) of a CUDA source, from the cache or compiled now."""
    why = unavailable_reason()
    if why:
        raise SassUnavailable(why)
    key = hashlib.sha256(f"{arch}\0{source}".encode()).hexdigest()[:32]
    d = cache_dir("kernels") / "sass"
    sass, report = d / f"{key}.sass", d / f"{key}.ptxas"
    if sass.exists() and report.exists():
        return sass.read_text(), report.read_text()
    with tempfile.TemporaryDirectory(prefix="netspec-sass-") as tmp:
        cu, cubin = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.cubin"
        cu.write_text(source)
        r = subprocess.run(["nvcc", "-cubin", f"-arch={arch}", "--resource-usage",
                            "-diag-suppress", "177", str(cu), "-o", str(cubin)],
                           capture_output=True, text=True, check=False)
        if r.returncode:
            raise RuntimeError(f"nvcc -cubin -arch={arch} failed:\n{r.stderr.strip()}")
        dis = subprocess.run([nvdisasm_path(), "-c", str(cubin)], capture_output=True,
                             text=True, check=False)
        if dis.returncode:
            raise RuntimeError(f"nvdisasm failed:\n{dis.stderr.strip()}")
    d.mkdir(parents=True, exist_ok=True)
    for path, text in ((sass, dis.stdout), (report, r.stdout + r.stderr)):
        tmp_path = path.with_suffix(f".{os.getpid()}.tmp")
        tmp_path.write_text(text)
        os.replace(tmp_path, path)
    return dis.stdout, r.stdout + r.stderr


_FUNC = re.compile(r"^\s*\.text\.(\w+):\s*$")
_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?);")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_BRANCH = re.compile(r"`\((\.L_x_\d+)\)")


def functions(sass: str) -> dict[str, list[tuple[int, str, str]]]:
    """kernel -> [(address, opcode, operands)], with labels as (address, 'LABEL', name)."""
    out: dict[str, list] = {}
    cur = None
    for line in sass.splitlines():
        m = _FUNC.match(line)
        if m:
            cur = out.setdefault(m.group(1), [])
            continue
        if cur is None:
            continue
        m = _LABEL.match(line.strip())
        if m:
            cur.append((-1, "LABEL", m.group(1)))
            continue
        m = _INSTR.match(line)
        if m:
            cur.append((int(m.group(1), 16), m.group(3), m.group(4)))
    return out


@dataclass
class Mix:
    """Instruction counts of one loop body, by class."""
    total: int = 0
    ffma: int = 0
    fp32_other: int = 0
    hmma: int = 0
    lds: dict = field(default_factory=dict)       # width in bits -> count
    sts: dict = field(default_factory=dict)
    ldg: dict = field(default_factory=dict)
    bar: int = 0
    integer: int = 0
    other: int = 0

    @property
    def lds_count(self) -> int:
        return sum(self.lds.values())

    def add(self, op: str) -> None:
        self.total += 1
        base = op.split(".")[0]
        width = 128 if ".128" in op else 64 if ".64" in op else 32
        if base == "FFMA":
            self.ffma += 1
        elif base in ("FADD", "FMUL", "FMNMX"):
            self.fp32_other += 1
        elif base == "HMMA":
            self.hmma += 1
        elif base == "LDS":
            self.lds[width] = self.lds.get(width, 0) + 1
        elif base == "STS":
            self.sts[width] = self.sts.get(width, 0) + 1
        elif base == "LDG":
            self.ldg[width] = self.ldg.get(width, 0) + 1
        elif base == "BAR":
            self.bar += 1
        elif base in _INT or op in _INT:
            self.integer += 1
        else:
            self.other += 1

    def text(self) -> str:
        def w(d):
            return "+".join(f"{n}x{b}" for b, n in sorted(d.items())) or "0"
        return (f"FFMA {self.ffma} HMMA {self.hmma} LDS {w(self.lds)} STS {w(self.sts)} "
                f"LDG {w(self.ldg)} BAR {self.bar} INT {self.integer} other "
                f"{self.other + self.fp32_other} / {self.total}")


def inner_loop(code: list[tuple[int, str, str]]) -> Mix | None:
    """The mix of the loop with the most FFMA + HMMA (module doc); None without a loop."""
    where = {}
    for i, (_, op, rest) in enumerate(code):
        if op == "LABEL":
            where[rest] = i
    best, best_key = None, (-1, 0)
    for i, (_, op, rest) in enumerate(code):
        if not op.startswith("BRA"):
            continue
        m = _BRANCH.search(rest)
        if not m or m.group(1) not in where or where[m.group(1)] >= i:
            continue
        mix = Mix()
        for _, o, _ in code[where[m.group(1)]:i + 1]:
            if o != "LABEL":
                mix.add(o)
        key = (mix.ffma + mix.hmma, mix.total)
        if key > best_key:
            best, best_key = mix, key
    return best if best is not None and best.ffma + best.hmma > 0 else None


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?, (\d+) bytes smem)?")


def ptxas_report(text: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    cur = None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = out.setdefault(m.group(1), {"shared": 0, "spills": 0})
            continue
        if cur is None:
            continue
        m = _FRAME.search(line)
        if m:
            cur["spills"] = int(m.group(2)) + int(m.group(3))
        m = _USED.search(line)
        if m:
            cur["registers"] = int(m.group(1))
            cur["shared"] = int(m.group(2) or 0)
    return out


@dataclass
class KernelModel:
    """One kernel of the plan, modelled (module doc). Times are seconds, MODELLED."""
    name: str
    layer: str
    phase: str
    launches: int
    threads: int
    blocks: int
    registers: int = 0
    spills: int = 0
    shared: int = 0
    occupancy: float = 0.0
    resident: int = 0
    waves: float = 0.0
    gemm: bool = False
    mix: Mix | None = None
    ksteps_per_iter: float = 0.0
    issue: float = 0.0              # SM clocks per k-step per warp
    fp32: float = 0.0
    shared_bw: float = 0.0
    tensor: float = 0.0             # SM clocks per k-step per warp on the tensor cores
    precision: str = "fp32"
    bound: str = ""
    flops: int = 0
    bytes: int = 0
    seconds: float = 0.0
    ffma_per_lds: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["mix"] = asdict(self.mix) if self.mix else None
        return d


def _gemm_tiles(k) -> GemmTiles | None:
    c = k.consts
    if not {"BM", "BN", "BK", "TM", "TN"} <= set(c) or "part" in (p.name for p in k.params
                                                                  if p.kind == "in"):
        return None
    if getattr(k, "precision", "fp32") != "fp32":
        return GemmTiles(c["BM"], c["BN"], c["BK"], c["WTM"], c["WTN"], layout="wmma")
    layout = "strided" if "As[${BK}][${BM} + 1]" in k.template else "blocked"
    return GemmTiles(c["BM"], c["BN"], c["BK"], c["TM"], c["TN"], layout=layout)


def _shared_wavefronts(t: GemmTiles, mix: Mix, steps: float) -> float:
    """Shared-memory wavefronts per k-step of one warp (module doc)."""
    tx = t.TX
    a_rows, b_cols = ceil_div(32, tx), min(tx, 32)
    if t.layout == "blocked":
        per_step = (t.TM / 4) * ceil_div(a_rows * 16, 128) + (t.TN / 4) * ceil_div(b_cols * 16,
                                                                                 128)
    else:
        per_step = t.TM * ceil_div(a_rows * 4, 128) + t.TN * ceil_div(b_cols * 4, 128)
    stores = sum(n * (b // 32) for b, n in mix.sts.items()) / steps
    return per_step + stores


def _tensor_bounds(row: KernelModel, t: GemmTiles, mix: Mix, precision: str) -> None:
    """A wmma GEMM's bounds per k-step per warp (module doc): one loop iteration is one BK
    slab; the warp's TM x TN x 1 MMA work at the SM's share of the dense tensor peak; shared
    reads of the fragments (TM + TN operands per k-step, 4 bytes tf32, 2 bf16) and the
    loop's stores, 128 bytes a wavefront."""
    steps = t.BK
    row.precision = precision
    row.ksteps_per_iter = steps
    row.issue = mix.total / SCHEDULERS / steps
    row.fp32 = (mix.ffma + mix.fp32_other) * 32 / FP32_LANES / steps
    per_clk = PEAK_TENSOR[precision] / (SM_COUNT * CLOCK_HZ)
    row.tensor = 2 * t.TM * t.TN / per_clk
    elem = 4 if precision == "tf32" else 2
    stores = sum(n * (b // 32) for b, n in mix.sts.items()) / steps
    row.shared_bw = (t.TM + t.TN) * elem / 128 + stores


def model_kernel(k, step, sass_code, usage, launches: int, nbytes: int) -> KernelModel:
    blocks = math.prod(g // max(l, 1) for g, l in zip(k.global_size, k.local_size))
    u = usage.get(k.name, {})
    regs = u.get("registers", 0)
    row = KernelModel(k.name, step.layer, step.phase, launches, k.threads, blocks,
                      registers=regs, spills=u.get("spills", 0), shared=u.get("shared", 0),
                      flops=k.flops, bytes=nbytes)
    if regs:
        row.occupancy = occupancy_sm90(regs, k.threads, row.shared)
        row.resident = int(round(row.occupancy * 64 / ceil_div(k.threads, 32)))
        row.waves = blocks / max(1, SM_COUNT * row.resident)
    roofline = max(k.flops / PEAK_FP32, nbytes / HBM_BYTES_PER_S)
    t = _gemm_tiles(k)
    mix = inner_loop(sass_code) if sass_code else None
    if t is None or mix is None or not row.resident:
        row.seconds = roofline + LAUNCH_US * 1e-6
        row.bound = "roofline"
        return row
    row.gemm, row.mix = True, mix
    if t.layout == "wmma":
        _tensor_bounds(row, t, mix, k.precision)
    else:
        steps = mix.ffma / (t.TM * t.TN)
        row.ksteps_per_iter = steps
        row.issue = mix.total / SCHEDULERS / steps
        row.fp32 = (mix.ffma + mix.fp32_other) * 32 / FP32_LANES / steps
        row.shared_bw = _shared_wavefronts(t, mix, steps)
        row.ffma_per_lds = mix.ffma / max(1, mix.lds_count)
    per_step, row.bound = max((row.issue, "issue"), (row.fp32, "fp32"),
                              (row.shared_bw, "shared"), (row.tensor, "tensor"))
    ks = k.consts.get("KS", k.consts["K"])
    warps = ceil_div(k.threads, 32)

    def wave(resident: int) -> float:
        hide = min(1.0, resident * warps / LATENCY_WARPS)
        return resident * warps * ks * per_step / hide

    full, rest = divmod(blocks, SM_COUNT * row.resident)
    cycles = full * wave(row.resident) + (wave(ceil_div(rest, SM_COUNT)) if rest else 0.0)
    compute = cycles / CLOCK_HZ
    if nbytes / HBM_BYTES_PER_S > compute:
        row.bound = "dram"
    row.seconds = max(compute, nbytes / HBM_BYTES_PER_S) + LAUNCH_US * 1e-6
    return row


def model_network(compiled: Compiled) -> list[KernelModel]:
    """One row per kernel of the training step (forward, backward, update launches)."""
    plan = compiled.plan
    sass, report = compile_sass(compiled.cuda_source)
    funcs, usage = functions(sass), ptxas_report(report)
    rows: dict[str, KernelModel] = {}
    counts: dict[str, int] = {}
    first = {}
    for s in plan.steps:
        if s.kind != "launch" or s.when == "test":
            continue
        counts[s.kernel] = counts.get(s.kernel, 0) + 1
        first.setdefault(s.kernel, s)
    for name, s in first.items():
        k = plan.kernels[name]
        nbytes = sum(plan.buffers[a].nbytes for p, a in zip(k.params, s.args)
                     if not p.scalar)
        rows[name] = model_kernel(k, s, funcs.get(name), usage, counts[name], nbytes)
    return list(rows.values())


def step_seconds(rows: list[KernelModel]) -> float:
    return sum(r.seconds * r.launches for r in rows)


def baseline_tiles(graph, batch: int) -> dict:
    """The tiles of the earlier GEMM (before the blocked family): strided 64x64x16 with 4x4
    per thread everywhere; split-K only on the conv weight gradient, aiming at ~64 blocks
    (at most 16 slices, each at least 512 deep)."""
    from ..kernel import PartContext
    old = GemmTiles(64, 64, 16, 4, 4, splits=1, layout="strided")
    out = {}
    for layer in graph.compute_layers:
        if not layer.op.tuned:
            continue
        tiles = dict.fromkeys(("fwd", "bwd_weight", "bwd_data"), old)
        if layer.type == "conv":
            ctx = PartContext(layer, layer.parts[0], batch, True, {})
            cin, _, _ = ctx.in_shape
            _, oh, ow = ctx.out_shape
            m, n, k = ctx.out_shape[0], cin * layer.attrs["size"] ** 2, batch * oh * ow
            groups = ceil_div(m, 64) * ceil_div(n, 64)
            splits = max(1, min(16, ceil_div(64, groups), k // 512))
            tiles["bwd_weight"] = GemmTiles(64, 64, 16, 4, 4, splits=splits, layout="strided")
        out[layer.name] = tiles
    return out


def with_precision(graph, precision: str):
    """`graph` as if its recipe said `precision` (the plan reads it from the recipe)."""
    import dataclasses
    return dataclasses.replace(graph, recipe=dataclasses.replace(graph.recipe,
                                                                 precision=precision))


def cudnn_estimate_ms(precision: str) -> float:
    """PyTorch + cuDNN's AlexNet b128 step on one H100, ESTIMATED from the convnet-benchmarks
    anchor scaled by peak (module constants). For tf32/bf16 the dense tensor peak: a lower
    bound, as the anchor's pooling, LRN and ReLU kernels do not speed up with it."""
    peak = PEAK_FP32 if precision == "fp32" else PEAK_TENSOR[precision]
    return CUDNN_ANCHOR_MS * CUDNN_ANCHOR_PEAK / peak


def sass_report(spec, batch_size: int | None, as_json: bool = False,
                precisions: tuple[str, ...] = ("fp32", "tf32")) -> str:
    """The before/after table of `spec` at `batch_size` (default: the spec's batch), and the
    modelled step at each of `precisions` (the spec's own recipe statement is overridden)."""
    from ..ir.build import build_graph
    graph = build_graph(spec)
    n = batch_size or graph.recipe.batch_size
    fp32 = with_precision(graph, "fp32")
    after = model_network(compile_network(fp32, n))
    before = model_network(compile_network(fp32, n, tiles=baseline_tiles(fp32, n)))
    tc = {p: model_network(compile_network(with_precision(graph, p), n))
          for p in precisions if p != "fp32"}
    if as_json:
        return json.dumps({"spec": graph.name, "batch": n, "device": "H100 SXM5 (modelled)",
                           "before": [r.to_json() for r in before],
                           "after": [r.to_json() for r in after],
                           "step_ms_before": step_seconds(before) * 1e3,
                           "step_ms_after": step_seconds(after) * 1e3,
                           **{f"after_{p}": [r.to_json() for r in rows]
                              for p, rows in tc.items()},
                           **{f"step_ms_{p}": step_seconds(rows) * 1e3
                              for p, rows in tc.items()},
                           "cudnn_estimate_ms": {p: cudnn_estimate_ms(p) for p in precisions}})
    return format_report(graph.name, n, before, after, tc)


def _gemm_line(r: KernelModel) -> str:
    mix = r.mix.text() if r.mix else "-"
    return (f"  {r.name:<22} {r.precision:>4} {r.registers:>4} {r.spills:>3} {r.occupancy:4.2f} "
            f"{r.blocks:>7} {r.waves:6.2f} {r.ffma_per_lds:5.1f} {r.issue:5.1f} {r.fp32:5.1f} "
            f"{r.shared_bw:5.1f} {r.tensor:5.1f} {r.bound:>6} "
            f"{r.seconds * r.launches * 1e6:9.1f}  {mix}")


def format_report(name: str, batch: int, before, after, tc: dict | None = None) -> str:
    tc = tc or {}
    head = (f"  {'kernel':<22} {'prec':>4} {'regs':>4} {'spl':>3} {'occ':>4} {'blocks':>7} "
            f"{'waves':>6} {'F/LDS':>5} {'issue':>5} {'fp32':>5} {'smem':>5} {'tens':>5} "
            f"{'bound':>6} {'model us':>9}  inner loop (SASS)")
    out = [f"{name}, batch {batch}: SASS-level model on one H100 SXM5 (132 SMs, 1.98 GHz, "
           f"{PEAK_FP32 / 1e12:.1f} TFLOP/s FP32, {HBM_BYTES_PER_S / 1e12:.2f} TB/s) — "
           f"MODELLED, not measured",
           "issue / fp32 / smem: SM clocks per k-step per warp; model us: all of a training "
           "step's launches of that kernel"]
    tables = [("before (strided 64x64x16, 4x4 per thread)", before),
              ("after (blocked family, split-K for 132 SMs, Winograd where it wins)", after),
              *((f"precision {p} (wmma tensor-core GEMMs, {PEAK_TENSOR[p] / 1e12:.0f} TFLOP/s "
                 f"dense)", rows) for p, rows in tc.items())]
    for title, rows in tables:
        gemm = [r for r in rows if r.gemm]
        other = [r for r in rows if not r.gemm]
        g_s = sum(r.seconds * r.launches for r in gemm)
        o_s = sum(r.seconds * r.launches for r in other)
        fl = sum(r.flops * r.launches for r in gemm)
        peak = PEAK_TENSOR.get(gemm[0].precision, PEAK_FP32) if gemm else PEAK_FP32
        out += ["", f"{title}: GEMMs {g_s * 1e3:.2f} ms ({fl / max(g_s, 1e-12) / 1e12:.1f} "
                    f"TFLOP/s, {fl / max(g_s, 1e-12) / peak:.0%} of peak), other kernels "
                    f"{o_s * 1e3:.2f} ms (roofline), step {(g_s + o_s) * 1e3:.2f} ms modelled",
                head]
        out += [_gemm_line(r) for r in gemm]
    tb, ta = step_seconds(before), step_seconds(after)
    out += ["", f"modelled FP32 step: before {tb * 1e3:.2f} ms, after {ta * 1e3:.2f} ms "
                f"({tb / ta:.1f}x); PyTorch + cuDNN estimated {cudnn_estimate_ms('fp32'):.1f} "
                f"ms (convnet-benchmarks' {CUDNN_ANCHOR_MS:.0f} ms on a Titan X, scaled by "
                f"FP32 peak)"]
    for p, rows in tc.items():
        out.append(f"modelled {p.upper()} step: {step_seconds(rows) * 1e3:.2f} ms; PyTorch + "
                   f"cuDNN estimated >= {cudnn_estimate_ms(p):.1f} ms (the same anchor scaled "
                   f"by the dense {p.upper()} peak: a lower bound)")
    return "\n".join(out)
