"""Where one split's images come from: a folder of image files, or a prepared cache.

Both give the same thing for image i of the split: `planar(i)`, uint8 (3, base, base), the
image rescaled and centre-cropped (decode.decode_image), and `image(i)`, the same as
(base, base, 3). A prepared cache stores exactly what decode_image returns, so the two agree
to the bit. `readahead(indices)` asks the kernel to start reading those images from disk.
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from netspec.data.decode import UnreadableImage, decode_image
from netspec.data.walk import printable
from netspec.errors import DataError


class FolderSplit:
    """Images decoded from their files on every read."""

    def __init__(self, root: Path, paths: list[str], labels, base: int):
        self.root = Path(root)
        self.paths = list(paths)  # relative to root
        self.labels = np.asarray(labels, dtype=np.int64)
        self.base = base

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        if not 0 <= index < len(self.paths):
            raise IndexError(f"image index {index} out of range 0..{len(self.paths) - 1}")
        return self.root / self.paths[index]

    def image(self, index: int) -> np.ndarray:
        path = self.path(index)
        try:
            return decode_image(path, self.base)
        except UnreadableImage as exc:
            raise DataError(f"'{printable(str(path))}' can't be read any more ({exc}); it was "
                            f"readable when the dataset was opened") from None

    def planar(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(self.image(index).transpose(2, 0, 1))

    def readahead(self, indices) -> None:
        if not hasattr(os, "posix_fadvise"):
            return
        for i in indices:
            try:
                fd = os.open(self.path(int(i)), os.O_RDONLY)
            except OSError:
                continue  # reading it will say what is wrong
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)


def _allow_open_files(count: int) -> None:
    """Each memory-mapped shard keeps a file descriptor open: raise the soft limit if needed."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


class CacheSplit:
    """Images read from memory-mapped uint8 (n, 3, base, base) .npy shards."""

    def __init__(self, root: Path, shards: list[tuple[str, int]], labels, base: int,
                 source_root: str | None = None, files_list: str | None = None,
                 paths: list[str] | None = None):
        self.root = Path(root)
        self.base = base
        self.labels = np.asarray(labels, dtype=np.int64)
        shards = [(name, count) for name, count in shards if count > 0]
        self._files = [name for name, _ in shards]
        counts = np.array([count for _, count in shards], dtype=np.int64)
        self._ends = np.cumsum(counts)
        self._starts = self._ends - counts
        if len(self.labels) != (int(self._ends[-1]) if len(counts) else 0):
            raise DataError(f"prepared cache '{root}' is inconsistent: {len(self.labels)} labels "
                            f"for {int(self._ends[-1]) if len(counts) else 0} images; prepare it again")
        self._arrays: list[np.ndarray | None] = [None] * len(self._files)
        _allow_open_files(len(self._files))
        self._source_root = source_root
        self._files_list = files_list
        self._paths: list[str] | None = paths  # None: read from files_list when asked

    def __len__(self) -> int:
        return len(self.labels)

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"image index {index} out of range 0..{len(self) - 1}")
        shard = int(np.searchsorted(self._ends, index, side="right"))
        return shard, index - int(self._starts[shard])

    def _shard(self, shard: int) -> np.ndarray:
        array = self._arrays[shard]
        if array is None:
            path = self.root / self._files[shard]
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DataError(f"prepared cache shard '{path}' can't be read ({exc}); "
                                f"prepare the cache again") from None
            if array.shape[1:] != (3, self.base, self.base) or array.dtype != np.uint8:
                raise DataError(f"prepared cache shard '{path}' has shape {array.shape}, "
                                f"expected (n, 3, {self.base}, {self.base}) uint8")
            self._arrays[shard] = array
        return array

    def planar(self, index: int) -> np.ndarray:
        shard, row = self._locate(index)
        return self._shard(shard)[row]

    def image(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(self.planar(index).transpose(1, 2, 0))

    def path(self, index: int) -> Path | None:
        """The file the image was decoded from, if the cache recorded it."""
        if self._files_list is None or self._source_root is None:
            return None
        if self._paths is None:
            text = (self.root / self._files_list).read_text(encoding="utf-8",
                                                            errors="surrogateescape")
            self._paths = text.split("\n")  # names never hold one (walk.py), unlike "\x85"
        return Path(self._source_root, self._paths[index])

    def readahead(self, indices) -> None:
        row_bytes = 3 * self.base * self.base
        for i in indices:
            shard, row = self._locate(int(i))
            array = self._shard(shard)
            buffer = getattr(array, "_mmap", None)  # numpy.memmap keeps its mmap here
            if buffer is None or not hasattr(buffer, "madvise"):
                return
            # numpy maps from the allocation-granularity boundary below the data's offset.
            start = array.offset % mmap.ALLOCATIONGRANULARITY + row * row_bytes
            aligned = start - start % mmap.PAGESIZE
            try:
                buffer.madvise(mmap.MADV_WILLNEED, aligned, row_bytes + start - aligned)
            except (OSError, ValueError):
                return

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = [None] * len(self._files)  # memory maps are reopened, not pickled
        return state
