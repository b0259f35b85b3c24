"""What checkpoints cost: the write time of AlexNet's state, and `--checkpoint-every 100` on the
demo.

    python benchmarks/checkpoint.py write [--dir DIR] [--repeat 3]
    python benchmarks/checkpoint.py demo [--steps 200] [--every 100] [--backend numpy]

`write`: AlexNet's 61M parameters (about 244 MB of float32 weights) and as much momentum,
saved as netspec saves them (safetensors, fsync of the file, rename, fsync of the directory,
state.json, the finite check), against torch.save of the same tensors followed by an fsync,
interleaved in the same run. `demo`: tiny-alexnet on the demo set for --steps steps, with and
without --checkpoint-every, interleaved twice; the overhead is the ratio of the wall times.
Timings on a shared machine are noisy: run both parts when it is quiet, and say how loaded it was.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write(args) -> dict:
    import torch

    from netspec.runtime import build
    from netspec.train.checkpoint import load_checkpoint, save_checkpoint
    from netspec.train.rundir import nonfinite

    net = build(str(ROOT / "specs" / "alexnet.net"), "numpy", seed=0)
    params = net.parameters()
    momentum = {k: np.full_like(v, 1e-3) for k, v in params.items()}
    mb = sum(v.nbytes for v in params.values()) / 1e6
    state = {"step": 1, "epoch": 0, "batch": 1}
    base = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=args.dir))
    rows = {"netspec save": [], "torch.save + fsync": [], "netspec load": [],
            "finite check": []}
    try:
        for i in range(args.repeat):
            t = time.perf_counter()
            save_checkpoint(base, params, momentum, {**state, "step": i}, keep=1)
            rows["netspec save"].append(time.perf_counter() - t)
            t = time.perf_counter()
            load_checkpoint(base)
            rows["netspec load"].append(time.perf_counter() - t)
            t = time.perf_counter()
            nonfinite(params), nonfinite(momentum)
            rows["finite check"].append(time.perf_counter() - t)
            t = time.perf_counter()
            path = base / "torch.pt"
            torch.save({"params": {k: torch.from_numpy(v) for k, v in params.items()},
                        "momentum": {k: torch.from_numpy(v) for k, v in momentum.items()}},
                       path)
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            rows["torch.save + fsync"].append(time.perf_counter() - t)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {"weights_MB": round(mb, 1), "momentum_MB": round(mb, 1), "dir": str(args.dir),
              "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    for k, v in rows.items():
        result[k + " s (median)"] = round(float(np.median(v)), 3)
    result["netspec/torch save ratio"] = round(
        result["netspec save s (median)"] / result["torch.save + fsync s (median)"], 2)
    return result


def demo(args) -> dict:
    spec = ROOT / "examples" / "tiny-alexnet.net"
    times = {"without": [], "with": []}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        for kind in ("without", "with"):
            out = Path(tempfile.mkdtemp(prefix="ckpt-demo-"))
            shutil.rmtree(out)
            cmd = [sys.executable, "-m", "netspec.cli", "train", "--spec", str(spec), "--data",
                   "demo", "--backend", args.backend, "--out", str(out), "--max-steps",
                   str(args.steps), "--no-progress"]
            if kind == "with":
                cmd += ["--checkpoint-every", str(args.every)]
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            times[kind].append(time.perf_counter() - t)
            size = (out / "checkpoint.safetensors").stat().st_size
            shutil.rmtree(out, ignore_errors=True)
    a, b = min(times["without"]), min(times["with"])
    write_s = demo_write_s(spec)
    # in `steps` steps --checkpoint-every adds the mid-epoch checkpoints (an epoch end or
    # --max-steps would have written the others anyway)
    return {"steps": args.steps, "every": args.every, "backend": args.backend,
            "checkpoint_MB": round(size / 1e6, 2), "without_s": times["without"],
            "with_s": times["with"], "overhead_measured": round(b / a - 1, 4),
            "checkpoint_write_s": round(write_s, 4),
            "overhead_estimated": round(write_s / (args.every * a / args.steps), 6),
            "load_average": os.getloadavg(), "cpus": os.cpu_count()}


def demo_write_s(spec: Path, repeat: int = 10) -> float:
    """Median time of one checkpoint of the demo net (weights, momentum, state.json)."""
    from netspec.runtime import build
    from netspec.train.checkpoint import save_checkpoint

    params = build(str(spec), "numpy", seed=0).parameters()
    momentum = {k: np.full_like(v, 1e-3) for k, v in params.items()}
    out = Path(tempfile.mkdtemp(prefix="ckpt-demo-write-"))
    times = []
    try:
        for i in range(repeat):
            t = time.perf_counter()
            save_checkpoint(out, params, momentum, {"step": i, "epoch": 0, "batch": i})
            times.append(time.perf_counter() - t)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("write")
    w.add_argument("--dir", default=None, help="where to write (default: the temp folder)")
    w.add_argument("--repeat", type=int, default=3)
    d = sub.add_parser("demo")
    d.add_argument("--steps", type=int, default=200)
    d.add_argument("--every", type=int, default=100)
    d.add_argument("--backend", default="numpy")
    args = p.parse_args()
    print(json.dumps(write(args) if args.what == "write" else demo(args), indent=1))


if __name__ == "__main__":
    main()
