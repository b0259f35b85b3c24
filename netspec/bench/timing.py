"""Timing a training step layer by layer, like `caffe time`: `bench(graph, backend, ...)`.

One training step is loss_and_grads (forward and backward, train mode) followed by the SGD
update. After `warmup` untimed steps (kernel builds, allocations, BLAS threads), each of
`iterations` steps is timed whole and per (layer, direction), and the medians are reported.

How each backend is timed (the device's own clock wherever there is one; the backend hands
out its clock, `Net.clock()`, netspec/runtime/clock.py):
- numpy: time.perf_counter around every layer part's forward and backward, the softmax loss
  and the host SGD update;
- opencl: the profiling events (CL_PROFILING_COMMAND_START/END) of every kernel and copy, on
  queues created with profiling enabled;
- cuda: a pair of timing `cupy.cuda.Event`s recorded on the step's stream around every kernel
  and copy (their elapsed time, not the host clock); the whole step likewise from events
  recorded on every stream before and after it.
The whole step on numpy and opencl is the host clock around it (the queues are finished at its
end), which includes what the per-layer rows do not: host <-> device transfers, launch gaps.

FLOPs per row, from the IR's multiply-accumulates (Layer.macs, per image):
    forward  = 2 · MACs · N
    backward = 2 · MACs · N · (2 if the layer has weights and its input needs a gradient,
                               1 otherwise; 0 for an unweighted layer reading the data)
so conv and fc rows count the weight gradient and, except for a layer reading the network's
input, the data gradient; LRN's MACs are its window sums. Rows with no MACs (pooling, ReLU,
dropout, softmax) have flops 0 and no GFLOP/s.
"""
from __future__ import annotations

import os
import re
import statistics
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ..ir.graph import INPUT, Graph
from ..runtime import build
from ..runtime.clock import UPDATE_ROW
from ..runtime.plan_net import PlanNet
from ..runtime.sgd import layer_multipliers, sgd_update

DIRECTIONS = ("forward", "backward", "update")


@dataclass
class Row:
    layer: str
    type: str
    direction: str                      # forward | backward | update
    ms: float                           # median over the timed iterations
    flops: int
    share: float = 0.0                  # of the sum of all rows' ms
    gflops: float | None = None
    # how the backend ran a conv row, where it says ("winograd F(2x2,3x3)", "im2col+GEMM"):
    # for Winograd, gflops counts the direct conv's FLOPs, an effective rate
    algorithm: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class KernelRow:
    """One kernel of the plan (device backends): median ms and GFLOP/s from the kernel's own
    flop count (codegen Kernel.flops) times its launches per step (one kernel may serve
    several parts of a layer)."""

    name: str
    layer: str
    phase: str
    ms: float
    flops: int
    gflops: float | None


