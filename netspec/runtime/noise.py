"""Per-image training noise (dropout masks) keyed by (seed, step, layer, image).

A training step sets `net.rng = ImageNoise(seed, step, first, count)`; the net then asks it,
once per layer that draws (`Op.draw_noise`, in network order), for one array of uniforms in
[0, 1) of shape (count, *layer.out_shape) (runtime/net.py, "Dropout draws"). Row i of every
such array belongs to the image whose index in the step's global batch is `first + i`, and
depends only on the key

    (seed, step, layer, image)     layer: 0 for the first layer that draws, 1 for the next, ...
                                   image: the image's index in the global batch (first + i)

never on how many images a process holds, so K data-parallel replicas that each hold a slice
of the global batch draw what one process holding all of it draws.

The generator: image `image` of step `step` owns the NumPy stream
`default_rng([seed, DROPOUT_STREAM, step, image])`; layer `layer`'s draw is that stream's next
`prod(out_shape)` values after the draws of layers 0 … layer−1. A counter-based generator
(Philox, Salmon et al. 2011) can compute the same key's values directly on the device; whatever
replaces this one must keep the key and the shapes, and checkpoints name the generator in
their state (`NOISE_DESCRIPTION`).
"""
from __future__ import annotations

import numpy as np

DROPOUT_STREAM = 0x6D61736B          # 'mask': the dropout stream, apart from the data's
NOISE_DESCRIPTION = (f"numpy default_rng([seed, {DROPOUT_STREAM}, step, image index in the "
                     f"global batch])")


def image_stream(seed: int, step: int, image: int) -> np.random.Generator:
    """The stream of image `image` (its index in the global batch) at training step `step`."""
    return np.random.default_rng([seed, DROPOUT_STREAM, step, image])


class ImageNoise:
    """Stands in for `net.rng` during one training step, for the images first … first+count−1
    of the global batch.

    `random((count, *shape), dtype)` is the next layer's draw: row i holds image first+i's
    uniforms for key (seed, step, self.layer, first+i); `layer` then counts up by one."""

    def __init__(self, seed: int, step: int, first: int, count: int):
        self.seed, self.step, self.first, self.count = seed, step, first, count
        self.layer = 0
        self._streams = [image_stream(seed, step, first + i) for i in range(count)]

    def random(self, size, dtype=np.float64) -> np.ndarray:
        """Uniforms in [0, 1), shape `size` = (count, ...), in `dtype` (float32 or float64).
        ValueError when size[0] isn't the step's image count."""
        size = tuple(size)
        if size[0] != self.count:
            raise ValueError(f"noise for {size[0]} images asked of a step with {self.count}")
        out = np.empty(size, dtype)
        for i, g in enumerate(self._streams):
            out[i] = g.random(size[1:], dtype=dtype)
        self.layer += 1
        return out


def image_noise(seed: int, step: int, first: int, count: int) -> ImageNoise:
    """The noise of images first … first+count−1 of step `step`'s global batch."""
    return ImageNoise(seed, step, first, count)
