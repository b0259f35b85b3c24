"""Every file netspec writes for a user goes through `atomic_write` (or `atomic_open`).

The new content is written to a hidden temporary file in the target's own folder
(`.NAME.XXXXXX.tmp`), fsynced, renamed over the target (rename(2) is atomic within one file
system) and the folder fsynced. A kill, a full disk or an exception at any moment leaves either
the old file whole or the new one whole, never a mix or a truncated file; the temporary file
is removed on an exception (a SIGKILL can leave it behind: it is hidden and the next write of
the same name does not mind it).

Targets that are not regular files (`/dev/null`, a FIFO, a terminal) can't be renamed over:
they are written in place, as `open(path, "wb")` would. A symbolic link to a regular file is
followed: the file it points to is replaced and the link kept. An existing file keeps its
permission bits; a new one gets the umask's, as `open()` would give it (not mkstemp's 0600).

Foundation module: imports nothing from netspec (tests/test_layering.py).
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

Data = bytes | bytearray | memoryview | str | Iterable | Callable[[BinaryIO], object]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_CREATE_MODE = 0o666 & ~_umask()     # a new file's mode under this process's umask


def _target(path: Path) -> tuple[Path, bool]:
    """(the path to write, whether it is a regular file or absent: a rename target)."""
    try:
        st = os.stat(path)            # follows a symlink
    except FileNotFoundError:
        return path, True
    if not stat.S_ISREG(st.st_mode):
        return path, False
    return (Path(os.path.realpath(path)) if path.is_symlink() else path), True


def fsync_dir(path: Path) -> None:
    """fsync a folder, so that a rename in it survives a power cut (where the OS allows)."""
    try:
        dfd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass                         # some file systems refuse fsync on a directory
    finally:
        os.close(dfd)


def write_buffers(fd: int, data: Data) -> None:
    """Write bytes, a str (UTF-8) or an iterable of buffers to a file descriptor, whole
    (os.write until done; no copy of the buffers)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view):]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """`with atomic_open(path) as f:` a binary file object whose content replaces `path` when
    the block ends without an exception (and is thrown away when it raises). Non-regular
    targets (/dev/null) are opened and written in place."""
    path, renamable = _target(Path(path))
    if not renamable:
        with open(path, "wb") as f:
            yield f
        return
    mode = _CREATE_MODE
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(os.stat(path).st_mode)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        e.filename = str(path)         # the user's name, not the temporary one
        raise
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as f:
            yield f
            f.flush()
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException as e:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)     # the CLI names the file it couldn't write
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: Data) -> Path:
    """Replace `path` by `data` atomically (see the module docstring).

    data: bytes, str (written as UTF-8), an iterable of buffers written one after the other
    (no copy), or a function called with the open binary file object that writes it. Returns
    the path. OSError as open() and os.replace() raise them, naming `path` (e.filename); the
    old file is then intact."""
    path = Path(path)
    with atomic_open(path) as f:
        if callable(data):
            data(f)
        else:
            f.flush()
            write_buffers(f.fileno(), data)
    return path