@dataclass
class BenchResult:
    network: str
    backend: str
    device: str
    batch_size: int
    iterations: int
    warmup: int
    timer: str
    step_ms: float                      # median whole step: forward, backward, update
    forward_ms: float                   # median of the forward rows' sum
    backward_ms: float
    update_ms: float
    rows: list[Row]
    kernels: list[KernelRow] = field(default_factory=list)
    step_ms_all: list[float] = field(default_factory=list)
    load_average: list[float] = field(default_factory=list)
    threads: int | None = None
    loss_grads_ms: float = 0.0          # median of loss_and_grads alone (no update)
    loss_grads_ms_all: list[float] = field(default_factory=list)
    sgemm_gflops: float | None = None   # this machine's NumPy sgemm, measured in the same run
    # one untimed step's calls, where the backend counts them (Net.host_counters: the CUDA
    # emulator): h2d_bytes, d2h_bytes, uploads, downloads, syncs, launches, device_copies,
    # graph_launches
    host_counters: dict | None = None
    # the bounds on those counters (counter_bounds): name -> {"max", "met"}
    host_counter_bounds: dict | None = None

    @property
    def images_per_sec(self) -> float:
        return 1e3 * self.batch_size / self.step_ms

    def to_json(self) -> dict:
        d = asdict(self)
        d["images_per_sec"] = self.images_per_sec
        d["format"] = "netspec-bench/1"
        return d

    @classmethod
    def from_json(cls, d: dict) -> BenchResult:
        """The result back from to_json's object (its derived and unknown keys ignored), e.g.
        after merging single steps (vs_pytorch.merge_runs)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["rows"] = [Row(**r) for r in d["rows"]]
        kw["kernels"] = [KernelRow(**k) for k in d.get("kernels", [])]
        return cls(**kw)


def row_flops(graph: Graph, layer_name: str, direction: str, batch: int) -> int:
    """FLOPs of one (layer, direction) row, by the rule in the module doc."""
    if layer_name == UPDATE_ROW or direction == "update":
        return 0
    layer = graph.layer(layer_name)
    macs = layer.macs
    if not macs:
        return 0
    if direction == "forward":
        return 2 * macs * batch
    input_grad = any(name != INPUT for name in layer.inputs)
    factor = (2 if input_grad else 1) if layer.weighted else (1 if input_grad else 0)
    return 2 * macs * batch * factor


def device_name(net) -> str:
    """The device a net runs on, in words, as its backend names it (`Net.device_name`)."""
    return str(net.device_name)


# -- the benchmark ---------------------------------------------------------------------------
def bench(spec: Any, backend: str = "numpy", *, batch_size: int | None = None,
          iterations: int = 5, warmup: int = 1, seed: int = 0, net=None,
          sgemm: bool = True) -> BenchResult:
    """Time `iterations` training steps of `spec` (path, text or Graph) on `backend` after
    `warmup` untimed ones; see the module doc. `net` reuses an already built network.
    sgemm=False skips measuring the machine's sgemm (sgemm_gflops None): a caller timing
    single steps measures it once, away from them, since a large GEMM's BLAS threads can
    still be busy when the next timed step starts."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    if net is None:
        from ..ir.build import build_graph
        from ..ir.graph import Graph
        from ..ir.memory import check_memory
        g = spec if isinstance(spec, Graph) else build_graph(spec)
        check_memory(g, batch_size or g.recipe.batch_size, True, "timing")
        net = build(g, backend, seed=seed)
    g = net.graph
    n = batch_size or g.recipe.batch_size
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *g.input_shape), dtype=np.float32).astype(net.dtype)
    if _prepares_input(net):          # as the trainer feeds it: uint8 crops, finished there
        x = device_batch(g, n, rng, seed)
    labels = rng.integers(0, g.classes, n)
    update = _sgd_step(net)
    for _ in range(warmup):
        _, grads = net.loss_and_grads(x, labels, train=True, **step_options(net))
        update(grads)

    sgemm_gflops = measure_sgemm_gflops() if sgemm else None
    clock = net.clock()
    try:
        timed = _timed_steps(net, clock, x, labels, update, iterations)
    finally:
        clock.close()
    counted = _counted_step(net, x, labels, update)
    rows = _rows(net, timed.per_iter, n)
    kernel_rows = _kernel_rows(net, timed.kernel_iters, n)

    def phase(d):
        return sum(r.ms for r in rows if r.direction == d)

    return BenchResult(
        network=g.name, backend=net.backend, device=device_name(net), batch_size=n,
        iterations=iterations, warmup=warmup, timer=clock.name,
        step_ms=statistics.median(timed.steps), forward_ms=phase("forward"),
        backward_ms=phase("backward"), update_ms=phase("update"), rows=rows,
        kernels=kernel_rows, step_ms_all=timed.steps, load_average=list(os.getloadavg()),
        threads=os.cpu_count(), loss_grads_ms=statistics.median(timed.loss_grads),
        loss_grads_ms_all=timed.loss_grads, sgemm_gflops=sgemm_gflops, host_counters=counted,
        host_counter_bounds=None if counted is None else counter_bounds(net, x, counted))


