"""List a data directory in any accepted layout (layouts.py) with the shared tree walk
(walk.py): classes, and each split's image files and labels.

Classes are the sorted names of the non-empty class folders under train/, labelled 0..K-1.
val/ uses train's labels: by class folder, or by wnid for a flat val/ (labels from the
devkit or Kaggle's solution file); a val class that train lacks is an error. A class folder
without images is ignored with a warning. Files are found recursively; .jpeg, .jpg and .png
in any case count as images. Every other entry is skipped and counted by kind (walk.py),
and the listing says so in one warning line.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from netspec.data.decode import IMAGE_EXTENSIONS, is_image_name
from netspec.data.layouts import CLASS_FOLDERS, Layout, detect_layout, val_name_key
from netspec.data.walk import (
    TreeReport,
    entry_kind,
    is_hidden,
    list_entries,
    printable,
    walk_images,
)
from netspec.errors import DataError

log = logging.getLogger("netspec.data")

SPLITS = ("train", "val")


@dataclass(frozen=True)
class SplitListing:
    """The image files of one split, in label-then-name order, and their labels."""

    name: str
    paths: tuple[str, ...]  # relative to the data directory, with "/" separators
    labels: tuple[int, ...]


@dataclass(frozen=True)
class FolderListing:
    """root: the folder the paths are relative to (for Kaggle, ROOT/ILSVRC/Data/CLS-LOC).
    class_names: the human name of each class ("tench"), index = label. layout: which
    layout (layouts.py); labels_source: where val's labels came from. report: the entries
    the walk skipped, by kind."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, SplitListing]
    class_names: tuple[str, ...] = ()
    layout: str = CLASS_FOLDERS
    labels_source: str = "val/ class folder names"
    report: TreeReport = field(default_factory=TreeReport)


def list_image_folder(root: str | os.PathLike) -> FolderListing:
    """List ROOT in any accepted layout. Raises DataError for a layout that can't be used;
    logs one warning line with the counts of skipped entries by kind."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data directory '{root}' does not exist")
    if not root.is_dir():
        raise DataError(f"data path '{root}' is not a directory")
    try:
        with os.scandir(root) as entries:
            empty = not any(not is_hidden(entry.name) for entry in entries)
    except OSError as exc:
        raise DataError(f"data directory '{root}' can't be listed ({exc.strerror})") from None
    if empty:
        raise DataError(f"data directory '{root}' is empty; expected {root}/train/<class>/*.jpg")
    layout = detect_layout(root)
    data_dir = layout.data_dir
    report = TreeReport()

    train_files = _class_files(data_dir, "train", report)
    if not train_files:
        raise DataError(f"'{data_dir}/train' has no class folders with images "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    classes = tuple(sorted(train_files))
    label_of = {name: label for label, name in enumerate(classes)}
    splits = {"train": _split_listing("train", train_files, label_of)}

    if (data_dir / "val").is_dir():
        if layout.val_wnids is not None:
            val_files = _flat_val_files(data_dir, layout, report)
        else:
            val_files = _class_files(data_dir, "val", report)
        unknown = sorted(set(val_files) - set(classes))
        if unknown:
            raise DataError(
                f"'{data_dir}/val' has class {unknown[0]!r} that train/ lacks"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + "; val must use train's classes"
            )
        splits["val"] = _split_listing("val", val_files, label_of)
    else:
        log.warning("'%s' has no val/ folder; there is nothing to evaluate on", data_dir)
    if report.skipped:
        log.warning(report.summary(str(data_dir)))
    return FolderListing(root=data_dir, classes=classes, splits=splits,
                         class_names=tuple(layout.class_name(c) for c in classes),
                         layout=layout.kind, labels_source=layout.labels_source, report=report)


def check_class_count(classes, num_outputs: int) -> None:
    """Compare the data's classes with the network's outputs.

    More classes than outputs: DataError. Fewer: a warning (the extra outputs are never a
    target), then carry on.
    """
    count = len(classes)
    if count > num_outputs:
        raise DataError(
            f"the data has {count} classes but the network has only {num_outputs} outputs; "
            f"set the net's classes to {count} or use fewer classes"
        )
    if count < num_outputs:
        log.warning(
            "the data has %d classes but the network has %d outputs; outputs %d..%d will "
            "never be a target", count, num_outputs, count, num_outputs - 1,
        )


def _class_files(root: Path, split: str, report: TreeReport) -> dict[str, list[str]]:
    """Map each non-empty class folder of `split` to its image files (sorted relative paths).
    A file directly in the split folder belongs to no class and is counted as such."""
    split_dir = root / split
    found: dict[str, list[str]] = {}
    seen: set = set()
    for entry in list_entries(split_dir, root, report) or ():
        kind, st = entry_kind(entry, root, report)
        if kind == "file":  # beside the class folders: an image of no class, or not an image
            report.skip(f"{split}/{entry.name}",
                        "no label" if is_image_name(entry.name) else "not an image")
            continue
        if kind != "dir":
            continue
        files = walk_images(Path(entry.path), root, report, seen)
        if not files:
            log.warning("'%s/%s' has no images; ignoring this class folder", split_dir,
                        printable(entry.name))
            continue
        found[entry.name] = files
    return found


def _flat_val_files(root: Path, layout: Layout, report: TreeReport) -> dict[str, list[str]]:
    """A flat val/: each image's class is the wnid its name maps to; an image the labels
    don't name is counted as "no label"."""
    found: dict[str, list[str]] = {}
    for rel in walk_images(root / "val", root, report):
        wnid = layout.val_wnids.get(val_name_key(rel.rsplit("/", 1)[-1]))
        if wnid is None:
            report.skip(rel, "no label")
            continue
        found.setdefault(wnid, []).append(rel)
    return found


def _split_listing(name: str, files: dict[str, list[str]], label_of: dict[str, int]) -> SplitListing:
    paths: list[str] = []
    labels: list[int] = []
    for cls in sorted(files, key=label_of.__getitem__):
        paths.extend(files[cls])
        labels.extend([label_of[cls]] * len(files[cls]))
    return SplitListing(name=name, paths=tuple(paths), labels=tuple(labels))
