"""prepare_dataset: decode every image once into a cache that the loader memory-maps.

Runs in `workers` processes with a progress bar. Resumable: the plan (source, base, files,
shard size) is written first; each shard is written atomically and skipped on a rerun once
complete; the manifest that marks the cache complete is written last. Ctrl-C loses at most
the shards in progress.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from netspec.atomic import atomic_write
from netspec.data.cache import (
    CACHE_FORMAT,
    CACHE_VERSION,
    MANIFEST_NAME,
    PLAN_NAME,
    is_prepared_cache,
    read_manifest,
    read_plan,
    verify_shards,
)
from netspec.data.dataset import DEFAULT_BASE, DEMO, Dataset, describe_skipped, resolve_data_dir
from netspec.data.demo import DEMO_BASE
from netspec.data.folder import list_image_folder
from netspec.data.shards import ShardJob, file_crc32, read_sidecar, run_shard_jobs
from netspec.data.stats import ImageStats
from netspec.errors import DataError
from netspec.ir.memory import check_bytes

log = logging.getLogger("netspec.data")

_SHARD_BYTES = 1 << 30  # the largest shard: ImageNet at base 256 is about 240 shards
_SHARDS_PER_WORKER = 4  # at least this many shards per worker, for parallelism and resumption


def prepare_dataset(data_dir, out_dir, base: int | None = 256, workers: int | None = None,
                    progress: bool = True, desc: str | None = None):
    """Decode DIR/train and DIR/val (or "demo") at `base` into the cache folder `out_dir`.

    base: None means the default of open_dataset (256; demo.DEMO_BASE for "demo").
    workers: processes that decode (0: in this process; None: one per CPU core).
    desc: the progress bar's label (default "prepare <out_dir's name>").
    Returns the prepared Dataset.
    """
    if base is None:
        base = DEMO_BASE if isinstance(data_dir, str) and data_dir == DEMO else DEFAULT_BASE
    if isinstance(base, bool) or not isinstance(base, int) or base < 1:
        raise DataError(f"base must be a positive integer, not {base!r}")
    # one decoded image (uint8) and the running mean image (at least float32) at base x base
    check_bytes(base * base * 3 * 5, f"preparing images at base {base:,}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 0:
        raise DataError(f"workers must be >= 0, not {workers}")
    source = resolve_data_dir(data_dir, progress)
    out = Path(out_dir).expanduser()
    _check_out_dir(source, out)
    listing = list_image_folder(source)

    plan = _make_plan(listing, base, workers)
    plan = _start_or_resume(out, plan)
    if is_prepared_cache(out):
        log.info("'%s' is already prepared", out)
        return Dataset.from_cache(out, base, warn_skipped=True)

    jobs = _make_jobs(str(listing.root.resolve()), plan, str(out))
    _remove_stale_temporaries(out, plan)
    results, pending = [], []
    for job in jobs:
        finished = read_sidecar(job)
        (pending if finished is None else results).append(finished or job)
    done = sum(r.attempted for r in results)
    results.extend(run_shard_jobs(pending, workers=workers, progress=progress,
                                  desc=desc or f"prepare {out.name}", done=done))
    _write_summary(out, plan, sorted(results, key=lambda r: (r.split, r.index)))
    return Dataset.from_cache(out, base, warn_skipped=False)  # _write_summary warned


def _check_out_dir(source: Path, out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"cache path '{out}' exists and is not a directory")
    src, dst = source.resolve(), out.resolve()
    if dst == src or any(dst.is_relative_to(src / split) for split in ("train", "val")):
        raise DataError(f"the cache '{out}' must not be inside the data it is prepared from "
                        f"('{source}'); choose another --out")


def _make_plan(listing, base: int, workers: int) -> dict:
    count = sum(len(s.paths) for s in listing.splits.values())
    by_bytes = max(1, _SHARD_BYTES // (3 * base * base))
    by_workers = -(-count // (max(1, workers) * _SHARDS_PER_WORKER))
    return {
        "format": CACHE_FORMAT + "-plan", "version": CACHE_VERSION,
        "source": str(listing.root.resolve()), "base": base, "classes": list(listing.classes),
        "shard_size": max(1, min(by_bytes, by_workers)),
        # where the labels came from (layouts.py), the human class names, and what the
        # tree walk skipped (walk.py): recorded in the manifest
        "layout": listing.layout, "labels_source": listing.labels_source,
        "class_names": list(listing.class_names), "tree_skipped": listing.report.skipped,
        "splits": {name: {"paths": list(s.paths), "labels": list(s.labels)}
                   for name, s in listing.splits.items()},
    }


def _start_or_resume(out: Path, plan: dict) -> dict:
    """Write the plan into a new cache folder, or check that it matches the one there."""
    plan_path = out / PLAN_NAME
    if plan_path.is_file():
        stored = read_plan(out)
        keys = ("format", "version", "source", "base", "classes", "splits")
        changed = [k for k in keys if stored.get(k) != plan[k]]
        if changed:
            what = {"source": "data directory", "base": "base size", "classes": "classes",
                    "splits": "image files"}.get(changed[0], "format")
            raise DataError(
                f"'{out}' holds a cache of a different {what} ({changed[0]}: "
                f"{_short(stored.get(changed[0]))} vs {_short(plan[changed[0]])}); remove it "
                f"or choose another --out"
            )
        return stored
    if out.is_dir() and any(out.iterdir()):
        raise DataError(f"'{out}' is not empty and is not a netspec cache; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(plan_path, lambda f: f.write(json.dumps(plan).encode()))
    return plan


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def _make_jobs(root: str, plan: dict, out: str) -> list[ShardJob]:
    size, jobs = plan["shard_size"], []
    for split, files in plan["splits"].items():
        paths, labels = files["paths"], files["labels"]
        for index, start in enumerate(range(0, len(paths), size)):
            jobs.append(ShardJob(root=root, split=split, index=index,
                                 paths=tuple(paths[start:start + size]),
                                 labels=tuple(labels[start:start + size]),
                                 base=plan["base"], out_dir=out))
    return jobs


def _remove_stale_temporaries(out: Path, plan: dict) -> None:
    for split in plan["splits"]:
        folder = out / split
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _write_summary(out: Path, plan: dict, results) -> None:
    base = plan["base"]
    train_stats = ImageStats(base)
    splits, skipped = {}, []
    for split in plan["splits"]:
        mine = [r for r in results if r.split == split]
        labels = np.concatenate([r.labels for r in mine]) if mine else np.zeros(0, np.int64)
        files = [p for r in mine for p in r.paths]
        skipped.extend((f"{p}", reason) for r in mine for p, reason in r.skipped)
        if split == "train":
            for r in mine:
                train_stats.merge(r.stats)
        atomic_write(out / f"{split}-labels.npy", lambda f, a=labels: np.save(f, a))
        listing = "".join(p + "\n" for p in files)
        atomic_write(out / f"{split}-files.txt",
                     lambda f, t=listing: f.write(t.encode("utf-8", "surrogateescape")))
        splits[split] = {
            "count": int(len(labels)),
            "shards": [[f"{split}/{r.index:05d}.npy", len(r.paths)] for r in mine],
            "labels": f"{split}-labels.npy", "files": f"{split}-files.txt",
            "checksums": {f"{split}/{r.index:05d}.npy": _checksum(out, r) for r in mine},
        }
    if train_stats.count == 0:
        raise DataError(f"none of the training images in '{plan['source']}' could be read")
    _warn_skipped(plan["source"], skipped)
    atomic_write(out / "mean.npy", lambda f: np.save(f, train_stats.mean()))
    atomic_write(out / "classes.json", lambda f: f.write(json.dumps(plan["classes"]).encode()))
    manifest = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "base": base,
        "source": plan["source"],
        "classes": plan["classes"], "splits": splits, "mean": "mean.npy",
        "pca": train_stats.pca().to_dict(), "skipped": [list(s) for s in skipped],
        "layout": plan.get("layout"), "labels_source": plan.get("labels_source"),
        "class_names": plan.get("class_names"),
        "tree_skipped": [list(s) for s in plan.get("tree_skipped", [])],
    }
    atomic_write(out / MANIFEST_NAME, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    read_manifest(out)  # what was written can be read back
    bad = verify_shards(out, manifest)  # reads every shard once, and records it verified
    if bad:
        name, why = next(iter(bad.items()))
        raise DataError(f"the prepared shard '{out / name}' was damaged while preparing ({why}); "
                        f"remove it and its .npz and run prepare again")


def _checksum(out: Path, result) -> dict:
    """The CRC-32 and size of a shard's image file: as written, or read now for a shard from
    an earlier run whose sidecar didn't record them."""
    if result.crc32 is None:
        result.crc32, result.nbytes = file_crc32(out / result.split / f"{result.index:05d}.npy")
    return {"crc32": result.crc32, "bytes": result.nbytes}


def _warn_skipped(source: str, skipped) -> None:
    if skipped:
        log.warning(describe_skipped(source, skipped))


def ensure_demo_cache(base: int, progress: bool = True) -> Path:
    """The demo dataset (demo.ensure_demo) prepared at `base`, made on first use next to it
    (<user cache>/demo-v1-prepared-<base>), as a prepared ImageNet is: the loader then reads
    decoded pixels instead of decoding every JPEG in every epoch (0.4 ms an image, a fifth
    of the Quickstart's time on a 2-core VM). The same pixels to the bit (cache.py).

    Prepared in a temporary folder renamed into place when complete, as the demo itself is, so
    a killed or concurrent run leaves nothing half-made behind. DataError if it can't be
    written."""
    from netspec.data.demo import build_in_place, ensure_demo

    folder = ensure_demo(progress=progress)
    final = folder.parent / f"{folder.name}-prepared-{base}"
    return build_in_place(
        final, lambda tmp: prepare_dataset(folder, tmp, base=base, progress=progress,
                                           desc=f"prepare {final.name}"),
        is_prepared_cache, "the prepared demo dataset")
