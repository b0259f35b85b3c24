"""Loader throughput: images/s from JPEG files and from a prepared cache, per worker count.

    python benchmarks/loader.py [--images 512] [--copies 4] [--base 256] [--crop 224]
                                [--workers 0 1 2] [--epochs 2]

Generates synthetic JPEGs (base×base, smooth shapes plus noise, quality 90) in a temporary
folder, each linked --copies times so that an epoch is long enough to reach a steady state,
prepares a cache from them, then times training epochs (random crop, flip and PCA colour
shift, batch 128) with an idle consumer.

Columns: "steady state" counts from each epoch's first batch to its end; "whole epochs"
includes each epoch's start (forking workers, first touch of their shared memory, the first
batch; "1st batch" is that wait). img/CPU-s is images per second of CPU time used by the
loader's processes (parent + workers): the rate per core, comparable across worker counts
and much less affected by other load on the machine than img/s.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netspec.data import open_dataset, prepare_dataset  # noqa: E402


def synthetic_image(rng: np.random.Generator, size: int) -> Image.Image:
    """A photo-like test image: a colour gradient, a few shapes, sensor-like noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    a, b, c = rng.uniform(0, 255, size=(3, 3))
    pixels = a + (b - a) * x[..., None] + (c - a) * y[..., None] / 2
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.uniform(0, size, 2)
        r = rng.uniform(size / 20, size / 4)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
        else:
            draw.rectangle((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 8, size=(size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_images(root: Path, count: int, size: int, copies: int, classes: int = 8) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "train" / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        original = folder / f"{i:05d}.jpg"
        synthetic_image(rng, size).save(original, quality=90)
        for k in range(1, copies):
            os.symlink(original.name, folder / f"{i:05d}-{k}.jpg")


def time_loader(dataset, *, batch_size: int, crop: int, workers: int, epochs: int) -> dict:
    """Throughput over `epochs` whole epochs and in their steady state (after the first batch).

    CPU time is that of this process and its workers; in the steady state the workers' share
    is read from /proc while they run.
    """
    images = steady_images = 0
    wall = steady_wall = first_wait = steady_cpu = 0.0
    cpu0 = _cpu_seconds()
    for epoch in range(epochs):
        start = time.perf_counter()
        first = None
        with dataset.loader("train", batch_size=batch_size, crop=crop, pca_sigma=0.1,
                            seed=0, epoch=epoch, workers=workers) as loader:
            for x, _ in loader:
                images += len(x)
                if first is None:
                    first, cpu_first = time.perf_counter(), _running_cpu(loader.worker_pids)
                else:
                    steady_images += len(x)
                    cpu_last = _running_cpu(loader.worker_pids)
            end = time.perf_counter()
        wall += end - start
        steady_wall += end - first
        first_wait += first - start
        steady_cpu += cpu_last - cpu_first
    return {"steady": steady_images / steady_wall, "epoch": images / wall,
            "steady_per_cpu": steady_images / steady_cpu,
            "epoch_per_cpu": images / (_cpu_seconds() - cpu0), "first": first_wait / epochs}


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _running_cpu(pids) -> float:
    """CPU time of this process and of the running workers `pids`."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="distinct JPEGs")
    parser.add_argument("--copies", type=int, default=4, help="links to each JPEG")
    parser.add_argument("--base", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(message)s")  # no "no val/" warning

    with tempfile.TemporaryDirectory(prefix="netspec-bench-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("NETSPEC_CACHE_DIR", str(tmp / "user-cache"))
        t = time.perf_counter()
        write_images(tmp / "jpeg", args.images, args.base, args.copies)
        print(f"wrote {args.images} synthetic {args.base}×{args.base} JPEGs (each linked "
              f"{args.copies} times) in {time.perf_counter() - t:.1f} s")
        folder = open_dataset(tmp / "jpeg", base=args.base, workers=os.cpu_count() or 1)
        t = time.perf_counter()
        _ = folder.mean  # the first scan decodes every image once
        print(f"scanned the folder (mean, PCA) in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        cache = prepare_dataset(tmp / "jpeg", tmp / "cache", base=args.base,
                                workers=os.cpu_count() or 1, progress=False)
        print(f"prepared the cache in {time.perf_counter() - t:.1f} s")
        cores = os.cpu_count()
        print(f"\nbatch {args.batch_size}, crop {args.crop} from {args.base}, random crop + flip "
              f"+ PCA, {cores} CPU cores\n")
        print(f"{'':15} {'---- steady state ----':>24} {'---- whole epochs ----':>24}")
        print(f"{'source':<7} {'workers':>7} {'img/s':>11} {'img/CPU-s':>12} {'img/s':>11} "
              f"{'img/CPU-s':>12} {'1st batch':>10}")
        for name, dataset in (("jpeg", folder), ("cache", cache)):
            for workers in args.workers:
                r = time_loader(dataset, batch_size=args.batch_size, crop=args.crop,
                                workers=workers, epochs=args.epochs)
                print(f"{name:<7} {workers:>7} {r['steady']:>11.0f} {r['steady_per_cpu']:>12.0f} "
                      f"{r['epoch']:>11.0f} {r['epoch_per_cpu']:>12.0f} {r['first']:>9.2f}s",
                      flush=True)
        load = os.getloadavg()[0]
        print(f"\nload average at the end: {load:.1f} on {cores} cores "
              f"(other processes compete for the CPU when it exceeds the loader's own)")


if __name__ == "__main__":
    main()
