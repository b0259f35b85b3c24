"""Time the NumPy reference backend's loss_and_grads on AlexNet against PyTorch CPU.

Both run the same network (specs/alexnet.net: two GPU halves as groups=2 convolutions, LRN per
half, the paper's α undivided) with the same weights, forward and backward, in float32, in the
same process, alternating so that neither gets a warmer machine. Prints each median and the
ratio numpy / torch.

    python benchmarks/reference_cpu.py [--batch 32] [--repeats 5] [--threads N]

--threads sets both libraries' thread counts (default: every core).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torch_alexnet(P, x, labels):
    import torch
    import torch.nn.functional as F

    def lrn_halves(h):
        # torch divides alpha by n; the paper (and netspec) does not
        return torch.cat([F.local_response_norm(c, 5, alpha=5e-4, beta=0.75, k=2.0)
                          for c in h.chunk(2, 1)], 1)

    h = F.relu(F.conv2d(x, P["conv1.weight"], P["conv1.bias"], stride=4, padding=2))
    h = F.max_pool2d(lrn_halves(h), 3, 2)
    h = F.relu(F.conv2d(h, P["conv2.weight"], P["conv2.bias"], padding=2, groups=2))
    h = F.max_pool2d(lrn_halves(h), 3, 2)
    h = F.relu(F.conv2d(h, P["conv3.weight"], P["conv3.bias"], padding=1))
    h = F.relu(F.conv2d(h, P["conv4.weight"], P["conv4.bias"], padding=1, groups=2))
    h = F.relu(F.conv2d(h, P["conv5.weight"], P["conv5.bias"], padding=1, groups=2))
    h = F.max_pool2d(h, 3, 2).flatten(1)
    h = F.relu(F.linear(h, P["fc6.weight"], P["fc6.bias"]))
    h = F.relu(F.linear(h, P["fc7.weight"], P["fc7.bias"]))
    return F.cross_entropy(F.linear(h, P["fc8.weight"], P["fc8.bias"]), labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--spec", default=str(ROOT / "specs" / "alexnet.net"))
    args = ap.parse_args()
    # BLAS reads its thread count when numpy is first imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import torch

    import netspec

    torch.set_num_threads(args.threads)
    net = netspec.build(args.spec, backend="numpy", seed=0)
    params = net.parameters()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, *net.graph.input_shape), dtype=np.float32)
    labels = rng.integers(0, net.graph.classes, args.batch)

    P = {k: torch.from_numpy(v).requires_grad_() for k, v in params.items()}
    tx, tl = torch.from_numpy(x), torch.from_numpy(labels)

    def run_numpy():
        loss, grads = net.loss_and_grads(x, labels)
        assert all(g.dtype == np.float32 for g in grads.values())

    def run_torch():
        loss = torch_alexnet(P, tx, tl)
        torch.autograd.grad(loss, list(P.values()))

    times = {"numpy": [], "torch": []}
    run_numpy(), run_torch()                      # warm-up: allocations, BLAS threads
    for _ in range(args.repeats):
        for name, fn in (("numpy", run_numpy), ("torch", run_torch)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"alexnet loss_and_grads, batch {args.batch}, float32, {args.threads} threads, "
          f"median of {args.repeats} (load average {load}: other processes skew both)")
    print(f"  numpy reference: {med['numpy']:8.0f} ms")
    print(f"  torch (CPU):     {med['torch']:8.0f} ms")
    print(f"  ratio numpy/torch: {med['numpy'] / med['torch']:.2f}x")


if __name__ == "__main__":
    main()
