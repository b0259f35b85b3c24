"""open_dataset: the Dataset that a `--data` source names: an image folder, a prepared cache,
or "demo" (the demo set, prepared on first use).

Above both dataset.py (the Dataset) and prepare.py (which makes a cache and returns its
Dataset), so that the two import one way: prepare -> dataset.
"""
from __future__ import annotations

from netspec.data.cache import is_prepared_cache
from netspec.data.dataset import DEFAULT_BASE, DEMO, Dataset, resolve_data_dir
from netspec.data.demo import DEMO_BASE
from netspec.data.prepare import ensure_demo_cache
from netspec.errors import DataError


def open_dataset(source, base: int | None = None, *, workers: int = 0,
                 progress: bool = True) -> Dataset:
    """Open a folder in the ImageFolder layout, a prepared cache, or "demo".

    base: the side of the rescaled, centre-cropped images. Default: 256 for a folder, the
    cache's own for a prepared cache (another value is an error), demo.DEMO_BASE for the demo.
    The demo is opened as a prepared cache of itself at that base, made on first use
    (prepare.ensure_demo_cache).
    workers, progress: processes and progress bar (on stderr) for the first scan of a folder,
    which decodes every image once; later opens reuse its result.
    """
    if base is not None and (isinstance(base, bool) or not isinstance(base, int) or base < 1):
        raise DataError(f"base must be a positive integer, not {base!r}")
    if isinstance(source, str) and source == DEMO:
        return Dataset.from_cache(ensure_demo_cache(DEMO_BASE if base is None else base,
                                                    progress), base)
    root = resolve_data_dir(source, progress)
    if is_prepared_cache(root):
        return Dataset.from_cache(root, base)
    return Dataset.from_folder(root, DEFAULT_BASE if base is None else base,
                               workers=workers, progress=progress)
