"""The spec and the image data agree before a run starts: the input's channels.

Image folders and prepared caches hold 8-bit RGB (decode.py). A spec's `input 3xHxW` reads
them as they are, `input 1xHxW` reads them converted to grey (ITU-R 601-2 luma, Pillow's
"L"), and any other channel count is a spec error at the `input` line (exit 2), raised
before any image is read. (A non-square input is refused earlier, by the IR, for every
command: the pipeline's crops are square, §2.)
"""
from __future__ import annotations

from ..dsl.errors import SpecError

IMAGE_CHANNELS = (3, 1)


def image_channels(graph) -> int:
    """The channels the loader must give for `graph`'s input: 3 or 1. SpecError otherwise."""
    c, *hw = graph.input_shape
    if c in IMAGE_CHANNELS:
        return c
    spec = graph.spec
    size = "x".join(str(d) for d in hw)
    raise SpecError.at(spec.pos["input_value"],
                       f"input has {c} channels, but image data gives 3 (RGB) or 1 (grey); "
                       f"use input 3x{size} or input 1x{size}", spec.path, spec.source)
