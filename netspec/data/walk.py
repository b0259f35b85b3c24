"""The one walk over a data directory's tree that train, eval, prepare and the dataset
fingerprint all use, so that an odd entry gets the same answer everywhere.

Every entry is either an image file that is used, or skipped and counted under one kind:

    hidden            .DS_Store, ._*, .ipynb_checkpoints, any other ".name", and __MACOSX
                      (macOS and Jupyter litter; never descended into)
    odd name          a name with a newline or other control character (a file list, one
                      name per line, can't hold it). Names that are not valid UTF-8 (Latin-1
                      names from old archives) and names with spaces are *used*: they are
                      kept as Python keeps them (os.fsdecode, surrogateescape)
    dangling symlink  a link whose target does not exist
    symlink loop      a link that leads back to a folder it sits in (or to itself); walking
                      it would list the same files again and again, so it is skipped and
                      reported by name. A folder reached a second time through another link
                      is skipped too ("folder seen twice"), so each file is counted once
    unreadable        no read permission (os.access with the real uid), or a folder that
                      can't be listed
    empty file        a file of 0 bytes
    not an image      a file whose extension is not .jpeg/.jpg/.png (any case)
    not a file        a FIFO, socket or device node
    too deep          a folder more than MAX_DEPTH (64) levels below the folder walked;
                      not entered (the walk is iterative: no depth raises RecursionError)

A folder whose name ends in ".jpg" is a folder: it is walked, never opened as an image.
Nothing here raises for an odd entry; only a missing or unlistable top folder is a DataError
(raised by the layouts).

Paths are relative to the data root, with "/" separators, in sorted order.
"""
from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from netspec.data.decode import is_image_name

HIDDEN_FOLDERS = ("__MACOSX",)

KINDS = ("hidden", "odd name", "dangling symlink", "symlink loop", "folder seen twice",
         "too deep", "unreadable", "empty file", "not an image", "not a file", "no label")
# Folders below a class folder that are walked: ImageNet's layouts are 1 or 2 deep; a tree
# hundreds deep is a mistake (or a bind-mount loop a link check can't see), not a dataset
MAX_DEPTH = 64


@dataclass
class TreeReport:
    """What a walk skipped: (relative path, kind) per entry, in the order found."""

    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, rel: str, kind: str) -> None:
        self.skipped.append((rel, kind))

    def counts(self) -> Counter:
        return Counter(kind for _, kind in self.skipped)

    def loops(self) -> list[str]:
        return [rel for rel, kind in self.skipped if kind == "symlink loop"]

    def summary(self, source: str) -> str:
        """One line: how many entries of each kind were skipped, and the loops by name."""
        counts = self.counts()
        parts = [f"{counts[k]} {k}" for k in KINDS if counts[k]]
        line = f"skipped {len(self.skipped)} entries in '{source}': {', '.join(parts)}"
        loops = self.loops()
        if loops:
            shown = ", ".join(printable(p) for p in loops[:3])
            line += f"; symlink loop(s) not followed: {shown}" + (
                f" and {len(loops) - 3} more" if len(loops) > 3 else "")
        return line


def printable(path: str) -> str:
    """A path as it can be printed on any terminal: undecodable bytes as \\xNN, control
    characters escaped (a name with a newline stays on one line)."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name in HIDDEN_FOLDERS


def has_odd_characters(name: str) -> bool:
    """A control character (C0, DEL, C1) or a line/paragraph separator: anything that would
    end a line in a file list. (Undecodable bytes are lone surrogates, not odd.)"""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" for c in name)


def list_entries(folder: Path, root: Path, report: TreeReport) -> list[os.DirEntry] | None:
    """The visible entries of one folder, sorted by name; None (and counted) if unlistable."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except PermissionError:
        report.skip(_rel(folder, root), "unreadable")
        return None
    except OSError as exc:
        report.skip(_rel(folder, root), "symlink loop" if exc.errno == errno.ELOOP else "unreadable")
        return None
    visible = []
    for entry in entries:
        if is_hidden(entry.name):
            report.skip(_rel(Path(entry.path), root), "hidden")
        elif has_odd_characters(entry.name):
            report.skip(_rel(Path(entry.path), root), "odd name")
        else:
            visible.append(entry)
    return visible


def entry_kind(entry: os.DirEntry, root: Path, report: TreeReport) -> tuple[str, os.stat_result | None]:
    """'dir', 'file' or 'skip' (counted) for an entry, following symlinks."""
    try:
        st = os.stat(entry.path)
    except FileNotFoundError:
        report.skip(_rel(Path(entry.path), root), "dangling symlink")
        return "skip", None
    except OSError as exc:
        kind = "symlink loop" if exc.errno == errno.ELOOP else "unreadable"
        report.skip(_rel(Path(entry.path), root), kind)
        return "skip", None
    if stat.S_ISDIR(st.st_mode):
        return "dir", st
    if stat.S_ISREG(st.st_mode):
        return "file", st
    report.skip(_rel(Path(entry.path), root), "not a file")
    return "skip", None


def check_image_file(path: str, st: os.stat_result, rel: str, report: TreeReport) -> bool:
    """True if a regular file is an image to use; otherwise it is counted."""
    if not is_image_name(os.path.basename(path)):
        report.skip(rel, "not an image")
    elif st.st_size == 0:
        report.skip(rel, "empty file")
    elif not os.access(path, os.R_OK):
        report.skip(rel, "unreadable")
    else:
        return True
    return False


def walk_images(folder: Path, root: Path, report: TreeReport, seen: set | None = None) -> list[str]:
    """Every usable image under `folder` (recursively, following symlinks to folders once),
    as sorted paths relative to `root`. Everything else is counted in `report`.

    seen: identities (st_dev, st_ino) of folders already walked; share it between the class
    folders of one split so that a folder linked from two places is listed once.
    """
    seen = set() if seen is None else seen
    try:
        st = os.stat(folder)
    except OSError:
        report.skip(_rel(folder, root), "unreadable")
        return []
    found: list[str] = []
    _walk(Path(folder), root, report, seen, ((st.st_dev, st.st_ino),), found)
    return sorted(found)


def _walk(folder: Path, root: Path, report: TreeReport, seen: set, ancestors: tuple,
          found: list[str]) -> None:
    """Depth first, in sorted order, with a stack of open folders instead of recursion: a
    tree 1,100 folders deep is walked as any other (Python's recursion stops near 1,000).
    A folder more than MAX_DEPTH levels below `folder` is not entered ("too deep")."""
    seen.add(ancestors[-1])
    stack = [(iter(list_entries(folder, root, report) or ()), ancestors)]
    while stack:
        entries, ancestors = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        kind, st = entry_kind(entry, root, report)
        rel = _rel(Path(entry.path), root)
        if kind == "dir":
            identity = (st.st_dev, st.st_ino)
            if identity in ancestors:
                report.skip(rel, "symlink loop")
            elif identity in seen:
                report.skip(rel, "folder seen twice")
            elif len(ancestors) > MAX_DEPTH:
                report.skip(rel, "too deep")
            else:
                seen.add(identity)
                stack.append((iter(list_entries(Path(entry.path), root, report) or ()),
                              ancestors + (identity,)))
        elif kind == "file" and check_image_file(entry.path, st, rel, report):
            found.append(rel)


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()