def _prepares_input(net) -> bool:
    prepares = getattr(net, "_dev_prepares_input", None)
    return bool(prepares and prepares() and net.graph.input_shape[0] == 3
                and net.dtype == np.float32)


def device_batch(graph: Graph, n: int, rng: np.random.Generator, seed: int = 0):
    """A training batch as the trainer hands a device net one (data/augment.U8Batch): random
    uint8 crops of the recipe's size from its base (crop + 32 without one), random offsets
    and flips, a mean image and ImageNet's colour PCA with the recipe's sigma."""
    from ..data.augment import InputTransform, U8Batch
    from ..data.stats import PCA
    crop = graph.input_shape[-1]
    r = graph.recipe
    base = max(getattr(r, "base", None) or crop + 32, crop)
    sigma = getattr(r, "pca_sigma", None) or 0.0
    # Krizhevsky et al.'s ImageNet eigenvalues and eigenvectors (0..1 pixel units)
    pca = PCA(np.array([0.2175, 0.0188, 0.0045]),
              np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140],
                        [-0.5836, -0.6948, 0.4203]]))
    mean = rng.uniform(60, 180, (3, base, base)).astype(np.float32)
    return U8Batch(rng.integers(0, 256, (n, 3, crop, crop), dtype=np.uint8),
                   rng.integers(0, base - crop + 1, (n, 2)), rng.random(n) < 0.5,
                   InputTransform(mean, pca, float(sigma), seed), 0, 0)


def counter_bounds(net, x, c: dict) -> dict:
    """Issue 26's bounds on one training step's counted host calls, each {"max", "met"}:
    host->device bytes <= the batch as uint8 (once per physical device) + the labels + 1 KiB
    per device; device->host bytes <= 1 KiB; host syncs 0; where the step is captured, one
    graph launch and no kernel launch of the host's."""
    n = x.shape[0]
    devices = len(set(getattr(net, "device_map", [0])))
    u8 = n * int(np.prod(net.graph.input_shape))
    bounds = {"h2d_bytes": devices * (u8 + 1024) + 4 * n, "d2h_bytes": 1024, "syncs": 0}
    if net._graphs_wanted() if isinstance(net, PlanNet) else False:
        bounds.update(graph_launches=1, launches=0)
    return {k: {"max": v, "met": c[k] <= v} for k, v in bounds.items()}


def _counted_step(net, x, labels, update) -> dict | None:
    """The host's calls during one more training step, without the clock's events, where the
    net counts them (Net.host_counters); None elsewhere. Three steps run, the third counted:
    without the clock a device net may capture its step as a graph the first time, once for
    each of its two uint8 upload slots."""
    if net.host_counters() is None:
        return None
    for _ in range(3):
        before = net.host_counters()
        _, grads = net.loss_and_grads(x, labels, train=True, **step_options(net))
        update(grads)
    return net.host_counters().since(before).as_dict()


def step_options(net) -> dict:
    """loss_and_grads' options for a step whose loss nobody reads: a device net (PlanNet)
    then doesn't wait for it (wait=False), so the step enqueues without a host sync."""
    return {"wait": False} if isinstance(net, PlanNet) else {}


def format_counters(c: dict) -> str:
    """One step's counted host calls, in words (emulated: counted by the CUDA emulator)."""
    return (f"per step (emulated, counted by the CUDA emulator): host->device "
            f"{c['h2d_bytes']:,} B in {c['uploads']} uploads, device->host {c['d2h_bytes']:,} B "
            f"in {c['downloads']} downloads, {c['syncs']} host syncs, {c['launches']} kernel "
            f"launches, {c['device_copies']} device copies, {c['graph_launches']} graph "
            f"launches")


