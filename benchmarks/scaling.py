"""Data-parallel scaling on this machine: 1, 2 and 4 MPI replicas of tiny-alexnet training on
the NumPy backend, with the same global batch (strong scaling: the spec's batch is global).

    python benchmarks/scaling.py [--replicas 1 2 4] [--batch 48] [--steps 5] [--backend numpy]
                                 [--out benchmarks/results/scaling.json]

For each K, `mpirun -n K --oversubscribe` runs the trainer (netspec/train/data_parallel.py) for
two epochs of --steps steps on a generated image folder, then a bare MPI_Allreduce of the
gradient bytes over the same K processes (no training: what the link, here shared memory,
gives without the replicas' skew). The training figures are rank 0's from the
second epoch (the first pays for start-up): training images/s over the global batch, the
gradient allreduce's time per step on the communication thread, the part of it the step waited
for after its backward pass ("exposed"), and the overlap achieved, 1 − exposed/allreduce. BLAS
runs one thread per replica, so K = 2 uses both cores of a 2-core machine and K = 4
oversubscribes it. The predicted bytes per replica per step are the ring allreduce's
2(K−1)/K × the gradient bytes (netspec/ir/scaling.py).

Absolute figures depend on the machine and on what else runs on it: say which, and under what
load, wherever they are quoted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netspec.ir.build import build_graph  # noqa: E402
from netspec.ir.scaling import ring_allreduce_bytes  # noqa: E402


def make_folder(root: Path, train: int, size: int = 72, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for split, n in (("train", train // classes), ("val", 1)):
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                img[16:48, 16:48] = (25 * c, 255 - 25 * c, (80 * c) % 256)
                Image.fromarray(img).save(d / f"{i}.png")


def spec_text(batch: int) -> str:
    tiny = (ROOT / "examples" / "tiny-alexnet.net").read_text().split("train\n")[0]
    return tiny + (f"train\n  batch {batch}\n  epochs 2\n  sgd lr 0.005 momentum 0.9 "
                   f"weight_decay 0.0005\n  schedule none\n  augment crop 64 from 72 flip pca 0.1\n")


def run(k: int, spec: Path, data: Path, out: Path, backend: str) -> dict:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    cmd = [shutil.which("mpirun") or "mpirun", "-n", str(k), "--oversubscribe", sys.executable,
           "-m", "netspec.cli", "train", "--spec", str(spec), "--data", str(data),
           "--backend", backend, "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"K={k} failed:\n{r.stdout}\n{r.stderr}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    row = rows[-1]
    row["wall_s"] = time.perf_counter() - t0
    return row


ALLREDUCE_ONLY = """
import sys, time, numpy as np
from mpi4py import MPI
c = MPI.COMM_WORLD
a = np.ones(int(sys.argv[1]) // 4, np.float32)
for i in range(3):
    c.Allreduce(MPI.IN_PLACE, a)
c.Barrier()
t0 = time.perf_counter()
for i in range(int(sys.argv[2])):
    c.Allreduce(MPI.IN_PLACE, a)
dt = (time.perf_counter() - t0) / int(sys.argv[2])
if c.rank == 0:
    print(dt)
"""


def allreduce_only(k: int, nbytes: int, reps: int = 20) -> float:
    """Seconds per MPI_Allreduce of `nbytes` float32 over k processes, nothing else running in
    them: what the link (here shared memory) gives without the training's skew."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = subprocess.run([shutil.which("mpirun") or "mpirun", "-n", str(k), "--oversubscribe",
                        sys.executable, "-c", ALLREDUCE_ONLY, str(nbytes), str(reps)],
                       capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"allreduce K={k} failed:\n{r.stderr}")
    return float(r.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.json"))
    a = ap.parse_args()
    for k in a.replicas:
        if a.batch % k:
            raise SystemExit(f"--batch {a.batch} doesn't divide over {k} replicas")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_folder(tmp / "data", a.batch * a.steps)
        spec = tmp / "tiny.net"
        spec.write_text(spec_text(a.batch))
        grad = build_graph(str(spec)).total_params * 4
        results = []
        for k in a.replicas:
            row = run(k, spec, tmp / "data", tmp / f"run{k}", a.backend)
            bare = allreduce_only(k, grad) if k > 1 else 0.0
            res = {"replicas": k, "global_batch": a.batch,
                   "images_per_sec": row["images_per_sec"],
                   "allreduce_ms_per_step": row.get("allreduce_ms_per_step", 0.0),
                   "exposed_ms_per_step": row.get("allreduce_exposed_ms_per_step", 0.0),
                   "overlap": row.get("allreduce_overlap"),
                   "predicted_bytes_per_replica_per_step": ring_allreduce_bytes(grad, k),
                   "bare_allreduce_ms": 1e3 * bare,
                   "wall_s": row["wall_s"]}
            results.append(res)
            ov = "-" if res["overlap"] is None else f"{100 * res['overlap']:.0f}%"
            print(f"K={k}: {res['images_per_sec']:7.1f} img/s  allreduce "
                  f"{res['allreduce_ms_per_step']:6.1f} ms/step  exposed "
                  f"{res['exposed_ms_per_step']:6.1f} ms/step  overlap {ov:>4}  ring "
                  f"{res['predicted_bytes_per_replica_per_step'] / 1e6:.2f} MB/replica/step; "
                  f"bare allreduce {res['bare_allreduce_ms']:.2f} ms",
                  flush=True)
    base = results[0]["images_per_sec"]
    for r in results:
        r["speedup"] = r["images_per_sec"] / base
    doc = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
           "backend": a.backend, "network": "tiny-alexnet", "gradient_bytes": grad,
           "steps_per_epoch": a.steps, "load": os.getloadavg(), "results": results,
           "date": time.strftime("%Y-%m-%d %H:%M")}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"load average {os.getloadavg()[0]:.1f}; wrote {a.out}")


if __name__ == "__main__":
    main()
