"""netspec against PyTorch on the same network, weights and batch, steps interleaved: the
PyTorch mirror of a spec's IR (`torch_layers`), PyTorch's side of a timed training step
(`TorchStep`, `bench_torch`), and the comparison (`compare_with_torch`) that
`netspec bench --vs-pytorch` and benchmarks/vs_pytorch.py print and save.

PyTorch is timed layer by layer the same way as netspec (timing.py): forward per layer, and
backward per layer as torch.autograd.grad of that layer's output, on the host clock (with CUDA
events on a GPU), then torch.optim.SGD on those gradients; its whole step (one autograd forward
and backward plus `torch.optim.SGD(lr, momentum, weight_decay)` from the spec's recipe) is timed
on its own, as is loss and gradients alone. netspec and PyTorch alternate single steps, back to
back, so that a change in a shared machine's load skews both alike; the medians are over those
steps. Against a CPU backend PyTorch runs in a process of its own (`TorchProcess`: each side
with its own OpenMP runtime and defaults).

Ratios: per layer type and direction the time ratio netspec/PyTorch (< 1: netspec faster); for
the whole step and for loss and gradients also the speed ratio PyTorch time / netspec time
(> 1: netspec faster), the README's convention (Performance, "The fast CPU backend").

torch is optional (the `bench` extra: pip install "netspec[bench]"): it is imported only
inside the functions that use it.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import NetspecError
from ..ir.graph import INPUT, Graph, Layer
from ..runtime import build
from .timing import UPDATE_ROW, bench, measure_sgemm_gflops

INSTALL_HINT = 'pip install "netspec[bench]"'
FORMAT = "netspec-vs-pytorch/1"          # benchmarks/vs_pytorch.py's results file


class NotComparable(NetspecError, NotImplementedError):
    """A network or run that can't be compared with PyTorch: a layer the mirror does not
    build, or netspec's cuda backend with a torch that has no CUDA device."""


def torch_importable() -> bool:
    """Whether torch can be found, without importing it (see compare_with_torch: on a CPU
    PyTorch runs in its own process, so this one never loads torch's OpenMP runtime)."""
    import importlib.util
    import sys
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def require_torch():
    """The torch module. ImportError naming the install command when torch can't be loaded
    (not installed, or a broken install)."""
    try:
        import torch
    except (ImportError, OSError) as e:
        raise ImportError(f"comparing with PyTorch needs torch, which can't be imported here "
                          f"({e}); install it with: {INSTALL_HINT}") from None
    return torch


def torch_device_for(backend: str) -> str:
    """'cuda' for netspec's cuda backend (PyTorch on cuDNN fp32), else 'cpu'; NotComparable
    when the backend is cuda and torch has no CUDA device."""
    if backend != "cuda":
        return "cpu"
    torch = require_torch()
    if not torch.cuda.is_available():
        raise NotComparable(
            f"netspec's cuda backend is compared with PyTorch on CUDA, and torch "
            f"{torch.__version__} has no CUDA device here (torch.cuda.is_available() is "
            f"False); compare a CPU backend (--backend cpu) instead")
    return "cuda"


# -- PyTorch, built from the same IR -------------------------------------------------------
def _part_inputs(graph: Graph, l: Layer) -> list[tuple]:
    """(part, [(first, count), ...]) per part in output-channel order: the input channels the
    part reads, as ranges of the layer's inputs' whole outputs concatenated in `l.inputs`
    order, adjacent ranges joined."""
    base, at = {}, 0
    for name in l.inputs:
        base.setdefault(name, at)
        at += graph.input_shape[0] if name == INPUT else graph.layer(name).out_shape[0]
    out = []
    for p in sorted(l.parts, key=lambda p: p.start):
        ranges: list[list[int]] = []
        for s in sorted(p.sources, key=lambda s: s.offset):
            src = None if s.layer == INPUT else graph.layer(s.layer)
            first = base[s.layer] + (s.start if src is None or src.replicated
                                     else src.parts[s.part].start + s.start)
            if ranges and sum(ranges[-1]) == first:
                ranges[-1][1] += s.channels
            else:
                ranges.append([first, s.channels])
        out.append((p, [tuple(r) for r in ranges]))
    return out


