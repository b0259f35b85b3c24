"""Dataset: one API over a folder of images or a prepared cache (open.open_dataset picks one
for a `--data` source, the demo set included).

A folder is listed at once (classes, files); its images are decoded once, the first time
anything needs them (the mean image, the PCA, which files can't be read), in `workers`
processes. That scan's result is cached under the user cache folder (netspec/cachedir.py),
keyed by the folder, the base size and every file's name, size and modification time, so a
second open is instant and a changed file means a new scan.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from netspec.atomic import atomic_write
from netspec.cachedir import user_cache_dir
from netspec.data.cache import read_cache, read_manifest
from netspec.data.folder import FolderListing, list_image_folder
from netspec.data.loader import Loader
from netspec.data.shards import ShardJob, run_shard_jobs
from netspec.data.sources import FolderSplit
from netspec.data.stats import PCA, ImageStats, statistics_problem
from netspec.data.walk import TreeReport, printable
from netspec.errors import DataError

log = logging.getLogger("netspec.data")

DEFAULT_BASE = 256  # the paper's 256×256
DEMO = "demo"

_SCAN_CHUNK = 256  # images per scan task
_STATS_VERSION = 1


def resolve_data_dir(source, progress: bool = True) -> Path:
    """The folder that `--data` names: a path, or "demo" (generated on first use)."""
    if isinstance(source, str) and source == DEMO:
        from netspec.data.demo import ensure_demo

        return ensure_demo(progress=progress)
    return Path(source).expanduser()


class Dataset:
    """Labelled images of fixed size base×base, in splits "train" and (usually) "val".

    classes: class names, index = label. mean: float32 (base, base, 3) mean training image,
    0..255. pca: the training pixels' colour PCA (stats.PCA, pixel scale 0..1). skipped:
    (path, reason) of each file that couldn't be read and was left out.
    """

    def __init__(self, root: Path, base: int, classes, kind: str, class_names=None,
                 layout: str = "class folders", labels_source: str = "val/ class folder names",
                 tree_skipped=()):
        self.root = Path(root)
        self.base = base
        self.classes: tuple[str, ...] = tuple(classes)
        self.kind = kind  # "folder" or "cache"
        # "tench" for n01440764 where a synset mapping exists; else the folder name
        self.class_names: tuple[str, ...] = tuple(class_names or classes)
        self.layout = layout  # layouts.py: "class folders", "ILSVRC2012", "Kaggle CLS-LOC"
        self.labels_source = labels_source  # where val's labels came from
        # (path, kind) of each directory entry the tree walk skipped (walk.py)
        self.tree_skipped: list[tuple[str, str]] = [tuple(s) for s in tree_skipped]
        self.channels = 3  # 1: batches are converted to grey (ITU-R 601 luma)
        self._splits: dict | None = None
        self._mean: np.ndarray | None = None
        self._pca: PCA | None = None
        self._skipped: list[tuple[str, str]] = []
        self._listing: FolderListing | None = None
        self._scan_workers, self._scan_progress = 0, False

    @classmethod
    def from_folder(cls, root, base: int = DEFAULT_BASE, *, workers: int = 0,
                    progress: bool = True) -> Dataset:
        listing = list_image_folder(root)
        dataset = cls(listing.root, base, listing.classes, "folder", listing.class_names,
                      listing.layout, listing.labels_source, listing.report.skipped)
        dataset._listing = listing
        dataset._scan_workers, dataset._scan_progress = workers, progress
        return dataset

    @classmethod
    def from_cache(cls, root, base: int | None = None, *, warn_skipped: bool = True) -> Dataset:
        contents = read_cache(root)
        if base is not None and base != contents.base:
            raise DataError(f"prepared cache '{root}' holds {contents.base}×{contents.base} images, "
                            f"not base {base}; prepare it again with --base {base}")
        dataset = cls(contents.root, contents.base, contents.classes, "cache",
                      contents.class_names, contents.layout, contents.labels_source,
                      contents.tree_skipped)
        dataset._splits = contents.splits
        dataset._mean, dataset._pca = contents.mean, contents.pca
        dataset._skipped = contents.skipped
        if warn_skipped and contents.skipped:
            log.warning(describe_skipped(contents.source or str(root), contents.skipped))
        if warn_skipped and contents.tree_skipped:
            log.warning(TreeReport(dataset.tree_skipped).summary(contents.source or str(root)))
        return dataset

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, base={self.base}, classes={len(self.classes)}, kind={self.kind})"

    # -- what the data is -------------------------------------------------------------------

    @property
    def splits(self) -> tuple[str, ...]:
        if self._listing is not None:
            return tuple(self._listing.splits)
        return tuple(self._loaded())

    @property
    def mean(self) -> np.ndarray:
        self._loaded()
        return self._mean

    @property
    def pca(self) -> PCA:
        self._loaded()
        return self._pca

    @property
    def skipped(self) -> list[tuple[str, str]]:
        self._loaded()
        return list(self._skipped)

    def size(self, split: str) -> int:
        return len(self._split(split))

    def fingerprint(self) -> dict[str, dict]:
        """{split: {"files": count, "sha256": hex}}: what a run records of its data, so that
        `--resume` notices images added, removed or rewritten since (train/loop.py). A
        folder's: its files' relative paths, sizes and modification times (one stat each, no
        decoding); a prepared cache's: its manifest's shards and checksums."""
        out = {}
        if self._listing is not None:
            for name, split in self._listing.splits.items():
                digest = hashlib.sha256()
                for rel in sorted(split.paths):
                    try:
                        st = os.stat(self._listing.root / rel)
                        size, mtime = st.st_size, st.st_mtime_ns
                    except OSError:
                        size = mtime = -1
                    digest.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8",
                                                                      "surrogateescape"))
                out[name] = {"files": len(split.paths), "sha256": digest.hexdigest()}
            return out
        for name, info in read_manifest(self.root)["splits"].items():
            text = json.dumps([info["shards"], info.get("checksums")], sort_keys=True)
            out[name] = {"files": sum(count for _, count in info["shards"]),
                         "sha256": hashlib.sha256(text.encode()).hexdigest()}
        return out

    def labels(self, split: str) -> np.ndarray:
        """int64 label of each image of the split, in index order."""
        return self._split(split).labels.copy()

    def image(self, split: str, index: int) -> np.ndarray:
        """Image `index` of the split as uint8 (base, base, 3) RGB: rescaled and centre-cropped,
        before mean subtraction and augmentation. For showing predictions and neighbours."""
        return self._split(split).image(index)

    def path(self, split: str, index: int) -> Path | None:
        """The file image `index` was decoded from (None if a cache didn't record it)."""
        return self._split(split).path(index)

    # -- batches ----------------------------------------------------------------------------

    def loader(self, split: str = "train", batch_size: int = 128, crop: int = 224,
               train: bool | None = None, flip: bool = True, pca_sigma: float = 0.1,
               seed: int = 0, workers: int = 0, epoch: int = 0, start_batch: int = 0, *,
               shuffle: bool | None = None, drop_last: bool | None = None, prefetch: int = 1,
               copy: bool = False, to_device=None,
               shard: tuple[int, int] | None = None, device_input: bool = False) -> Loader:
        """One epoch of (x, y) batches; see loader.py for the pipeline and its guarantees.

        train (default: split == "train"): random crop×crop crops, flips if `flip`, PCA colour
        shifts with αᵢ ~ N(0, pca_sigma), shuffled, last partial batch dropped. Otherwise the
        centre crop only, in index order, last partial batch kept.
        workers: transform processes (0: in this process). prefetch: finished batches that may
        wait beyond the one the loop holds (with workers). copy: hand out copies instead of
        views into shared memory. to_device(x, y): called one batch ahead (the copy stage);
        the loop then receives what it returned. shard (r, K): only replica r's piece of each
        batch, images len·r//K .. len·(r+1)//K − 1, with the whole batch's random draws (data
        parallelism; netspec/train/data_parallel.py). device_input (training, RGB): x is a
        `U8Batch` of uint8 crops that a device backend finishes on the device (loader.py).
        """
        train = (split == "train") if train is None else train
        return Loader(self._split(split), self.mean, self.pca if train else None,
                      mode="train" if train else "center", batch_size=batch_size, crop=crop,
                      flip=flip, pca_sigma=pca_sigma, seed=seed, epoch=epoch,
                      start_batch=start_batch, shuffle=shuffle, drop_last=drop_last,
                      workers=workers, prefetch=prefetch, copy=copy, to_device=to_device,
                      channels=self.channels, shard=shard, device_input=device_input)

    def ten_crop_batches(self, split: str = "val", batch_size: int = 16, crop: int = 224,
                         workers: int = 0, start_batch: int = 0, *, prefetch: int = 1,
                         copy: bool = False, to_device=None) -> Loader:
        """Evaluation batches of 10 views per image: x (N, 10, 3, crop, crop), y (N,).

        Views in augment.TEN_CROP_ORDER. In index order; the last partial batch is kept.
        Average the softmax over axis 1 to score each image as §4.1 does.
        """
        return Loader(self._split(split), self.mean, None, mode="ten", batch_size=batch_size,
                      crop=crop, seed=0, start_batch=start_batch, shuffle=False,
                      drop_last=False, workers=workers, prefetch=prefetch, copy=copy,
                      to_device=to_device, channels=self.channels)

    # -- loading ----------------------------------------------------------------------------

    def _split(self, name: str):
        splits = self._loaded()
        if name not in splits:
            have = ", ".join(splits) or "none"
            raise DataError(f"'{self.root}' has no {name!r} split (it has: {have})")
        return splits[name]

    def _loaded(self) -> dict:
        if self._splits is None:
            self._scan_folder()
        return self._splits

    def _scan_folder(self) -> None:
        listing = self._listing
        stats_file = user_cache_dir() / "stats" / f"{_fingerprint(listing, self.base)}.npz"
        found = _read_folder_stats(stats_file, self.base)
        if found is None:
            found = _compute_folder_stats(listing, self.base, self._scan_workers,
                                          self._scan_progress)
            _write_folder_stats(stats_file, *found)
        self._mean, self._pca, self._skipped = found
        if self._skipped:
            log.warning(describe_skipped(str(self.root), self._skipped))
        bad = {path for path, _ in self._skipped}
        self._splits = {}
        for name, split in listing.splits.items():
            keep = [i for i, p in enumerate(split.paths) if p not in bad]
            self._splits[name] = FolderSplit(listing.root, [split.paths[i] for i in keep],
                                             [split.labels[i] for i in keep], self.base)


def describe_skipped(source: str, skipped) -> str:
    """One line: how many files were skipped, and the first few with their reasons."""
    first = "; ".join(f"{printable(path)} ({reason})" for path, reason in list(skipped)[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return f"skipped {len(skipped)} unreadable image file(s) in '{source}': {first}{more}"


def _fingerprint(listing: FolderListing, base: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([_STATS_VERSION, str(listing.root.resolve()), base,
                              list(listing.classes)]).encode())
    for name, split in listing.splits.items():
        for rel in split.paths:
            try:
                st = os.stat(listing.root / rel)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:  # gone since the walk: decoding it will skip and count it
                size, mtime = -1, -1
            # surrogateescape: a name that is not UTF-8 hashes as its bytes
            digest.update(f"\n{name}/{rel}\0{size}\0{mtime}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


def _compute_folder_stats(listing: FolderListing, base: int, workers: int, progress: bool):
    root = str(listing.root)
    jobs = [
        ShardJob(root=root, split=name, index=i // _SCAN_CHUNK,
                 paths=split.paths[i:i + _SCAN_CHUNK], labels=split.labels[i:i + _SCAN_CHUNK],
                 base=base)
        for name, split in listing.splits.items()
        for i in range(0, len(split.paths), _SCAN_CHUNK)
    ]
    stats, skipped = ImageStats(base), []
    results = run_shard_jobs(jobs, workers=workers, progress=progress, desc=f"scan {listing.root.name}")
    for result in sorted(results, key=lambda r: (r.split, r.index)):
        skipped.extend(result.skipped)
        if result.split == "train":
            stats.merge(result.stats)
    if stats.count == 0:
        raise DataError(f"none of the training images in '{listing.root}' could be read")
    return stats.mean(), stats.pca(), skipped


def _read_folder_stats(path: Path, base: int):
    """(mean, pca, skipped) cached for a folder, or None when absent or damaged (a warning
    says what was wrong; the caller computes them again and replaces the file)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            pca = PCA(eigenvalues=np.array(arrays["eigenvalues"]),
                      eigenvectors=np.array(arrays["eigenvectors"]))
            mean = np.array(arrays["mean"])
            skipped = [tuple(s) for s in meta["skipped"]]
        problem = statistics_problem(mean, pca.eigenvalues, pca.eigenvectors, base)
        if problem is None and not all(len(s) == 2 and all(isinstance(x, str) for x in s)
                                       for s in skipped):
            problem = "its list of skipped files is not (path, reason) pairs"
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        problem = f"it can't be read ({exc})"
    if problem is None:
        return mean.astype(np.float32), pca, skipped
    log.warning("the cached dataset statistics '%s' are damaged (%s); computing them again",
                path, problem)
    return None


def _write_folder_stats(path: Path, mean, pca: PCA, skipped) -> None:
    arrays = {"mean": mean, "eigenvalues": pca.eigenvalues, "eigenvectors": pca.eigenvectors,
              "meta": np.array(json.dumps({"skipped": [list(s) for s in skipped]}))}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as exc:
        log.warning("can't cache the dataset statistics in '%s' (%s); they will be computed "
                    "again next time", path.parent, exc)
