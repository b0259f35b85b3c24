"""Decode a dataset's images once, in shards, in parallel: for `prepare` and for folder stats.

A shard is a run of consecutive files of one split. Decoding a shard yields the images that
could be read (uint8, planar (n, 3, base, base)), their labels and source paths, the files
that couldn't be read and why, and the training statistics (ImageStats) of its images. When
the job names an output folder, the shard is written there atomically (netspec.atomic): first
the images, then a small sidecar; a shard whose sidecar exists is complete.
The CRC-32 and size of each image file are computed as it is written and kept in the sidecar,
so that the cache's manifest can list them and a damaged shard is found when it is opened.
"""
from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from netspec.atomic import atomic_write
from netspec.data.decode import UnreadableImage, decode_image
from netspec.data.processes import bound_workers, fork_context, ignore_sigint
from netspec.data.stats import ImageStats


@dataclass(frozen=True)
class ShardJob:
    root: str  # the data directory; paths are relative to it
    split: str
    index: int
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    base: int
    out_dir: str | None = None  # write <out_dir>/<split>/<index>.npy and .npz, or don't write

    def image_file(self) -> Path:
        return Path(self.out_dir, self.split, f"{self.index:05d}.npy")

    def sidecar_file(self) -> Path:
        return Path(self.out_dir, self.split, f"{self.index:05d}.npz")


@dataclass
class ShardResult:
    split: str
    index: int
    attempted: int
    labels: np.ndarray  # int64, of the images that were read
    paths: list[str]
    skipped: list[tuple[str, str]]  # (relative path, reason)
    stats: ImageStats
    crc32: int | None = None  # of the written .npy file (None: not written, or an old sidecar)
    nbytes: int | None = None


def decode_shard(job: ShardJob) -> ShardResult:
    """Decode the job's files. Writes the shard when job.out_dir is set."""
    writing = job.out_dir is not None
    images = np.empty((len(job.paths) if writing else 0, 3, job.base, job.base), dtype=np.uint8)
    stats = ImageStats(job.base)
    labels, paths, skipped = [], [], []
    for rel, label in zip(job.paths, job.labels):
        try:
            image = decode_image(Path(job.root, rel), job.base)
        except UnreadableImage as exc:
            skipped.append((rel, str(exc)))
            continue
        if writing:
            images[len(paths)] = image.transpose(2, 0, 1)
        stats.add(image)
        labels.append(label)
        paths.append(rel)
    result = ShardResult(
        split=job.split, index=job.index, attempted=len(job.paths),
        labels=np.asarray(labels, dtype=np.int64), paths=paths, skipped=skipped, stats=stats,
    )
    if writing:
        images = images[: len(paths)]
        counted = _Checksummed()
        job.image_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write(job.image_file(), lambda f: np.save(counted.wrap(f), images))
        result.crc32, result.nbytes = counted.crc32, counted.nbytes
        atomic_write(job.sidecar_file(), lambda f: np.savez(f, **_sidecar_arrays(result)))
    return result


def read_sidecar(job: ShardJob) -> ShardResult | None:
    """The result of a shard written earlier, or None if it isn't complete (or its sidecar
    is damaged: the shard is then decoded again)."""
    path = job.sidecar_file()
    if not path.exists() or not job.image_file().exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            return ShardResult(
                split=job.split, index=job.index, attempted=len(job.paths),
                labels=np.array(arrays["labels"], dtype=np.int64), paths=list(meta["paths"]),
                skipped=[tuple(s) for s in meta["skipped"]],
                stats=ImageStats.from_arrays(job.base, arrays),
                crc32=meta.get("crc32"), nbytes=meta.get("nbytes"),
            )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError,
            zipfile.BadZipFile):
        return None


def file_crc32(path: Path, chunk: int = 1 << 24) -> tuple[int, int]:
    """(CRC-32, size in bytes) of a file, read in 16 MiB chunks."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc, size = zlib.crc32(block, crc), size + len(block)
    return crc, size


class _Checksummed:
    """Counts the CRC-32 and size of what is written through `wrap(f)`."""

    def __init__(self):
        self.crc32 = self.nbytes = 0

    def wrap(self, f):
        outer = self

        class Writer:     # not a real file, so np.save writes through .write in chunks
            def write(self, data):
                outer.crc32 = zlib.crc32(data, outer.crc32)
                outer.nbytes += len(memoryview(data).cast("B"))
                return f.write(data)

        return Writer()


def _sidecar_arrays(result: ShardResult) -> dict[str, np.ndarray]:
    meta = {"paths": result.paths, "skipped": result.skipped, "crc32": result.crc32,
            "nbytes": result.nbytes}
    return {"labels": result.labels, "meta": np.array(json.dumps(meta)), **result.stats.to_arrays()}


def run_shard_jobs(
    jobs: list[ShardJob], *, workers: int, progress: bool, desc: str, done: int = 0,
) -> Iterator[ShardResult]:
    """Decode the jobs with `workers` processes (0: in this process); results in any order.

    `done` is the number of images already decoded before (for the progress bar of a resumed
    run). Abandoning the iterator (an exception, Ctrl-C) ends the workers.
    """
    total = done + sum(len(job.paths) for job in jobs)
    if workers <= 0 or len(jobs) <= 1:
        with _progress_bar(total, done, desc, progress) as bar:
            for job in jobs:
                result = decode_shard(job)
                bar.update(result.attempted)
                yield result
        return
    ctx = fork_context()
    # The pool is forked before the progress bar starts its monitor thread.
    with ctx.Pool(bound_workers(workers, len(jobs), "decoding"),
                  initializer=ignore_sigint) as pool:
        with _progress_bar(total, done, desc, progress) as bar:
            for result in pool.imap_unordered(decode_shard, jobs):
                bar.update(result.attempted)
                yield result


class ProgressBar(tqdm):
    """tqdm without its monitor thread: loader workers are forked later, and forking a process
    that runs threads is unsafe."""

    monitor_interval = 0


def _progress_bar(total: int, done: int, desc: str, enabled: bool):
    return ProgressBar(total=total, initial=done, desc=desc, unit="img",
                       disable=terminal_only(enabled), dynamic_ncols=True, leave=True)


def terminal_only(enabled: bool) -> bool | None:
    """tqdm's `disable`: None draws the bar only when stderr is a terminal, so a log file or
    CI gets no carriage-return frames (the command's summary line says what was done)."""
    return None if enabled else True