def _sgd_step(net):
    """update(grads): the recipe's SGD step, on the device where the net has one
    (`net.update`), else the host rule on its parameters."""
    r = net.graph.recipe
    lr = r.lr if getattr(r, "lr", None) else 0.01
    momentum = getattr(r, "momentum", 0.9)
    decay = getattr(r, "weight_decay", 0.0005)
    if hasattr(net, "update"):
        return lambda grads: net.update(lr, momentum, decay)
    lr_mults, decay_mults = layer_multipliers(net.graph)
    params = net.parameters()
    velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def update(grads):
        sgd_update(params, grads, velocity, lr, momentum, decay, lr_mults, decay_mults)
        net.load_parameters(params)
    return update


@dataclass
class _Timed:
    per_iter: list[dict] = field(default_factory=list)      # per step: (layer, dir) -> ms
    kernel_iters: list[dict] = field(default_factory=list)  # per step: kernel -> (ms, n)
    steps: list[float] = field(default_factory=list)        # whole step, ms
    loss_grads: list[float] = field(default_factory=list)   # loss_and_grads alone, ms


def _timed_steps(net, clock, x, labels, update, iterations: int) -> _Timed:
    out = _Timed()
    for _ in range(iterations):
        clock.start()
        t0 = time.perf_counter()
        _, grads = net.loss_and_grads(x, labels, train=True, **step_options(net))
        t1 = time.perf_counter()
        update(grads)
        if isinstance(net, PlanNet):
            net.synchronize()           # the host clock's step ends when the device is done
        t2 = time.perf_counter()
        out.loss_grads.append((t1 - t0) * 1e3)
        out.steps.append(clock.step_ms((t2 - t0) * 1e3))
        times = clock.stop()
        if clock.host_update:
            times[UPDATE_ROW, "update"] = (t2 - t1) * 1e3
        out.per_iter.append(times)
        out.kernel_iters.append(clock.kernels())
    return out


def _rows(net, per_iter: list[dict], n: int) -> list[Row]:
    """The table's rows: forward in network order, backward in reverse, then the update;
    each the median over the steps, with its share of their sum."""
    g = net.graph
    types = {l.name: l.type for l in g.layers}
    types[UPDATE_ROW] = "sgd"
    order = {l.name: i for i, l in enumerate(g.layers)}
    keys = sorted({k for t in per_iter for k in t},
                  key=lambda k: (DIRECTIONS.index(k[1]), order.get(k[0], len(order))
                                 * (-1 if k[1] == "backward" else 1)))
    algo = getattr(net, "conv_algorithm", None)
    rows = []
    for layer, direction in keys:
        ms = statistics.median(t.get((layer, direction), 0.0) for t in per_iter)
        flops = row_flops(g, layer, direction, n)
        conv = algo is not None and types.get(layer) == "conv"
        rows.append(Row(layer, types.get(layer, "?"), direction, ms, flops,
                        gflops=flops / (ms * 1e6) if flops and ms > 0 else None,
                        algorithm=algo(g.layer(layer)) if conv else None))
    total = sum(r.ms for r in rows) or 1.0
    for row in rows:
        row.share = row.ms / total
    return rows


def _kernel_rows(net, kernel_iters: list[dict], n: int) -> list[KernelRow]:
    """One row per kernel the clock saw (device backends), in plan order."""
    if not kernel_iters or not kernel_iters[0]:
        return []
    plan = net.compiled(n).plan
    phase_of: dict[str, str] = {}
    for s in plan.steps:
        if s.kind == "launch":
            phase_of.setdefault(s.kernel, s.phase)
    out = []
    for name, k in plan.kernels.items():
        if name not in kernel_iters[0]:
            continue
        ms = statistics.median(t.get(name, (0.0, 0))[0] for t in kernel_iters)
        flops = k.flops * kernel_iters[0][name][1]
        out.append(KernelRow(name, k.layer, phase_of.get(name, "?"), ms, flops,
                             flops / (ms * 1e6) if flops and ms > 0 else None))
    return out


