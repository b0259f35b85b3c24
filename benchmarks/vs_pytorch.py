"""netspec against PyTorch on the same network, batch size and weights: per layer type and for
the whole training step.

    python benchmarks/vs_pytorch.py [--spec specs/alexnet.net] [--backends numpy,opencl]
        [--batch-size 32] [--opencl-batch-size N] [--iterations 5]
        [--opencl-iterations N] [--no-save]

For each netspec backend available here (numpy, opencl, cuda, or those asked for) it runs
`netspec.bench` and PyTorch on the same spec: PyTorch on the CPU with a CPU backend, and
cuDNN fp32 (TF32 off) on the GPU for cuda. PyTorch is timed layer by layer the same way as
netspec (forward per layer; backward per layer as torch.autograd.grad of that layer's output,
on the host clock with CUDA synchronisation or with CUDA events on the GPU), and its whole
step (one autograd forward and backward plus the SGD update) is timed on its own. The two
alternate step by step, so that the shared machine's changing load skews both alike.

It prints, per layer type and direction, netspec ms, PyTorch ms and the time ratio
netspec/PyTorch (< 1: netspec is faster), and the whole step's; and writes everything to
benchmarks/results/<date>-<machine>.json with the device names, versions, date, batch sizes
and load average.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# -- PyTorch, built from the same IR -------------------------------------------------------
def torch_layers(graph, params, device):
    """[(layer, fn(h, P) -> h, [param names])] for the body, in network order: the same math
    as netspec's (groups for same-gpu convs, LRN per part with the paper's undivided α)."""
    import torch
    import torch.nn.functional as F

    out = []
    for l in graph.compute_layers[:-1]:
        a, parts = l.attrs, l.parts
        names = []
        if l.type in ("conv", "fc"):
            if f"{l.name}.weight" not in params:
                raise NotImplementedError(f"{l.name}: per-part parameters are not mirrored")
            names = [f"{l.name}.weight", f"{l.name}.bias"]
        if l.type == "conv":
            groups = len(parts) if l.connect == "same-gpu" else 1

            def fn(h, P, a=a, n=names, g=groups, relu=l.relu):
                y = F.conv2d(h, P[n[0]], P[n[1]], stride=a["stride"], padding=a["pad"],
                             groups=g)
                return F.relu(y) if relu else y
        elif l.type == "fc":
            def fn(h, P, n=names, relu=l.relu):
                y = F.linear(h.flatten(1), P[n[0]], P[n[1]])
                return F.relu(y) if relu else y
        elif l.type == "lrn":
            sizes = [p.channels for p in parts]

            def fn(h, P, a=a, sizes=sizes):
                # torch divides alpha by n; the paper (and netspec) does not
                return torch.cat([F.local_response_norm(c, a["size"], alpha=a["alpha"] * a["size"],
                                                        beta=a["beta"], k=a["k"])
                                  for c in h.split(sizes, 1)], 1)
        elif l.type == "maxpool":
            def fn(h, P, a=a):
                return F.max_pool2d(h, a["size"], a["stride"])
        elif l.type == "avgpool":
            def fn(h, P, a=a):
                return F.avg_pool2d(h, a["size"], a["stride"])
        elif l.type == "relu":
            def fn(h, P):
                return F.relu(h)
        elif l.type == "dropout":
            def fn(h, P, a=a):
                return F.dropout(h, a["p"], training=True)
        else:
            raise NotImplementedError(f"{l.name}: layer type {l.type} is not mirrored")
        out.append((l, fn, names))
    return out


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


def bench_torch(graph, params, batch, iterations, warmup, device_name, seed=0):
    import numpy as np
    import torch
    import torch.nn.functional as F

    device = torch.device(device_name)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False          # cuDNN fp32, as netspec computes
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    P = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in params.items()}
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((batch, *graph.input_shape), dtype=np.float32),
                     device=device)
    labels = torch.tensor(rng.integers(0, graph.classes, batch), device=device)
    layers = torch_layers(graph, params, device)
    clock = TorchTimer(device)
    r = graph.recipe

    # the update PyTorch users run: torch.optim.SGD (its own momentum and decay form, the same
    # work per parameter); the per-layer rows time it on the layered step's gradients
    opt = torch.optim.SGD(list(P.values()), lr=r.lr or 0.01, momentum=r.momentum,
                          weight_decay=r.weight_decay)
    names = list(P)

    def update(grads):
        for n in names:
            P[n].grad = grads[n]
        opt.step()

    def whole_step():
        """(loss and gradients ms, whole step ms) of one autograd step plus SGD."""
        t0 = time.perf_counter()
        h = x
        for _, fn, _ in layers:
            h = fn(h, P)
        loss = F.cross_entropy(h, labels)
        g = torch.autograd.grad(loss, [P[n] for n in names])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        update(dict(zip(names, g)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t0) * 1e3

    def layered_step(times):
        acts = []
        h = x
        for l, fn, names in layers:
            inp = h.detach().requires_grad_(any(n != "data" for n in l.inputs))
            out, ms = clock(lambda fn=fn, inp=inp: fn(inp, P))
            times[l.name, "forward"] += ms
            acts.append((l, inp, out, names))
            h = out
        logits = h.detach().requires_grad_()
        head = graph.compute_layers[-1].name
        (loss, dz), ms = clock(lambda: (lambda lo: (lo, torch.autograd.grad(lo, logits)[0]))(
            F.cross_entropy(logits, labels)))
        times[head, "forward"] += ms
        grad = dz
        grads = {}
        for l, inp, out, names in reversed(acts):
            wrt = ([inp] if inp.requires_grad else []) + [P[n] for n in names]
            if not wrt:
                continue
            gs, ms = clock(lambda out=out, wrt=wrt, grad=grad: torch.autograd.grad(out, wrt, grad))
            times[l.name, "backward"] += ms
            if inp.requires_grad:
                grad, gs = gs[0], gs[1:]
            grads.update(zip(names, gs))
        _, ms = clock(lambda: update(grads))
        times["sgd", "update"] += ms

    for _ in range(warmup):
        whole_step()
        layered_step(defaultdict(float))
    per_iter, steps, lg = [], [], []
    for _ in range(iterations):
        t = defaultdict(float)
        layered_step(t)
        per_iter.append(t)
        a, b = whole_step()
        lg.append(a)
        steps.append(b)
    keys = {k for t in per_iter for k in t}
    rows = {k: statistics.median(t.get(k, 0.0) for t in per_iter) for k in keys}
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return {"device": dev, "step_ms": statistics.median(steps), "step_ms_all": steps,
            "loss_grads_ms": statistics.median(lg), "loss_grads_ms_all": lg,
            "rows": [{"layer": k[0], "direction": k[1], "ms": v} for k, v in rows.items()]}


def merge_runs(runs: list[dict]) -> dict:
    """Single-step results -> one result with per-row and whole-step medians."""
    out = dict(runs[0])
    keys = {(r["layer"], r["direction"]) for run in runs for r in run["rows"]}
    first = {(r["layer"], r["direction"]): r for r in runs[0]["rows"]}
    rows = []
    for k in keys:
        ms = statistics.median(next((r["ms"] for r in run["rows"]
                                     if (r["layer"], r["direction"]) == k), 0.0)
                               for run in runs)
        row = dict(first.get(k, {"layer": k[0], "direction": k[1]}), ms=ms)
        if row.get("flops"):
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
    if runs[0].get("kernels"):
        kernels = []
        for k in runs[0]["kernels"]:
            ms = statistics.median(next((q["ms"] for q in run["kernels"]
                                         if q["name"] == k["name"]), 0.0) for run in runs)
            kernels.append(dict(k, ms=ms, gflops=k["flops"] / (ms * 1e6) if k["flops"] else None))
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


def print_comparison(backend, batch, ours, theirs, cmp) -> None:
    print(f"\nnetspec {backend} ({ours['device']}) vs PyTorch ({theirs['device']}), batch "
          f"{batch}; time ratio netspec/PyTorch (< 1: netspec faster)")
    print(f"  {'type':<9} {'direction':<9} {'netspec ms':>11} {'torch ms':>10} {'ratio':>7}")
    for r in cmp["by_type"]:
        ratio = f"{r['ratio']:7.2f}" if r["ratio"] is not None else f"{'-':>7}"
        print(f"  {r['type']:<9} {r['direction']:<9} {r['netspec_ms']:11.1f} "
              f"{r['torch_ms']:10.1f} {ratio}")
    s = cmp["step"]
    print(f"  whole step: netspec {s['netspec_ms']:.0f} ms, PyTorch {s['torch_ms']:.0f} ms, "
          f"ratio {s['ratio']:.2f} (PyTorch/netspec speed {s['speed_ratio']:.2f})")
    s = cmp["loss_grads"]
    print(f"  loss and gradients: netspec {s['netspec_ms']:.0f} ms, PyTorch "
          f"{s['torch_ms']:.0f} ms (PyTorch/netspec speed {s['speed_ratio']:.2f})")
    if ours.get("sgemm_gflops"):
        print(f"  this machine's sgemm (NumPy BLAS): {ours['sgemm_gflops']:.1f} GFLOP/s; "
              f"GEMM rows at % of it:")
        for r in ours["rows"]:
            if r.get("gflops") and r["layer"] in gemm_layers(ours):
                print(f"    {r['layer']:<8} {r['direction']:<9} {r['gflops']:7.1f} GFLOP/s "
                      f"{100 * r['gflops'] / ours['sgemm_gflops']:5.0f}%")


def gemm_layers(ours: dict) -> set[str]:
    return {r["layer"] for r in ours["rows"] if r.get("type") in ("conv", "fc")}


def versions() -> dict:
    import numpy
    v = {"python": platform.python_version(), "numpy": numpy.__version__,
         "platform": platform.platform()}
    for mod in ("torch", "pyopencl", "cupy"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:
            pass
    try:
        import netspec
        v["netspec"] = netspec.__version__
        import subprocess
        v["netspec_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                             capture_output=True, text=True).stdout.strip()
    except Exception:
        pass
    try:
        cfg = numpy.show_config(mode="dicts")
        v["blas"] = cfg["Build Dependencies"]["blas"]["name"]
    except Exception:
        pass
    return v


def available_backends() -> list[str]:
    from netspec.runtime import backend_class
    out = []
    for name in ("numpy", "cpu", "opencl", "cuda"):
        try:
            if backend_class(name).available():
                out.append(name)
        except ImportError:
            pass
    return out


def rss_child(kind: str, spec: str, backend: str, batch: int) -> None:
    """In a fresh process: build the net (netspec or PyTorch), then run two whole training
    steps; print the RSS before the first step and the process's peak RSS, in MB."""
    import numpy as np

    import netspec
    from netspec.ir.build import build_graph

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    graph = build_graph(spec)
    net = netspec.build(graph, backend, seed=0)
    if kind == "torch":
        import torch
        import torch.nn.functional as F
        params = net.parameters()
        del net
        P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        del params
        opt = torch.optim.SGD(list(P.values()), lr=0.01, momentum=0.9, weight_decay=5e-4)
        layers = torch_layers(graph, P, torch.device("cpu"))
        rng = np.random.default_rng(0)
        x = torch.tensor(rng.standard_normal((batch, *graph.input_shape), dtype=np.float32))
        labels = torch.tensor(rng.integers(0, graph.classes, batch))

        def step():
            opt.zero_grad()
            h = x
            for _, fn, _ in layers:
                h = fn(h, P)
            F.cross_entropy(h, labels).backward()
            opt.step()
    else:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, *graph.input_shape), dtype=np.float32)
        labels = rng.integers(0, graph.classes, batch)

        if hasattr(net, "update"):
            def update(grads):
                net.update(0.01, 0.9, 0.0005)
        else:                              # the NumPy backend: the host rule, as bench does
            from netspec.codegen.sgd import layer_multipliers, sgd_update
            lr_m, decay_m = layer_multipliers(graph)
            params = net.parameters()
            velocity = {k: np.zeros_like(v) for k, v in params.items()}

            def update(grads):
                sgd_update(params, grads, velocity, 0.01, 0.9, 0.0005, lr_m, decay_m)
                net.load_parameters(params)

        def step():
            _, grads = net.loss_and_grads(x, labels, train=True)
            update(grads)
    def hwm_mb():
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

    before = rss_mb()
    for _ in range(2):
        step()
    peak = hwm_mb()
    print(json.dumps({"rss_before_step_mb": before, "peak_rss_mb": peak,
                      "step_peak_increase_mb": peak - before}))


