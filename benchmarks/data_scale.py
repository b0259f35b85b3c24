"""Scale facts for ImageNet's data path: decode-and-prepare throughput per core, the prepared
cache's bytes per image, and the projected hours and disk for ILSVRC2012's 1,281,167 training
images (plus 50,000 val).

    python benchmarks/data_scale.py [--images 300] [--base 256] [--no-save]

No download: the JPEGs are made with Pillow to ImageNet's size distribution. ILSVRC2012's
training images average about 400x350 pixels (most are Flickr's 500x375 or 375x500, a tail
are small, and a few are over 2,000 pixels on a side) and about 110 KB. Here: 58% near
500x375 (a quarter of them portrait), 40% smaller (lognormal, 120-400 px), 2% large
(1,000-3,000 px),
with smooth colour fields plus per-pixel grain, at JPEG quality 90 (files come out somewhat
smaller than ImageNet's: see mean_file_kb).

Time is measured as CPU seconds of this process (time.process_time), so the figure is per
core and is not inflated by other users' load on a shared machine: the machine this ran on
is shared by several engineers. Wall-clock seconds and the load average are recorded too.
Throughput on N cores is about N times the per-core figure, since prepare decodes in one
process per core with no shared state.

Writes benchmarks/results/<date>-<machine>-data-scale.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netspec.data.decode import decode_image  # noqa: E402
from netspec.data.prepare import prepare_dataset  # noqa: E402

ILSVRC_TRAIN, ILSVRC_VAL = 1_281_167, 50_000


def image_size(rng: np.random.Generator) -> tuple[int, int]:
    u = rng.random()
    if u < 0.58:
        w, h = 500, int(rng.integers(333, 376))
    elif u < 0.98:
        w = int(np.clip(rng.lognormal(np.log(240), 0.3), 120, 400))
        h = int(w * rng.uniform(0.6, 1.0))
    else:
        w = int(rng.integers(1000, 3001))
        h = int(w * rng.uniform(0.6, 0.8))
    return (w, h) if rng.random() < 0.75 else (h, w)


def photo_like(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Smooth colour fields (a few upsampled random grids) plus fine grain."""
    img = np.zeros((h, w, 3), np.float32)
    for cells, weight in ((4, 0.6), (16, 0.3), (64, 0.15)):
        grid = rng.random((cells, cells, 3)).astype(np.float32)
        up = np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
                        np.float32)
        img += weight * up
    img += rng.normal(0, 30, size=(h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(img / 1.05, 0, 255).astype(np.uint8))


def make_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        w, h = image_size(rng)
        path = folder / "train" / f"n{i % 10:08d}" / f"{i:05d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo_like(rng, w, h).save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--base", type=int, default=256)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["NETSPEC_CACHE_DIR"] = str(tmp / "user-cache")
        paths = make_jpegs(tmp / "data", args.images)
        sizes = [Image.open(p).size for p in paths]
        file_bytes = [p.stat().st_size for p in paths]
        load_before = os.getloadavg()

        # decode only: the paper's rescale-and-crop (§2) of every file, one process
        c0, w0 = time.process_time(), time.perf_counter()
        for p in paths:
            decode_image(p, args.base)
        decode_cpu, decode_wall = time.process_time() - c0, time.perf_counter() - w0

        # the whole of `netspec prepare` in this process (-j 0): walk, decode, statistics,
        # shards written and fsynced, manifest
        c0, w0 = time.process_time(), time.perf_counter()
        prepare_dataset(tmp / "data", tmp / "cache", base=args.base, workers=0, progress=False)
        prep_cpu, prep_wall = time.process_time() - c0, time.perf_counter() - w0
        load_after = os.getloadavg()
        cache = tmp / "cache"
        files = [f for f in cache.rglob("*") if f.is_file()]
        cache_bytes = sum(f.stat().st_size for f in files)
        shard_files = [f for f in files if f.suffix == ".npy" and f.parent.name in ("train", "val")]
        shard_bytes = sum(f.stat().st_size for f in shard_files)
        list_bytes = sum(f.stat().st_size for f in files if f.name.endswith(("-labels.npy", "-files.txt")))
        sidecar_bytes = sum(f.stat().st_size for f in files if f.suffix == ".npz")
        fixed_bytes = cache_bytes - shard_bytes - list_bytes - sidecar_bytes  # mean, manifest, plan

    n = len(paths)
    # Per image: its pixels in a shard, its label and file name. Per shard: the .npy header and
    # the sidecar (labels, names, and the shard's statistics: base*base*3 sums, fixed size).
    # ImageNet's shards hold 1 GiB (prepare.py), so the per-shard part is spread over
    # 2**30 // (3*base*base) images there, not over the few shards of this small run.
    per_image_here = cache_bytes / n
    npy_header = shard_bytes - n * 3 * args.base * args.base
    per_shard = (sidecar_bytes + npy_header) / len(shard_files)
    shard_images = (1 << 30) // (3 * args.base * args.base)
    per_image = (3 * args.base * args.base + list_bytes / n + per_shard / shard_images)
    rate = n / prep_cpu
    cores = os.cpu_count() or 1
    total = ILSVRC_TRAIN + ILSVRC_VAL
    result = {
        "date": datetime.date.today().isoformat(), "machine": socket.gethostname(),
        "cpu": platform.processor() or platform.machine(), "cores": cores,
        "python": platform.python_version(), "pillow": Image.__version__,
        "images": n, "base": args.base,
        "mean_size_wh": [round(float(np.mean([s[0] for s in sizes]))),
                         round(float(np.mean([s[1] for s in sizes])))],
        "mean_pixels": round(float(np.mean([s[0] * s[1] for s in sizes]))),
        "largest_side": max(max(s) for s in sizes),
        "mean_file_kb": round(float(np.mean(file_bytes)) / 1000, 1),
        "decode_images_per_cpu_s": round(n / decode_cpu, 1),
        "prepare_images_per_cpu_s": round(rate, 1),
        "decode_wall_s": round(decode_wall, 2), "prepare_wall_s": round(prep_wall, 2),
        "decode_cpu_s": round(decode_cpu, 2), "prepare_cpu_s": round(prep_cpu, 2),
        "cache_bytes_per_image": round(per_image),
        "cache_bytes_per_image_this_small_run": round(per_image_here),
        "cache_bytes_per_shard_fixed": round(per_shard),
        "cache_bytes_fixed": fixed_bytes,
        "pixel_bytes_per_image": 3 * args.base * args.base,
        "projection_ilsvrc2012": {
            "images": total,
            "cpu_hours": round(total / rate / 3600, 2),
            f"hours_on_{cores}_cores": round(total / rate / cores / 3600, 2),
            "cache_gb": round((per_image * total + fixed_bytes) / 1e9, 1),
            "source_gb_at_mean_file_size": round(float(np.mean(file_bytes)) * total / 1e9, 1),
        },
        "load_avg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    print(json.dumps(result, indent=1))
    if not args.no_save:
        out = ROOT / "benchmarks" / "results" / f"{result['date']}-{result['machine']}-data-scale.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
