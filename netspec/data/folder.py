"""Read the ImageFolder layout: DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg.

Classes are the sorted names of the non-empty class folders under train/, labelled 0..K-1.
val/ uses train's labels; a val class that train lacks is an error. A class folder without
images is ignored with a warning. Files are found recursively; .jpeg, .jpg and .png in any
case count as images, everything else is ignored. Hidden files and folders (".name") too.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from netspec.data.decode import IMAGE_EXTENSIONS, is_image_name
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
    root: Path
    classes: tuple[str, ...]
    splits: dict[str, SplitListing]


def list_image_folder(root: str | os.PathLike) -> FolderListing:
    """List DIR/train and DIR/val. Raises DataError for a layout that can't be used."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data directory '{root}' does not exist")
    if not root.is_dir():
        raise DataError(f"data path '{root}' is not a directory")
    with os.scandir(root) as entries:
        empty = not any(not entry.name.startswith(".") for entry in entries)
    if empty:
        raise DataError(f"data directory '{root}' is empty; expected {root}/train/<class>/*.jpg")
    if not (root / "train").is_dir():
        raise DataError(
            f"data directory '{root}' has no train/ folder; expected {root}/train/<class>/*.jpg "
            f"(and {root}/val/<class>/*.jpg)"
        )

    train_files = _class_files(root, "train")
    if not train_files:
        raise DataError(f"'{root}/train' has no class folders with images "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    classes = tuple(sorted(train_files))
    label_of = {name: label for label, name in enumerate(classes)}
    splits = {"train": _split_listing("train", train_files, label_of)}

    if (root / "val").is_dir():
        val_files = _class_files(root, "val")
        unknown = sorted(set(val_files) - set(classes))
        if unknown:
            raise DataError(
                f"'{root}/val' has class {unknown[0]!r} that train/ lacks"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + "; val must use train's classes"
            )
        splits["val"] = _split_listing("val", val_files, label_of)
    else:
        log.warning("'%s' has no val/ folder; there is nothing to evaluate on", root)
    return FolderListing(root=root, classes=classes, splits=splits)


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


def _class_files(root: Path, split: str) -> dict[str, list[str]]:
    """Map each non-empty class folder of `split` to its image files (sorted relative paths)."""
    split_dir = root / split
    found: dict[str, list[str]] = {}
    with os.scandir(split_dir) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            continue  # stray files next to the class folders are not images of any class
        files = sorted(_walk_images(Path(entry.path), root))
        if not files:
            log.warning("'%s/%s' has no images; ignoring this class folder", split_dir, entry.name)
            continue
        found[entry.name] = files
    return found


def _walk_images(folder: Path, root: Path):
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and is_image_name(name):
                yield Path(dirpath, name).relative_to(root).as_posix()


def _split_listing(name: str, files: dict[str, list[str]], label_of: dict[str, int]) -> SplitListing:
    paths: list[str] = []
    labels: list[int] = []
    for cls in sorted(files, key=label_of.__getitem__):
        paths.extend(files[cls])
        labels.extend([label_of[cls]] * len(files[cls]))
    return SplitListing(name=name, paths=tuple(paths), labels=tuple(labels))
