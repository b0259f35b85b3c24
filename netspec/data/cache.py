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
    CACHE/verified.json           shards whose checksum was verified, by size and times

Images are stored planar (channels first) so that crops read contiguous rows.

Tampered manifests. The manifest and plan.json are checked field by field (`manifest_schema`,
`PLAN`, netspec/schema.py) before anything is used: a wrong type is a DataError naming the file
and the field. Every file the manifest names must lie inside the cache once symbolic links and
'..' are resolved, shard names are `<split>/NNNNN.npy` of their own split and split names are
single folder names, so neither reading nor repairing a shard reaches outside the cache.

Damaged shards. The manifest lists each shard's CRC-32 and size (`checksums`). Opening a cache
checks every shard's size, and its CRC-32 unless it was verified before and its size, mtime
and ctime have not changed since (verified.json; a copied or rewritten file gets a new ctime,
so it is read again). A truncated, corrupted or missing shard is named in a warning and
decoded again from its source files (the plan's) when they are there, else its images are
left out (and listed as skipped): never fed to training as garbage.
"""
from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netspec.atomic import atomic_write
from netspec.data.shards import ShardJob, decode_shard, file_crc32
from netspec.data.sources import CacheSplit
from netspec.data.stats import PCA, ImageStats, statistics_problem
from netspec.errors import DataError
from netspec.schema import Any, Int, List, Map, Num, Obj, Opt, Str, Tuple, validate

MANIFEST_NAME = "netspec-cache.json"
PLAN_NAME = "plan.json"
VERIFIED_NAME = "verified.json"
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


log = logging.getLogger("netspec.data")


def read_cache(root) -> CacheContents:
    root = Path(root)
    manifest = read_manifest(root)
    base = int(manifest["base"])
    left_out = _repair_or_leave_out(root, manifest, verify_shards(root, manifest))
    splits, damaged = {}, []
    for name, info in manifest["splits"].items():
        labels = _load_array(root / info["labels"])
        shards, paths = [tuple(s) for s in info["shards"]], None
        if any(shard in left_out for shard, _ in shards):
            keep, paths, names = _without(root, info, shards, labels, left_out)
            damaged += [(p, f"in the damaged cache shard {root / shard}")
                        for shard, _ in shards if shard in left_out
                        for p in names[shard]]
            shards = [(s, c) for s, c in shards if s not in left_out]
            labels = labels[keep]
        splits[name] = CacheSplit(root, shards, labels, base, source_root=manifest.get("source"),
                                  files_list=info.get("files"), paths=paths)
    mean, pca = _statistics(root, manifest, base)
    return CacheContents(
        root=root, base=base, classes=tuple(manifest["classes"]), splits=splits,
        mean=mean, pca=pca,
        skipped=[tuple(s) for s in manifest.get("skipped", [])] + damaged,
        source=manifest.get("source"),
        class_names=tuple(manifest.get("class_names") or manifest["classes"]),
        layout=manifest.get("layout") or "class folders",
        labels_source=manifest.get("labels_source") or "val/ class folder names",
        tree_skipped=tuple(tuple(s) for s in manifest.get("tree_skipped", [])),
    )


def _statistics(root: Path, manifest: dict, base: int) -> tuple[np.ndarray, PCA]:
    """The cache's mean image and PCA; rebuilt from the training shards' sidecars (their
    exact integer sums) when mean.npy or the manifest's PCA is damaged, with a warning."""
    try:
        mean = np.load(root / manifest["mean"], allow_pickle=False)
        problem = statistics_problem(mean, manifest["pca"]["eigenvalues"],
                                     manifest["pca"]["eigenvectors"], base)
    except (OSError, ValueError, EOFError) as exc:
        problem = f"{manifest['mean']} can't be read ({exc})"
    if problem is None:
        return mean.astype(np.float32), PCA.from_dict(manifest["pca"])
    stats = ImageStats(base)
    for name, _count in manifest["splits"].get("train", {}).get("shards", []):
        sidecar = (root / name).with_suffix(".npz")
        try:
            with np.load(sidecar, allow_pickle=False) as arrays:
                stats.merge(ImageStats.from_arrays(base, arrays))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"prepared cache '{root}': the statistics are damaged ({problem}) "
                            f"and can't be rebuilt: '{sidecar}' can't be read ({exc}); prepare "
                            f"it again") from None
    mean, pca = stats.mean(), stats.pca()
    rebuilt = statistics_problem(mean, pca.eigenvalues, pca.eigenvectors, base)
    if rebuilt is not None:
        raise DataError(f"prepared cache '{root}': the statistics are damaged ({problem}) and "
                        f"the shards' sums are too ({rebuilt}); prepare it again")
    log.warning("prepared cache '%s': the statistics were damaged (%s); rebuilt them from the "
                "training shards' sums", root, problem)
    try:
        atomic_write(root / manifest["mean"], lambda f: np.save(f, mean))
        manifest["pca"] = pca.to_dict()
        atomic_write(root / MANIFEST_NAME,
                     lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    except OSError:
        pass                          # a read-only cache: rebuilt again next time
    return mean, pca


def verify_shards(root: Path, manifest: dict) -> dict[str, str]:
    """The damaged shards of a cache: {shard name: what is wrong}. Shards of a cache written
    before checksums were recorded are only checked for presence."""
    root = Path(root)
    record = _read_verified(root)
    changed, bad = False, {}
    for info in manifest["splits"].values():
        sums = info.get("checksums", {})
        for name, _count in info["shards"]:
            path, want = root / name, sums.get(name)
            try:
                st = os.stat(path)
            except OSError as exc:
                bad[name] = f"can't be read ({exc.strerror})"
                continue
            if want is None:
                continue
            stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            if st.st_size != want["bytes"]:
                bad[name] = f"holds {st.st_size} bytes, the index says {want['bytes']}"
            elif record.get(name) != stamp:
                crc = file_crc32(path)[0]
                if crc != want["crc32"]:
                    bad[name] = f"CRC-32 {crc:08x}, the index says {want['crc32']:08x}"
                else:
                    record[name], changed = stamp, True
    if changed:
        try:
            atomic_write(root / VERIFIED_NAME, lambda f: f.write(json.dumps(record).encode()))
        except OSError:
            pass  # a read-only cache is verified again next time
    return bad


def _read_verified(root: Path) -> dict:
    try:
        record = json.loads((root / VERIFIED_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _repair_or_leave_out(root: Path, manifest: dict, bad: dict[str, str]) -> set[str]:
    """Decode each damaged shard again from its source files; the names of those that
    couldn't be (no source, files changed, a read-only cache) and are left out."""
    left_out = set()
    for name, why in bad.items():
        split, index = Path(name).parent.name, int(Path(name).stem)
        info = manifest["splits"][split]
        if _reprepare(root, manifest, split, index, name):
            log.warning("prepared cache shard '%s' was damaged (%s); decoded it again from "
                        "'%s'", root / name, why, manifest.get("source"))
        else:
            count = dict(map(tuple, info["shards"]))[name]
            log.warning("prepared cache shard '%s' is damaged (%s) and its source files can't "
                        "be decoded again; its %d images are left out. Prepare the cache again "
                        "to get them back", root / name, why, count)
            left_out.add(name)
    return left_out


def _reprepare(root: Path, manifest: dict, split: str, index: int, name: str) -> bool:
    try:
        plan = read_plan(root)
        source = Path(plan["source"])
        size = plan["shard_size"]
        files = plan["splits"][split]
    except (DataError, KeyError) as exc:
        log.warning("can't decode '%s' again: %s", root / name, exc)
        return False
    if not (root / split).resolve().is_relative_to(root.resolve()):
        return False                   # never write outside the cache
    if not source.is_dir():
        return False
    start = index * size
    job = ShardJob(root=str(source), split=split, index=index,
                   paths=tuple(files["paths"][start:start + size]),
                   labels=tuple(files["labels"][start:start + size]), base=plan["base"],
                   out_dir=str(root))
    count = dict(map(tuple, manifest["splits"][split]["shards"]))[name]
    try:
        result = decode_shard(job)
    except OSError:
        return False
    if len(result.paths) != count:       # files changed since: the labels no longer match
        return False
    want = manifest["splits"][split].setdefault("checksums", {})
    if want.get(name) != {"crc32": result.crc32, "bytes": result.nbytes}:
        want[name] = {"crc32": result.crc32, "bytes": result.nbytes}   # another decoder
        try:
            atomic_write(root / MANIFEST_NAME,
                         lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        except OSError:
            pass
    return True


def _without(root: Path, info: dict, shards, labels, left_out: set[str]):
    """(mask of the images kept, their source paths or None, {shard: its source paths})."""
    keep = np.ones(len(labels), dtype=bool)
    try:
        text = (root / info["files"]).read_text(encoding="utf-8") if info.get("files") else ""
        all_paths = text.splitlines()
    except OSError:
        all_paths = []
    names, start = {}, 0
    for shard, count in shards:
        if shard in left_out:
            keep[start:start + count] = False
            names[shard] = all_paths[start:start + count] or [f"{shard}[{i}]" for i in
                                                             range(count)]
        start += count
    paths = [p for p, k in zip(all_paths, keep) if k] if len(all_paths) == len(keep) else None
    return keep, paths, names


def read_manifest(root: Path) -> dict:
    """The manifest of the cache at `root`, checked against `manifest_schema(root)`: every
    field's type, and every file it names inside the cache. DataError (naming the file and
    the field) otherwise."""
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"can't read the prepared cache manifest '{path}' ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        found = repr(manifest.get("format")) if isinstance(manifest, dict) else "no object"
        raise DataError(f"'{path}' is not a netspec cache manifest (field 'format' should be "
                        f"{CACHE_FORMAT!r}, not {found})")
    if manifest.get("version") != CACHE_VERSION:
        raise DataError(f"prepared cache '{root}' has format version {manifest.get('version')!r} "
                        f"(field 'version' of {path}), this netspec reads version "
                        f"{CACHE_VERSION}; prepare it again")
    validate(manifest, manifest_schema(root), str(path), DataError, hint=_AGAIN)
    for split, info in manifest["splits"].items():
        for i, (name, _count) in enumerate(info["shards"]):
            if not re.fullmatch(rf"{re.escape(split)}/\d{{5,}}\.npy", name):
                raise DataError(f"{path}: field 'splits.{split}.shards[{i}][0]' should name a "
                                f"shard of the split, '{split}/NNNNN.npy', not {name!r}; "
                                f"{_AGAIN}")
    return manifest


_AGAIN = "the cache was changed or damaged: prepare it again"


def _plain_name(name: str) -> bool:
    """A split's name: one path component, as the folder it is kept in."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name \
        and "\0" not in name


def inside(root) -> Str:
    """A string naming a file inside the folder `root`, once symbolic links and '..' are
    resolved: what every name in a manifest must be."""
    top = Path(root).resolve()

    def test(name: str) -> bool:
        if not name or "\0" in name or Path(name).is_absolute():
            return False
        target = (top / name).resolve()
        return target != top and target.is_relative_to(top)

    return Str(test=test, what=f"naming a file inside the cache '{root}'")


def manifest_schema(root) -> Obj:
    """The manifest's fields (see the module docstring); file names must stay inside `root`."""
    name = inside(root)
    split = Obj({"count": Int(min=0), "shards": List(Tuple((name, Int(min=0)))),
                 "labels": name, "files": Opt(name),
                 "checksums": Map(Obj({"crc32": Int(min=0), "bytes": Int(min=0)},
                                      required=("crc32", "bytes")))},
                required=("shards", "labels"))
    return Obj({
        "format": Str(), "version": Int(), "base": Int(min=1), "source": Opt(Str()),
        "classes": List(Str()), "splits": Map(split, key=Str(test=_plain_name, what="naming "
                                                              "one folder")),
        "mean": name,
        "pca": Obj({"eigenvalues": List(Num(min=0), length=3),
                    "eigenvectors": List(List(Num(), length=3), length=3)},
                   required=("eigenvalues", "eigenvectors")),
        "skipped": List(Tuple((Str(), Str()))), "layout": Opt(Str()),
        "labels_source": Opt(Str()), "class_names": Opt(List(Str())),
        "tree_skipped": List(List(Any())),
    }, required=("format", "version", "base", "classes", "splits", "mean", "pca"))


def _relative_file(name: str) -> bool:
    return bool(name) and not Path(name).is_absolute() and ".." not in Path(name).parts


PLAN = Obj({
    "source": Str(), "base": Int(min=1), "shard_size": Int(min=1), "classes": List(Str()),
    "splits": Map(Obj({"paths": List(Str(test=_relative_file, what="naming a file inside "
                                                                   "the source folder")),
                       "labels": List(Int(min=0))}, required=("paths", "labels")),
                  key=Str(test=_plain_name, what="naming one folder")),
}, required=("source", "base", "shard_size", "splits"))


def read_plan(root: Path) -> dict:
    """plan.json of a cache being prepared, checked against PLAN; DataError otherwise."""
    path = Path(root) / PLAN_NAME
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"'{path}' can't be read ({exc}); remove '{root}' and prepare "
                        f"again") from None
    return validate(plan, PLAN, str(path), DataError,
                    hint=f"remove '{root}' and prepare again")


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"prepared cache file '{path}' can't be read ({exc}); prepare it again") from None
