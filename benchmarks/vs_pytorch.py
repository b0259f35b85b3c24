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

The PyTorch mirror, its timing and the comparison are netspec.bench.vs_pytorch's (also behind
`netspec bench --vs-pytorch`); this driver runs them over several backends, adds the memory
measurement and saves the results file.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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

        from netspec.bench.vs_pytorch import torch_layers
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
            from netspec.runtime.sgd import layer_multipliers, sgd_update
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
    from netspec.bench.vs_pytorch import FORMAT, compare_with_torch, format_comparison, versions
    from netspec.ir.build import build_graph

    graph = build_graph(args.spec)
    backends = args.backends.split(",") if args.backends else available_backends()
    record = {"format": FORMAT, "spec": os.path.relpath(args.spec, ROOT),
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": socket.gethostname(), "cpu": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "versions": versions(), "runs": []}
    for backend in backends:
        batch = args.opencl_batch_size if backend == "opencl" and args.opencl_batch_size \
            else args.batch_size
        iterations = args.opencl_iterations if backend == "opencl" and args.opencl_iterations \
            else args.iterations
        # one netspec step and one PyTorch step alternate (see netspec.bench.vs_pytorch)
        run = compare_with_torch(graph, backend, batch_size=batch, iterations=iterations,
                                 warmup=args.warmup)
        print("\n" + format_comparison(backend, batch, run["netspec"], run["torch"],
                                       run["comparison"]))
        memory = step_memory(args.spec, backend, batch) if args.memory else None
        if memory:
            print(f"  peak RSS of a step (own process): netspec "
                  f"{memory['netspec'].get('peak_rss_mb', float('nan')):.0f} MB (+"
                  f"{memory['netspec'].get('step_peak_increase_mb', float('nan')):.0f} MB over "
                  f"the built net), PyTorch {memory['torch'].get('peak_rss_mb', float('nan')):.0f}"
                  f" MB (+{memory['torch'].get('step_peak_increase_mb', float('nan')):.0f} MB)")
        run["backend"] = backend
        record["runs"].append(dict(run, memory=memory))
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
