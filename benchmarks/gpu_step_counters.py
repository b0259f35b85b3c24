"""What one CUDA training step asks of the host, counted on the CPU emulator (emulated: no GPU).

    NETSPEC_CUDA_EMULATE=1 python benchmarks/gpu_step_counters.py [--spec specs/alexnet.net]
        [--batches 2 4] [--at 128] [--devices 0,0] [--input uint8|float] [--label before]
        [-o FILE]

Runs `--steps` training steps (loss_and_grads then the device update) of `--spec` at each of
`--batches` on the emulator (two logical GPUs on `--devices`, default both on device 0) and
reads the emulator's counters for the last step: bytes host->device and device->host, uploads,
downloads, host synchronisations, kernel launches, device copies, graph launches. The batch is
fed as the trainer feeds it (`--input uint8`, the default: bench.timing.device_batch's uint8
crops, finished on the device) or as float32 (`--input float`, as before issue 26's uint8
path). The figures at `--at` are checked against issue 26's bounds (`bounds`): host->device
<= the batch as uint8 + labels + 1 KiB (one physical device), device->host <= 1 KiB, no
host sync, one graph launch and no kernel launch of the host's when captured.

A batch-128 AlexNet step takes about 15 CPU-minutes on the emulator, so the figures at `--at`
are computed, not run: bytes are affine in the batch (every transfer is per image or fixed), so
two measured batches give them exactly; launches and copies at `--at` are the measured ones
plus the difference the plan itself shows between the batches (tiles, hence split-K launches,
may depend on the batch); syncs, uploads and downloads are the code's, independent of the
batch (checked: equal at both measured batches). The modelled host time is
(launches + copies + uploads + downloads + graph launches) x `--per-call-us` (CuPy's cost of
one stream call from Python, 20-40 us per the issue's review; 30 us by default): modelled,
not measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def plan_calls(graph, batch: int) -> dict:
    """Launch and copy steps of one training step in the plan at `batch` (no device needed)."""
    from netspec.runtime.autotune import compile_tuned
    from netspec.runtime.cuda_backend import CudaNet
    plan = compile_tuned(graph, batch, backend=CudaNet).plan
    steps = (plan.steps_for("forward", True) + plan.steps_for("backward", True)
             + plan.steps_for("update", True))
    return {k: sum(s.kind == k for s in steps) for k in ("launch", "copy")}


def count(spec: str, batch: int, devices: list[int], steps: int, graphs: bool | None,
          uint8: bool = True) -> dict:
    from netspec.bench.timing import device_batch, step_options
    from netspec.ir.build import build_graph
    from netspec.runtime.cuda_backend import CudaNet
    from netspec.runtime.cuda_emulator import cupy_model as emu
    kw = {} if graphs is None else {"graphs": graphs}
    net = CudaNet(build_graph(spec), seed=0, devices=devices, **kw)
    g = net.graph
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *g.input_shape), dtype=np.float32)
    if uint8:
        x = device_batch(g, batch, rng)
    y = rng.integers(0, g.classes, batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        c0 = emu.counters.snapshot()
        net.loss_and_grads(x, y, train=True, **step_options(net))
        net.update(0.01, 0.9, 0.0005)
        c = emu.counters.since(c0)
    return {"batch": batch, "counters": c.as_dict(), "plan": plan_calls(g, batch),
            "seconds": time.perf_counter() - t0}


def at_batch(runs: list[dict], at: int, per_call_us: float) -> dict:
    """The figures at `at` images from two measured batches (see the module doc)."""
    a, b = runs[0], runs[-1]
    ca, cb = a["counters"], b["counters"]
    out = {}
    for k in ("h2d_bytes", "d2h_bytes"):
        slope = (cb[k] - ca[k]) / (b["batch"] - a["batch"])
        out[k] = round(ca[k] + slope * (at - a["batch"]))
    for k in ("uploads", "downloads", "syncs", "graph_launches"):
        if ca[k] != cb[k]:
            raise SystemExit(f"{k} differs between batches {a['batch']} and {b['batch']}: "
                             f"{ca[k]} vs {cb[k]}")
        out[k] = cb[k]
    plan_at = plan_calls_at[at]
    for k, pk in (("launches", "launch"), ("device_copies", "copy")):
        out[k] = cb[k] + plan_at[pk] - b["plan"][pk] if cb["graph_launches"] == 0 else cb[k]
    calls = (out["launches"] + out["device_copies"] + out["uploads"] + out["downloads"]
             + out["graph_launches"])
    out["host_calls"] = calls
    out["modelled_host_ms"] = calls * per_call_us / 1e3
    return out


def bounds(spec: str, at: int, c: dict) -> dict:
    """Issue 26's bounds at `at` images (one physical device), each {"max", "met"}."""
    from netspec.ir.build import build_graph
    g = build_graph(spec)
    u8 = at * int(np.prod(g.input_shape))
    want = {"h2d_bytes": u8 + 4 * at + 1024, "d2h_bytes": 1024, "syncs": 0}
    if c["graph_launches"]:
        want.update(graph_launches=1, launches=0)
    return {k: {"max": v, "met": c[k] <= v} for k, v in want.items()}


plan_calls_at: dict = {}


def main() -> None:
    os.environ.setdefault("NETSPEC_CUDA_EMULATE", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "specs/alexnet.net"))
    ap.add_argument("--batches", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--at", type=int, default=128)
    ap.add_argument("--devices", default="0,0")
    ap.add_argument("--steps", type=int, default=3)   # captures for both uint8 slots, then one
    ap.add_argument("--per-call-us", type=float, default=30.0)
    ap.add_argument("--graphs", choices=("on", "off", "default"), default="default")
    ap.add_argument("--input", choices=("uint8", "float"), default="uint8")
    ap.add_argument("--label", default="")
    ap.add_argument("-o", "--output")
    args = ap.parse_args()
    from netspec.ir.build import build_graph
    devices = [int(d) for d in args.devices.split(",")]
    graphs = None if args.graphs == "default" else args.graphs == "on"
    runs = [count(args.spec, b, devices, args.steps, graphs, args.input == "uint8")
            for b in args.batches]
    for r in runs:
        print(json.dumps(r), file=sys.stderr)
    plan_calls_at[args.at] = plan_calls(build_graph(args.spec), args.at)
    result = {"what": "counters of one training step (loss_and_grads + device update), "
                      "emulated on the CPU (runtime/cuda_emulator); figures at the target "
                      "batch computed from the measured ones and the plan (see "
                      "benchmarks/gpu_step_counters.py)",
              "label": args.label, "emulated": True, "spec": os.path.relpath(args.spec, ROOT),
              "devices": devices, "date": time.strftime("%Y-%m-%d"), "measured": runs,
              "input": args.input, "at_batch": args.at,
              "per_call_us_modelled": args.per_call_us,
              "computed_at_batch": at_batch(runs, args.at, args.per_call_us)}
    if len(set(devices)) == 1:
        result["bounds"] = bounds(args.spec, args.at, result["computed_at_batch"])
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
