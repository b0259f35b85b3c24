"""Per-image training noise (dropout masks) keyed by (seed, step, layer, image, element).

Every uniform a training step draws is Philox4x32-10 (netspec/kernel/philox.py) of its own key:

    (seed, step, layer, image, element)
        seed     the run's seed (0 <= seed < 2^64)
        step     the training step
        layer    the layer's index in the network's compute layers (0: the first after the input)
        image    the image's index in the step's global batch
        element  the value's index within the image's output, C·H·W order

    u = (word[e % 4] >> 8) · 2^-24,  word = Philox4x32-10(counter (e // 4, image, layer, step),
                                                          key (seed mod 2^32, seed >> 32))

and a unit is kept when u >= float32(p) (ops/dropout.py). Nothing is drawn in sequence, so the
NumPy reference, the host C of the cpu backend and a kernel on a device (opencl, cuda: the plan
launches it; no mask crosses the bus) compute the same bits; K data-parallel replicas that
each hold a slice of the global batch draw what one process holding all of it draws; and a run
resumed at step s draws step s's masks again from the state it saved (seed and step).

`net.rng` is where a net's training forward finds its key:
- an `ImageNoise(seed, step, first, count)`: the trainer sets one per step (its images are
  first … first+count−1 of the global batch);
- a `numpy.random.Generator` (a built net's default, or any a caller sets): each training
  forward takes one uint64 from it as the seed, step 0, images 0 … N−1 (`step_noise`). So two
  nets given equal generators draw equal masks, and a fresh generator reseeds them.
"""
from __future__ import annotations

import numpy as np

from ..kernel.philox import seed_key, uniforms

NOISE_DESCRIPTION = ("Philox4x32-10: key = seed, counter = (element // 4, image index in the "
                     "global batch, layer index, step); u = (word >> 8) * 2^-24")


class ImageNoise:
    """The noise key of one training step for the images first … first+count−1 of the global
    batch: `layer(i)` gives compute layer i's draw. ValueError for a seed outside [0, 2^64) or
    a negative step or image index."""

    def __init__(self, seed: int, step: int, first: int, count: int):
        seed_key(seed)                       # checks the range
        if step < 0 or first < 0 or count < 0:
            raise ValueError(f"noise step {step}, first image {first}, count {count}: "
                             f"none may be negative")
        self.seed, self.step, self.first, self.count = int(seed), int(step), int(first), \
            int(count)

    def layer(self, index: int) -> LayerNoise:
        """The draw of the compute layer at `index`."""
        return LayerNoise(self, index)

    def words(self) -> np.ndarray:
        """The key as a mask kernel's noise buffer reads it (ops/dropout.py's NOISE_WORDS):
        int32 (4,) holding the uint32 bits of key0, key1 (the seed's low and high words),
        step and first. ValueError when step or first doesn't fit 32 bits."""
        if self.step >= 1 << 32 or self.first >= 1 << 32:
            raise ValueError(f"noise step {self.step} and first image {self.first} must be "
                             f"below 2^32")
        k0, k1 = seed_key(self.seed)
        return np.array([k0, k1, self.step, self.first], np.uint32).view(np.int32)

    def uniforms(self, layer: int, elements: int) -> np.ndarray:
        """float32 (count, elements): layer `layer`'s uniforms, NumPy's Philox (a backend may
        compute the same bits its own way, e.g. the cpu backend in host C)."""
        return uniforms(self.seed, self.step, layer, self.first, self.count, elements)


class LayerNoise:
    """What `Op.draw_noise` is given as its `rng`: `random((count, *shape), dtype)` returns
    the layer's uniforms in [0, 1), one row per image, in `dtype` (float32 or float64; the
    same values). ValueError when the first axis isn't the step's image count."""

    def __init__(self, step: ImageNoise, index: int):
        self.step_noise, self.index = step, index

    def random(self, size, dtype=np.float64) -> np.ndarray:
        size = tuple(size)
        if size[0] != self.step_noise.count:
            raise ValueError(f"noise for {size[0]} images asked of a step with "
                             f"{self.step_noise.count}")
        elements = int(np.prod(size[1:], dtype=np.int64))
        u = self.step_noise.uniforms(self.index, elements)
        return u.reshape(size).astype(dtype, copy=False)


def image_noise(seed: int, step: int, first: int, count: int) -> ImageNoise:
    """The noise of images first … first+count−1 of step `step`'s global batch."""
    return ImageNoise(seed, step, first, count)


def step_noise(rng, count: int) -> ImageNoise:
    """The key of one training forward over `count` images from `net.rng`: an ImageNoise as
    it is (its count must be `count`), or, from a numpy Generator, one uint64 drawn from it as
    the seed at step 0, images 0 … count−1. TypeError for anything else."""
    if isinstance(rng, ImageNoise):
        if rng.count != count:
            raise ValueError(f"noise for {count} images asked of a step with {rng.count}")
        return rng
    if isinstance(rng, np.random.Generator):
        return ImageNoise(int(rng.integers(0, 1 << 64, dtype=np.uint64)), 0, 0, count)
    raise TypeError(f"net.rng must be a numpy.random.Generator or a "
                    f"netspec.runtime.noise.ImageNoise, not {type(rng).__name__}")
