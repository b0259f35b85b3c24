"""The prepared cache: what `netspec prepare` writes and how it is read back.

    CACHE/netspec-cache.json      the manifest; its presence marks a complete cache (written last)
    CACHE/plan.json               what is being prepared (source, base, files); for resuming
    CACHE/classes.json            the class names, label order
    (the manifest also records the layout, where val's labels came from, the human class
    names, and what the tree walk skipped, by kind)
    CACHE/<split>/00000.npy ...   uint8 (n, 3, base, base) shards, memory-mapped when read
    CACHE/<split>/00000.npz ...   each shard's labels, files, skipped files and statistics
    CACHE/<split>-labels.npy      int64 labels of the whole split
    CACHE/<split>-files.txt       the source file of each image, relative to the source folder
    CACHE/mean.npy                float32 (base, base, 3) mean training image, 0..255
    (the PCA is in the manifest, pixel scale 0..1; see stats.py)

Images are stored planar (channels first) so that crops read contiguous rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netspec.data.sources import CacheSplit
from netspec.data.stats import PCA
from netspec.errors import DataError

MANIFEST_NAME = "netspec-cache.json"
PLAN_NAME = "plan.json"
CACHE_FORMAT = "netspec-cache"
CACHE_VERSION = 1


def is_prepared_cache(path) -> bool:
    return (Path(path) / MANIFEST_NAME).is_file()


@dataclass
class CacheContents:
    root: Path
    base: int
    classes: tuple[str, ...]
    splits: dict[str, CacheSplit]
    mean: np.ndarray
    pca: PCA
    skipped: list[tuple[str, str]]
    source: str | None
    class_names: tuple[str, ...] = ()
    layout: str = "class folders"
    labels_source: str = "val/ class folder names"
    tree_skipped: tuple = ()


def read_cache(root) -> CacheContents:
    root = Path(root)
    manifest = read_manifest(root)
    base = int(manifest["base"])
    splits = {}
    for name, info in manifest["splits"].items():
        labels = _load_array(root / info["labels"])
        splits[name] = CacheSplit(root, [tuple(s) for s in info["shards"]], labels, base,
                                  source_root=manifest.get("source"), files_list=info.get("files"))
    mean = _load_array(root / manifest["mean"])
    if mean.shape != (base, base, 3):
        raise DataError(f"prepared cache '{root}': mean image has shape {mean.shape}, "
                        f"expected ({base}, {base}, 3)")
    return CacheContents(
        root=root, base=base, classes=tuple(manifest["classes"]), splits=splits,
        mean=mean.astype(np.float32), pca=PCA.from_dict(manifest["pca"]),
        skipped=[tuple(s) for s in manifest.get("skipped", [])], source=manifest.get("source"),
        class_names=tuple(manifest.get("class_names") or manifest["classes"]),
        layout=manifest.get("layout") or "class folders",
        labels_source=manifest.get("labels_source") or "val/ class folder names",
        tree_skipped=tuple(tuple(s) for s in manifest.get("tree_skipped", [])),
    )


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"can't read the prepared cache manifest '{path}' ({exc})") from None
    if manifest.get("format") != CACHE_FORMAT:
        raise DataError(f"'{path}' is not a netspec cache manifest")
    if manifest.get("version") != CACHE_VERSION:
        raise DataError(f"prepared cache '{root}' has format version {manifest.get('version')}, "
                        f"this netspec reads version {CACHE_VERSION}; prepare it again")
    return manifest


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"prepared cache file '{path}' can't be read ({exc}); prepare it again") from None