def measure_sgemm_gflops(size: int = 1536, repeats: int = 3) -> float:
    """This machine's float32 GEMM speed through NumPy's BLAS (the best of `repeats` square
    size³ products, in GFLOP/s): the limit the per-layer GEMM rows are read against."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best / 1e9


def winograd_footnotes(algorithms) -> list[str]:
    """One footnote per Winograd transform among `algorithms` ("winograd F(3x3,5x5)"), in
    order of appearance: its GEMMs do m²r²/(m+r-1)² fewer multiplies than the direct conv
    (Lavin & Gray 2016), 2.25 for F(2x2,3x3), 4.59 for F(3x3,5x5)."""
    lines = []
    for algorithm in dict.fromkeys(a for a in algorithms if (a or "").startswith("winograd")):
        m = re.fullmatch(r"winograd F\((\d+)x\1,(\d+)x\2\)", algorithm)
        if m is None:
            continue
        tile, size = int(m.group(1)), int(m.group(2))
        fewer = (tile * size) ** 2 / (tile + size - 1) ** 2
        lines.append(f"* {algorithm[len('winograd '):]}: Winograd; GFLOP/s counts the direct "
                     f"conv's FLOPs, an effective rate; its GEMMs do {fewer:.3g}x fewer "
                     f"multiplies")
    return lines


def format_table(res: BenchResult, kernels: bool = False) -> str:
    out = [f"{res.network} on {res.backend} ({res.device}), batch {res.batch_size}, median of "
           f"{res.iterations} steps after {res.warmup} warm-up; timer: {res.timer}; load "
           f"average {', '.join(f'{v:.1f}' for v in res.load_average)}",
           f"{'layer':<10} {'type':<8} {'direction':<9} {'ms':>9} {'GFLOP/s':>8} {'share':>6}"
           f" {'of sgemm':>8}"]
    for r in res.rows:
        gf = f"{r.gflops:8.1f}" if r.gflops is not None else f"{'':>8}"
        of = f"{100 * r.gflops / res.sgemm_gflops:7.0f}%" if r.gflops and res.sgemm_gflops \
            and r.type in ("conv", "fc") else ""
        if (r.algorithm or "").startswith("winograd"):
            of = f"{of} * {r.algorithm[len('winograd '):]}"
        out.append(f"{r.layer:<10} {r.type:<8} {r.direction:<9} {r.ms:9.2f} {gf} "
                   f"{100 * r.share:5.1f}% {of}".rstrip())
    out.append(f"forward {res.forward_ms:.1f} ms, backward {res.backward_ms:.1f} ms, update "
               f"{res.update_ms:.1f} ms (sum of rows)")
    out.append(f"training step: {res.step_ms:.1f} ms, {res.images_per_sec:.1f} images/s "
               f"(loss and gradients {res.loss_grads_ms:.1f} ms)")
    if res.sgemm_gflops:
        out.append(f"this machine's sgemm (NumPy BLAS, 1536^3, same run): "
                   f"{res.sgemm_gflops:.1f} GFLOP/s; 'of sgemm' is a GEMM row's share of it")
    out.extend(winograd_footnotes(r.algorithm for r in res.rows))
    if res.host_counters is not None:
        out.append(format_counters(res.host_counters))
    if res.host_counter_bounds:
        out.append("issue 26's bounds (emulated): " + "; ".join(
            f"{k} <= {b['max']:,}: {'met' if b['met'] else 'NOT met'}"
            for k, b in res.host_counter_bounds.items()))
    if kernels and res.kernels:
        out.append("")
        out.append(f"{'kernel':<28} {'phase':<9} {'ms':>9} {'GFLOP/s':>8}")
        for k in res.kernels:
            gf = f"{k.gflops:8.2f}" if k.gflops is not None else f"{'':>8}"
            out.append(f"{k.name:<28} {k.phase:<9} {k.ms:9.3f} {gf}")
    return "\n".join(out)