def step_memory(spec: str, backend: str, batch: int) -> dict:
    """Peak RSS of a training step, netspec `backend` and PyTorch CPU, each in its own
    process (see rss_child)."""
    import subprocess
    out = {}
    for kind in ("netspec", "torch"):
        r = subprocess.run([sys.executable, __file__, "--rss-child", kind, "--spec", spec,
                            "--backends", backend, "--batch-size", str(batch)],
                           capture_output=True, text=True)
        out[kind] = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 \
            else {"error": r.stderr.strip().splitlines()[-1:]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "specs" / "alexnet.net"))
    ap.add_argument("--backends", help="comma-separated (default: every available one)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--opencl-batch-size", type=int,
                    help="batch for opencl (PoCL on a CPU is slow; default --batch-size)")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--opencl-iterations", type=int, help="default --iterations")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", help="JSON path (default benchmarks/results/<date>-<machine>.json)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--memory", action="store_true",
                    help="also measure each side's peak RSS of a step, in fresh processes")
    ap.add_argument("--rss-child", choices=["netspec", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        sys.path.insert(0, str(ROOT))
        rss_child(args.rss_child, args.spec, args.backends or "auto", args.batch_size)
        return

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(os.cpu_count()))   # before numpy and torch load BLAS
    import netspec
    from netspec.bench import bench
    from netspec.ir.build import build_graph

    graph = build_graph(args.spec)
    backends = args.backends.split(",") if args.backends else available_backends()
    record = {"format": "netspec-vs-pytorch/1", "spec": os.path.relpath(args.spec, ROOT),
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": socket.gethostname(), "cpu": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "versions": versions(), "runs": []}
    for backend in backends:
        batch = args.opencl_batch_size if backend == "opencl" and args.opencl_batch_size \
            else args.batch_size
        iterations = args.opencl_iterations if backend == "opencl" and args.opencl_iterations \
            else args.iterations
        net = netspec.build(graph, backend, seed=0)
        params = net.parameters()
        load0 = os.getloadavg()
        torch_device = "cuda" if backend == "cuda" else "cpu"
        # alternate one netspec step and one PyTorch step, so that a change in the machine's
        # load (it is shared) skews both alike; the medians are over these single steps
        ours_runs, their_runs = [], []
        for i in range(iterations):
            warm = args.warmup if i == 0 else 0
            ours_runs.append(bench(graph, backend, batch_size=batch, iterations=1,
                                   warmup=warm, net=net).to_json())
            their_runs.append(bench_torch(graph, params, batch, 1, warm, torch_device))
        del net
        ours, theirs = merge_runs(ours_runs), merge_runs(their_runs)
        cmp = compare(graph, ours, theirs)
        print_comparison(backend, batch, ours, theirs, cmp)
        memory = step_memory(args.spec, backend, batch) if args.memory else None
        if memory:
            print(f"  peak RSS of a step (own process): netspec "
                  f"{memory['netspec'].get('peak_rss_mb', float('nan')):.0f} MB (+"
                  f"{memory['netspec'].get('step_peak_increase_mb', float('nan')):.0f} MB over "
                  f"the built net), PyTorch {memory['torch'].get('peak_rss_mb', float('nan')):.0f}"
                  f" MB (+{memory['torch'].get('step_peak_increase_mb', float('nan')):.0f} MB)")
        record["runs"].append({"backend": backend, "batch_size": batch, "memory": memory,
                               "load_average_before": list(load0),
                               "load_average_after": list(os.getloadavg()),
                               "netspec": ours, "torch": theirs, "comparison": cmp})
        sys.stdout.flush()
    if not args.no_save:
        day = datetime.date.today().isoformat()
        out = Path(args.out) if args.out else \
            ROOT / "benchmarks" / "results" / f"{day}-{socket.gethostname()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