def _torch_form(l: Layer, **kw):
    """The layer's op in PyTorch (Op.torch); NotComparable when the op has none."""
    try:
        return l.op.torch(l.attrs, **kw)
    except NotImplementedError as e:
        raise NotComparable(f"{l.name}: layer type {l.type} is not mirrored in PyTorch "
                            f"({e})") from None


def _weighted_fn(graph: Graph, l: Layer, params, train: bool = True) -> tuple:
    """(fn(h, P) -> h, parameter names) of a weighted layer: one (grouped) call where its
    parts form a regular grouping of stacked tensors, as PyTorch users would write it; else
    one call per part on the channels it reads, concatenated (uneven splits, sub-ranges)."""
    import torch

    parts = _part_inputs(graph, l)
    c_in, count = l.in_shape[0], len(parts)
    table = l.param_table()
    names = list(dict.fromkeys(name for _, _, name, _ in table))
    stacked = all(name == f"{l.name}.{d.name}" for _, d, name, _ in table)
    groups = None
    if stacked and all(r == [(0, c_in)] for _, r in parts):
        groups = 1
    elif stacked and c_in % count == 0 and len({p.channels for p, _ in parts}) == 1 and \
            all(r == [(i * c_in // count, c_in // count)] for i, (_, r) in enumerate(parts)):
        groups = count
    if groups not in (None, 1) and not l.op.grouped:
        groups = None                       # e.g. no grouped linear in torch: one call per part
    by_part = defaultdict(list)
    for p, _, name, rows in table:
        by_part[p.index].append((name, rows))
    if any(name not in params for name in names):
        raise NotComparable(f"{l.name}: parameters {names} are not all among the net's")

    if groups is not None:
        op = _torch_form(l, relu=l.relu, groups=groups, train=train)

        def fn(h, P, names=names):
            return op(h, *(P[n] for n in names))
    else:
        op = _torch_form(l, relu=l.relu, train=train)
        plan = [(ranges, by_part[p.index]) for p, ranges in parts]

        def fn(h, P, plan=plan):
            outs = []
            for ranges, tensors in plan:
                x = torch.cat([h[:, f:f + c] for f, c in ranges], 1) if len(ranges) > 1 \
                    else h[:, ranges[0][0]:sum(ranges[0])]
                outs.append(op(x, *(P[n][rows] for n, rows in tensors)))
            return torch.cat(outs, 1)
    return fn, names


def _unweighted_fn(graph: Graph, l: Layer, noise, train: bool = True):
    """fn(h, P) -> h of an unweighted layer: its op's PyTorch form on the whole layer, or on
    each part's channels where the op mixes channels within a part only (`onnx_per_part`:
    LRN's window stops at the part's edges)."""
    import torch

    op = _torch_form(l, train=train, noise=noise)
    if not l.op.onnx_per_part:
        return lambda h, P: op(h)
    parts = _part_inputs(graph, l)
    if any(r != [(p.start, p.channels)] for p, r in parts):
        raise NotComparable(f"{l.name}: {l.type.upper()} parts that don't read their own "
                            f"channels are not mirrored")
    sizes = [p.channels for p, _ in parts]
    return lambda h, P: torch.cat([op(c) for c in h.split(sizes, 1)], 1)


def torch_layers(graph: Graph, params, device=None, keep_masks=None,
                 train: bool = True, chain: bool = True) -> list[tuple]:
    """[(layer, fn(h, P) -> h, [param names])] for the body (every compute layer but the
    loss head), in network order, each from its op's PyTorch form (`Op.torch`): the same math
    as netspec's (convs grouped as the parts read their inputs, LRN within each part with the
    paper's undivided α).

    params: the net's parameters by name (net.parameters()), only their names are read here.
    keep_masks: {dropout layer: keep mask (N, C[, H, W]) of 0/1} (the layer's `draw_noise`)
    for a reproducible train-time dropout (y = x · m / (1 − p), as netspec's); without it
    PyTorch draws its own masks (the same work). train=False: test-time behaviour (dropout
    passes its input through). NotComparable for a layer type without a
    PyTorch form, or a graph that is not a chain of layers, that the mirror does not build.
    chain=False: any graph; each fn then takes its layer's inputs concatenated along
    channels (the caller keeps the outputs by layer name)."""
    import torch

    out = []
    body, head = graph.compute_layers[:-1], graph.compute_layers[-1]
    if head.type != "softmax":
        raise NotComparable(f"{head.name}: the mirror ends in a softmax loss, not {head.type}")
    prev = INPUT
    for l in body:
        if chain and l.inputs != [prev]:
            raise NotComparable(f"{l.name}: reads {', '.join(l.inputs)}; only a chain of layers "
                                f"(each reading the one before) is mirrored in PyTorch")
        prev = l.name
        if l.op.weighted:
            fn, names = _weighted_fn(graph, l, params, train)
        else:
            noise = None
            if keep_masks is not None and l.name in keep_masks:
                noise = torch.as_tensor(np.asarray(keep_masks[l.name], np.float32),
                                        device=device)
            fn, names = _unweighted_fn(graph, l, noise, train), []
        out.append((l, fn, names))
    return out


def trainable_names(graph: Graph) -> set[str]:
    """The parameters SGD trains (not state such as batch norm's running statistics)."""
    return {name for l in graph.weighted_layers for _, d, name, _ in l.param_table()
            if d.trainable}


def torch_loss(graph: Graph):
    """fn(logits, labels) -> the mean loss: the head's `Op.torch_loss`."""
    head = graph.compute_layers[-1]
    return head.op.torch_loss(head.attrs)


class TorchTimer:
    def __init__(self, device):
        import torch
        self.torch, self.device = torch, device
        self.cuda = device.type == "cuda"

    def __call__(self, fn):
        """(result, ms) of fn() on this device's clock."""
        torch = self.torch
        if self.cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            r = fn()
            b.record()
            b.synchronize()
            return r, a.elapsed_time(b)
        t = time.perf_counter()
        r = fn()
        return r, (time.perf_counter() - t) * 1e3


class TorchStep:
    """PyTorch's training step of `graph` with the weights `params` (net.parameters()) on the
    batch `bench` draws from `seed` (standard-normal images, uniform labels): set up once, so
    that steps interleaved with netspec's keep their weights and momentum like netspec's."""

    def __init__(self, graph: Graph, params, batch: int, device_name: str = "cpu", seed=0):
        torch = require_torch()
        self.torch, self.graph = torch, graph
        self.device = device = torch.device(device_name)
        if device.type == "cuda":
            # as netspec computes: cuDNN fp32, or TF32 where the recipe says `precision tf32`
            # (PyTorch has no BF16 switch for fp32 tensors: a bf16 spec meets strict fp32)
            tf32 = graph.recipe.precision == "tf32"
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True
        self.P = P = {k: torch.tensor(v, device=device, requires_grad=True)
                      for k, v in params.items()}
        rng = np.random.default_rng(seed)
        self.x = torch.tensor(rng.standard_normal((batch, *graph.input_shape),
                                                  dtype=np.float32), device=device)
        self.labels = torch.tensor(rng.integers(0, graph.classes, batch), device=device)
        self.layers = torch_layers(graph, params, device, chain=False)
        self.loss = torch_loss(graph)
        self.clock = TorchTimer(device)
        r = graph.recipe
        # batch norm's running statistics are state: no gradient, no update
        self.trainable = trainable_names(graph)
        self.names = [n for n in P if n in self.trainable]
        # the update PyTorch users run: torch.optim.SGD (its own momentum and decay form, the
        # same work per parameter); the per-layer rows time it on the layered step's gradients
        self.opt = torch.optim.SGD([P[n] for n in self.names],
                                   lr=r.lr or 0.01, momentum=r.momentum,
                                   weight_decay=r.weight_decay)

    def _sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def update(self, grads):
        for n in self.names:
            self.P[n].grad = grads[n]
        self.opt.step()

    def _inputs(self, outs: dict, l):
        """The layer's inputs concatenated along channels, as its mirror takes them."""
        xs = [outs[i] for i in l.inputs]
        return xs[0] if len(xs) == 1 else self.torch.cat(xs, 1)

    def whole_step(self) -> tuple[float, float]:
        """(loss and gradients ms, whole step ms) of one autograd step plus SGD."""
        P = self.P
        t0 = time.perf_counter()
        outs = {INPUT: self.x}
        for l, fn, _ in self.layers:
            outs[l.name] = h = fn(self._inputs(outs, l), P)
        loss = self.loss(h, self.labels)
        g = self.torch.autograd.grad(loss, [P[n] for n in self.names])
        self._sync()
        t1 = time.perf_counter()
        self.update(dict(zip(self.names, g)))
        self._sync()
        t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t0) * 1e3

    def layered_step(self, times) -> None:
        """One step timed per (layer, direction) into `times` (ms, summed). Each layer runs
        on detached inputs; backwards, a layer's input gradient is split by channels among
        the layers it read and summed there (a layer read twice, or by several, gets each
        reader's share), so any graph is timed as its layers."""
        torch, P, clock = self.torch, self.P, self.clock
        acts = []
        outs = {INPUT: self.x}
        for l, fn, names in self.layers:
            inp = self._inputs(outs, l).detach().requires_grad_(
                any(i != INPUT for i in l.inputs))
            out, ms = clock(lambda fn=fn, inp=inp: fn(inp, P))
            times[l.name, "forward"] += ms
            acts.append((l, inp, out, names))
            outs[l.name] = out
        logits = outs[self.layers[-1][0].name].detach().requires_grad_()
        head = self.graph.compute_layers[-1].name
        (loss, dz), ms = clock(lambda: (lambda lo: (lo, torch.autograd.grad(lo, logits)[0]))(
            self.loss(logits, self.labels)))
        times[head, "forward"] += ms
        dy = {self.layers[-1][0].name: dz}
        grads = {}
        for l, inp, out, names in reversed(acts):
            grad = dy.pop(l.name, None)
            names = [n for n in names if n in self.trainable]
            wrt = ([inp] if inp.requires_grad else []) + [P[n] for n in names]
            if grad is None or not wrt:
                continue
            gs, ms = clock(lambda out=out, wrt=wrt, grad=grad: torch.autograd.grad(out, wrt, grad))
            times[l.name, "backward"] += ms
            if inp.requires_grad:
                sizes = [outs[i].shape[1] for i in l.inputs]
                for i, part in zip(l.inputs, gs[0].split(sizes, 1)):
                    if i != INPUT:
                        dy[i] = part if i not in dy else dy[i] + part
                gs = gs[1:]
            grads.update(zip(names, gs))
        _, ms = clock(lambda: self.update(grads))
        times[UPDATE_ROW, "update"] += ms

    def run(self, iterations: int, warmup: int) -> dict:
        """`warmup` untimed steps, then `iterations` of (a layered step, a whole step): rows
        (layer, direction, median ms), whole step and loss-and-gradients medians (ms), the
        device, torch's version and thread count."""
        torch = self.torch
        for _ in range(warmup):
            self.whole_step()
            self.layered_step(defaultdict(float))
        per_iter, steps, lg = [], [], []
        for _ in range(iterations):
            t = defaultdict(float)
            self.layered_step(t)
            per_iter.append(t)
            a, b = self.whole_step()
            lg.append(a)
            steps.append(b)
        keys = list(dict.fromkeys(k for t in per_iter for k in t))
        rows = {k: statistics.median(t.get(k, 0.0) for t in per_iter) for k in keys}
        cuda = self.device.type == "cuda"
        dev = torch.cuda.get_device_name(self.device) if cuda else \
            f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
        return {"device": dev, "version": torch.__version__,
                "threads": torch.get_num_threads(),
                "step_ms": statistics.median(steps), "step_ms_all": steps,
                "loss_grads_ms": statistics.median(lg), "loss_grads_ms_all": lg,
                "rows": [{"layer": k[0], "direction": k[1], "ms": v} for k, v in rows.items()]}


def bench_torch(graph, params, batch, iterations, warmup, device_name, seed=0) -> dict:
    """PyTorch's side alone: TorchStep(...).run(iterations, warmup)."""
    return TorchStep(graph, params, batch, device_name, seed).run(iterations, warmup)


def merge_runs(runs: list[dict]) -> dict:
    """Single-step results (netspec's BenchResult.to_json or TorchStep.run) -> one result
    with per-row and whole-step medians, rows in the first run's order."""
    out = dict(runs[0])
    keys = list(dict.fromkeys((r["layer"], r["direction"]) for run in runs for r in run["rows"]))
    first = {(r["layer"], r["direction"]): r for r in runs[0]["rows"]}
    rows = []
    for k in keys:
        ms = statistics.median(next((r["ms"] for r in run["rows"]
                                     if (r["layer"], r["direction"]) == k), 0.0)
                               for run in runs)
        row = dict(first.get(k, {"layer": k[0], "direction": k[1]}), ms=ms)
        if row.get("flops") and ms > 0:
            row["gflops"] = row["flops"] / (ms * 1e6)
        rows.append(row)
    total = sum(r["ms"] for r in rows) or 1.0
    for r in rows:
        if "share" in r:
            r["share"] = r["ms"] / total
    out["rows"] = rows
    out["step_ms_all"] = [x for run in runs for x in run["step_ms_all"]]
    out["step_ms"] = statistics.median(out["step_ms_all"])
    out["loss_grads_ms_all"] = [x for run in runs for x in run["loss_grads_ms_all"]]
    out["loss_grads_ms"] = statistics.median(out["loss_grads_ms_all"])
    out["iterations"] = len(runs)
    if "images_per_sec" in out:
        out["images_per_sec"] = 1e3 * out["batch_size"] / out["step_ms"]
    sgemm = [run["sgemm_gflops"] for run in runs if run.get("sgemm_gflops")]
    if sgemm:
        out["sgemm_gflops"] = statistics.median(sgemm)
    if runs[0].get("kernels"):
        kernels = []
        for k in runs[0]["kernels"]:
            ms = statistics.median(next((q["ms"] for q in run["kernels"]
                                         if q["name"] == k["name"]), 0.0) for run in runs)
            kernels.append(dict(k, ms=ms, gflops=k["flops"] / (ms * 1e6)
                                if k["flops"] and ms > 0 else None))
        out["kernels"] = kernels
    for d in ("forward", "backward", "update"):
        if f"{d}_ms" in out:
            out[f"{d}_ms"] = sum(r["ms"] for r in rows if r["direction"] == d)
    return out


# -- comparison ----------------------------------------------------------------------------
def by_type(graph, rows):
    """(type, direction) -> summed ms; the update under ('sgd', 'update')."""
    types = {l.name: l.type for l in graph.layers}
    out = defaultdict(float)
    for r in rows:
        out[types.get(r["layer"], "sgd"), r["direction"]] += r["ms"]
    return dict(out)


def compare(graph, ours: dict, theirs: dict) -> dict:
    """Per (type, direction) netspec ms, PyTorch ms and their time ratio netspec/PyTorch;
    the whole step's and loss-and-gradients' ms and speed ratio PyTorch/netspec."""
    a, b = by_type(graph, ours["rows"]), by_type(graph, theirs["rows"])
    table = []
    for key in sorted(set(a) | set(b), key=lambda k: (("forward", "backward", "update")
                                                     .index(k[1]), k[0])):
        ta, tb = a.get(key, 0.0), b.get(key, 0.0)
        table.append({"type": key[0], "direction": key[1], "netspec_ms": ta, "torch_ms": tb,
                      "ratio": ta / tb if tb > 0 else None})
    return {"by_type": table, "step": {
        "netspec_ms": ours["step_ms"], "torch_ms": theirs["step_ms"],
        "ratio": ours["step_ms"] / theirs["step_ms"],
        "speed_ratio": theirs["step_ms"] / ours["step_ms"]}, "loss_grads": {
        "netspec_ms": ours["loss_grads_ms"], "torch_ms": theirs["loss_grads_ms"],
        "speed_ratio": theirs["loss_grads_ms"] / ours["loss_grads_ms"]}}


def format_comparison(backend, batch, ours, theirs, cmp, gemm_rows: bool = True) -> str:
    """The comparison as text: per type and direction, the whole step, loss and gradients;
    with gemm_rows, also each GEMM row's share of the machine's sgemm GFLOP/s."""
    out = [f"netspec {backend} ({ours['device']}) vs PyTorch ({theirs['device']}), batch "
           f"{batch}; time ratio netspec/PyTorch (< 1: netspec faster)",
           f"  {'type':<9} {'direction':<9} {'netspec ms':>11} {'torch ms':>10} {'ratio':>7}"]
    for r in cmp["by_type"]:
        ratio = f"{r['ratio']:7.2f}" if r["ratio"] is not None else f"{'-':>7}"
        out.append(f"  {r['type']:<9} {r['direction']:<9} {r['netspec_ms']:11.1f} "
                   f"{r['torch_ms']:10.1f} {ratio}")
    s = cmp["step"]
    out.append(f"  whole step: netspec {s['netspec_ms']:.0f} ms, PyTorch {s['torch_ms']:.0f} ms, "
               f"ratio {s['ratio']:.2f} (PyTorch/netspec speed {s['speed_ratio']:.2f})")
    s = cmp["loss_grads"]
    out.append(f"  loss and gradients: netspec {s['netspec_ms']:.0f} ms, PyTorch "
               f"{s['torch_ms']:.0f} ms (PyTorch/netspec speed {s['speed_ratio']:.2f})")
    if gemm_rows and ours.get("sgemm_gflops"):
        out.append(f"  this machine's sgemm (NumPy BLAS): {ours['sgemm_gflops']:.1f} GFLOP/s; "
                   f"GEMM rows at % of it:")
        for r in ours["rows"]:
            if r.get("gflops") and r["layer"] in gemm_layers(ours):
                algo = r.get("algorithm") or ""
                note = f"  (Winograd {algo[len('winograd '):]}: effective, direct-conv FLOPs)" \
                    if algo.startswith("winograd") else ""
                out.append(f"    {r['layer']:<8} {r['direction']:<9} {r['gflops']:7.1f} GFLOP/s "
                           f"{100 * r['gflops'] / ours['sgemm_gflops']:5.0f}%{note}")
    return "\n".join(out)


def gemm_layers(ours: dict) -> set[str]:
    return {r["layer"] for r in ours["rows"] if r.get("type") in ("conv", "fc")}


def versions() -> dict:
    """Python, NumPy (and its BLAS), torch, pyopencl, cupy and netspec versions (those that
    import), with netspec's git commit where it runs from a checkout."""
    from importlib import metadata
    v = {"python": platform.python_version(), "numpy": np.__version__,
         "platform": platform.platform()}
    # from the installed distributions: importing torch here would load its OpenMP runtime
    # into this process (see TorchProcess)
    for mod, dists in (("torch", ("torch",)), ("pyopencl", ("pyopencl",)),
                       ("cupy", ("cupy-cuda13x", "cupy-cuda12x", "cupy"))):
        for dist in dists:
            try:
                v[mod] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                pass
    try:
        v["netspec"] = metadata.version("netspec")
        v["netspec_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parents[2],
            capture_output=True, text=True).stdout.strip()
    except Exception:
        pass
    try:
        cfg = np.show_config(mode="dicts")
        v["blas"] = cfg["Build Dependencies"]["blas"]["name"]
    except Exception:
        pass
    return v


# -- PyTorch in its own process -------------------------------------------------------------
def _torch_worker(conn, source: str, batch: int, device_name: str, seed: int) -> None:
    """The child's loop: build the mirror of `source` (NotComparable early), take the
    parameters, then answer ("run", warmup) with TorchStep.run(1, warmup) until ("stop",).
    Each reply is ("ok", value) or ("error", kind, message)."""
    try:
        from ..ir.build import build_graph
        graph = build_graph(source)
        require_torch()
        torch_layers(graph, graph.param_shapes(), chain=False)
        conn.send(("ok", None))
        params = conn.recv()
        step = TorchStep(graph, params, batch, device_name, seed)
        del params
        conn.send(("ok", None))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                return
            # plain JSON types: torch.__version__ is a TorchVersion, and unpickling one
            # would import torch in the parent
            conn.send(("ok", json.loads(json.dumps(step.run(1, msg[1])))))
    except NotComparable as e:
        conn.send(("error", "NotComparable", str(e)))
    except ImportError as e:
        conn.send(("error", "ImportError", str(e)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", "RuntimeError", f"{type(e).__name__}: {e}"))


class TorchProcess:
    """TorchStep in a child process (multiprocessing, spawn), driven step by step over a pipe.

    Why a process: PyTorch and netspec's cpu backend both use an OpenMP runtime, and in one
    process they share one (libgomp), loaded by whichever came first with that one's wait
    policy. PyTorch's default has idle OpenMP threads spin for milliseconds after each parallel
    region; on a 2-core VM those spinning threads took the cores from netspec's BLAS threads
    (AlexNet b32 step 1145 ms interleaved in one process, 828 ms with a passive policy, which
    in turn slowed PyTorch by ~5%). Each side in its own process runs with its own defaults,
    as its users run it; the steps still alternate, one at a time, back to back. (A pause
    between them, meant to let the other side's idle threads go to sleep, made the step after
    it slower instead, netspec's more than PyTorch's, as idle cores clock down: tiny-alexnet
    b64 netspec 87 -> 133 ms and PyTorch 105 -> 120 ms with 0.3 s; netspec's own threads
    sleep at once after a step: OpenMP passive, OPENBLAS_THREAD_TIMEOUT.)"""

    def __init__(self, graph: Graph, batch: int, device_name: str, seed: int):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_torch_worker, daemon=True,
                                args=(child, graph.spec.source, batch, device_name, seed))
        self.proc.start()
        child.close()
        self._reply()                                  # the mirror is buildable

    def _reply(self):
        try:
            msg = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the PyTorch process ended (exit code {self.proc.exitcode})") \
                from None
        if msg[0] == "ok":
            return msg[1]
        self.close()
        kind = {"NotComparable": NotComparable, "ImportError": ImportError}.get(msg[1],
                                                                              RuntimeError)
        raise kind(msg[2])

    def load(self, params) -> None:
        self.conn.send(params)
        self._reply()

    def run(self, iterations: int, warmup: int) -> dict:
        assert iterations == 1
        self.conn.send(("run", warmup))
        return self._reply()

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(("stop",))
            except OSError:
                pass
            self.proc.join(30)
            if self.proc.is_alive():
                self.proc.kill()


# -- the interleaved run -------------------------------------------------------------------
def compare_with_torch(graph: Graph, backend: str = "auto", *, batch_size: int | None = None,
                       iterations: int = 5, warmup: int = 1, seed: int = 0, net=None) -> dict:
    """Alternate one netspec training step (`bench`, `iterations=1`) and one PyTorch step
    (TorchStep: the same weights, from net.parameters() before the first step, and the same
    batch), `iterations` times, `warmup` untimed steps of each first. PyTorch runs on CUDA
    for netspec's cuda backend, else on the CPU.

    Against a CPU backend PyTorch runs in its own process (TorchProcess: each side with its
    own OpenMP runtime and defaults); against cuda, in this one.

    Returns {"backend", "batch_size", "load_average_before", "load_average_after",
    "netspec": merged BenchResult JSON, "torch": merged TorchStep.run, "comparison": compare(),
    "torch_process": whether PyTorch ran in a process of its own}.
    Raises ImportError (torch missing) and NotComparable (see there)."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    batch = batch_size or graph.recipe.batch_size
    on_cuda = (net.backend if net is not None else backend) == "cuda"
    theirs_step = None
    if on_cuda:
        require_torch()
        torch_layers(graph, graph.param_shapes(), chain=False)   # NotComparable before anything is built
    else:
        if not torch_importable():
            require_torch()                            # the ImportError with the install hint
        theirs_step = TorchProcess(graph, batch, "cpu", seed)   # NotComparable from there
    try:
        if net is None:
            net = build(graph, backend, seed=seed)
        if theirs_step is None:
            theirs_step = TorchStep(graph, net.parameters(), batch,
                                    torch_device_for(net.backend), seed)
        else:
            theirs_step.load(net.parameters())
        load0 = os.getloadavg()
        ours_runs, their_runs = [], []
        for i in range(iterations):
            warm = warmup if i == 0 else 0
            ours_runs.append(bench(graph, net.backend, batch_size=batch, iterations=1,
                                   warmup=warm, seed=seed, net=net, sgemm=False).to_json())
            their_runs.append(theirs_step.run(1, warm))
        load1 = os.getloadavg()
    finally:
        if isinstance(theirs_step, TorchProcess):
            theirs_step.close()
    ours, theirs = merge_runs(ours_runs), merge_runs(their_runs)
    # once, after the timed steps: BLAS threads spinning after it would slow the next step
    ours["sgemm_gflops"] = measure_sgemm_gflops()
    return {"backend": net.backend, "batch_size": batch, "load_average_before": list(load0),
            "load_average_after": list(load1), "netspec": ours, "torch": theirs,
            "comparison": compare(graph, ours, theirs), "torch_process": not on_cuda}
