"""Write a layout to a file, the format chosen by the file's suffix; atomically
(netspec.atomic), so a kill mid-way leaves an existing figure whole."""
from __future__ import annotations

import os
from pathlib import Path

from ..atomic import atomic_write
from .errors import VizError
from .layout import Layout
from .png import render_png
from .svg import render_svg

FORMATS = (".svg", ".png")


def check_suffix(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise VizError(f"{path}: unknown image format '{suffix or '(none)'}'; "
                       f"use a name ending in .svg or .png")
    return suffix


def save_layout(layout: Layout, path: str | os.PathLike, width: int | None = None) -> Path:
    """Render to `path` (.svg or .png); `width` is the image's width in pixels."""
    suffix = check_suffix(path)
    if width is not None and width < 1:
        raise VizError(f"width must be a positive number of pixels, not {width}")
    path = Path(path)
    if suffix == ".svg":
        atomic_write(path, render_svg(layout, width))
    else:
        image = render_png(layout, width)
        atomic_write(path, lambda f: image.save(f, "PNG", optimize=True))
    return path
