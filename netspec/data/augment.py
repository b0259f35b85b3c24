"""Crops, flips and the PCA colour shift (§4.1), and the hot path that applies them.

Geometry, for an image of base×base pixels and views of crop×crop:
- a random training crop's top-left corner (oy, ox) is uniform in 0..base-crop on each axis;
- the centre crop starts at ((base-crop)//2, (base-crop)//2): when base-crop is odd the
  extra pixel is on the bottom and right;
- a horizontal flip mirrors the crop left to right (column j of the view is column
  crop-1-j of the crop);
- 10-crop views come in TEN_CROP_ORDER: the four corners, the centre, then the same five
  flipped (torchvision's TenCrop order).

Images enter the hot path as uint8 (3, base, base) "planar" arrays and leave it as float32
(3, crop, crop) = crop(image) - crop(mean) + shift, with the mean image cropped (and flipped)
at the same place as the image, as the paper subtracts the mean per pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netspec.data.stats import PCA
from netspec.kernel.colour import colour_normals, colour_shifts, input_header, pca_constants

TEN_CROP_ORDER = (
    "top-left", "top-right", "bottom-left", "bottom-right", "centre",
    "top-left flipped", "top-right flipped", "bottom-left flipped", "bottom-right flipped",
    "centre flipped",
)


def center_offset(base: int, crop: int) -> int:
    return (base - crop) // 2


def ten_crop_offsets(base: int, crop: int) -> list[tuple[int, int, bool]]:
    """(top, left, flipped) of each 10-crop view, in TEN_CROP_ORDER."""
    far, mid = base - crop, center_offset(base, crop)
    five = [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]
    return [(y, x, False) for y, x in five] + [(y, x, True) for y, x in five]


def crop_view(image: np.ndarray, top: int, left: int, crop: int, flip: bool = False) -> np.ndarray:
    """The crop×crop view of an (H, W, ...) image at (top, left), mirrored if `flip`. No copy."""
    view = image[top:top + crop, left:left + crop]
    return view[:, ::-1] if flip else view


def ten_crop(image: np.ndarray, crop: int) -> np.ndarray:
    """The 10 views of a square (base, base, C) image, stacked as (10, crop, crop, C).

    Order: TEN_CROP_ORDER (top-left, top-right, bottom-left, bottom-right, centre, then the
    same five flipped left-right).
    """
    base = image.shape[0]
    if image.shape[1] != base:
        raise ValueError(f"ten_crop needs a square image, got {image.shape[:2]}")
    return np.stack([crop_view(image, y, x, crop, f) for y, x, f in ten_crop_offsets(base, crop)])


@dataclass(frozen=True)
class BatchPlan:
    """Where each image of a batch is cropped, whether it is flipped, and its colour shift."""

    offsets: np.ndarray  # (n, 2) int: top, left
    flips: np.ndarray  # (n,) bool
    shifts: np.ndarray | None  # (n, 3) float32 in 0..255 units, or None for no shift


def draw_train_plan(
    rng: np.random.Generator, n: int, base: int, crop: int, *,
    flip: bool, pca: PCA | None, pca_sigma: float,
    colour_key: tuple[int, int, int] | None = None,
) -> BatchPlan:
    """Random crops, flips (p = ½) and PCA colour shifts (αᵢ ~ N(0, σ)) for n images.

    The three draws are always made, in this order, so turning flip or PCA off leaves the crops
    of the same (seed, epoch, batch) unchanged. With `colour_key` (seed, epoch, first image's
    position in the epoch's order) the alphas are instead Philox normals of that key
    (kernel/colour.py: what the device draws, so a batch crossing the bus as uint8 gets the
    same shifts there); the loader passes one.
    """
    offsets = rng.integers(0, base - crop + 1, size=(n, 2))
    flips = rng.random(n) < 0.5
    alphas = rng.normal(0.0, 1.0, size=(n, 3)) * pca_sigma
    shifts = None
    if pca is not None and pca_sigma > 0:
        if colour_key is None:
            shifts = pca.shift(alphas)
        else:
            shifts = colour_shifts(colour_normals(*colour_key, n), pca_sigma,
                                   pca.eigenvalues, pca.eigenvectors)
    return BatchPlan(
        offsets=offsets,
        flips=flips if flip else np.zeros(n, dtype=bool),
        shifts=shifts,
    )


def center_plan(n: int, base: int, crop: int) -> BatchPlan:
    mid = center_offset(base, crop)
    return BatchPlan(offsets=np.full((n, 2), mid), flips=np.zeros(n, dtype=bool), shifts=None)


def write_view(
    out: np.ndarray, image: np.ndarray, mean: np.ndarray,
    top: int, left: int, flip: bool, shift: np.ndarray | None = None,
) -> None:
    """out (3, crop, crop) float32 = crop(image) - crop(mean) [+ shift], mirrored if `flip`.

    image: uint8 (3, base, base); mean: float32 (3, base, base). Three passes over `out`, each
    over contiguous rows (planar layout), with no temporaries.
    """
    crop = out.shape[-1]
    pixels = image[:, top:top + crop, left:left + crop]
    means = mean[:, top:top + crop, left:left + crop]
    if flip:
        pixels, means = pixels[:, :, ::-1], means[:, :, ::-1]
    out[...] = pixels
    out -= means
    if shift is not None:
        out += shift[:, None, None]


def write_planned_views(out: np.ndarray, images, mean: np.ndarray, plan: BatchPlan) -> None:
    """Fill out (n, 3, crop, crop) from n planar uint8 images following `plan`."""
    shifts = plan.shifts
    for i, image in enumerate(images):
        top, left = plan.offsets[i]
        write_view(out[i], image, mean, int(top), int(left), bool(plan.flips[i]),
                   None if shifts is None else shifts[i])


def write_ten_crops(out: np.ndarray, images, mean: np.ndarray) -> None:
    """Fill out (n, 10, 3, crop, crop) with each image's 10 views, in TEN_CROP_ORDER."""
    crop, base = out.shape[-1], mean.shape[-1]
    offsets = ten_crop_offsets(base, crop)
    for i, image in enumerate(images):
        for v, (top, left, flip) in enumerate(offsets):
            write_view(out[i, v], image, mean, top, left, flip)


def write_u8_views(out: np.ndarray, images, offsets: np.ndarray, flips: np.ndarray) -> None:
    """Fill out (n, 3, crop, crop) uint8 with each planar uint8 image's crop at offsets[i],
    mirrored where flips[i]: the pixels write_view starts from, before the mean and shift."""
    crop = out.shape[-1]
    for i, image in enumerate(images):
        top, left = int(offsets[i][0]), int(offsets[i][1])
        view = image[:, top:top + crop, left:left + crop]
        out[i] = view[:, :, ::-1] if flips[i] else view


@dataclass(frozen=True)
class InputTransform:
    """What turns a U8Batch into the network's float input, the same for every batch of a run:
    the planar mean image (3, base, base) float32 in 0..255 units, and the PCA colour shift
    (pca None or sigma 0: none) drawn by kernel/colour.py's Philox key from `seed`."""

    mean: np.ndarray
    pca: PCA | None
    sigma: float
    seed: int

    @property
    def shifts(self) -> bool:
        return self.pca is not None and self.sigma > 0

    def pca_constants(self) -> np.ndarray:
        """float64 (13,) for the device kernel (zeros without a shift)."""
        if not self.shifts:
            return np.zeros(13, np.float64)
        return pca_constants(self.sigma, self.pca.eigenvalues, self.pca.eigenvectors)

    def same_as(self, other: InputTransform | None) -> bool:
        return other is self or (other is not None and self.seed == other.seed
                                 and self.sigma == other.sigma
                                 and np.array_equal(self.mean, other.mean)
                                 and np.array_equal(self.pca_constants(),
                                                    other.pca_constants()))


@dataclass(frozen=True)
class U8Batch:
    """A training batch as it crosses the bus: uint8 crops (n, 3, crop, crop), already cropped
    at offsets (n, 2) (top, left) and mirrored where flips (n,), of the images at positions
    first … first+n−1 of epoch `epoch`'s order. `to_float()` is the float32 input the host path
    (write_planned_views with the Philox colour shifts) gives; a device backend computes the
    same on the device (kernel/colour.py's PREPARE_INPUT) from `header()` and the transform's
    mean and constants, kept there."""

    pixels: np.ndarray
    offsets: np.ndarray
    flips: np.ndarray
    transform: InputTransform
    epoch: int
    first: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape

    def __len__(self) -> int:
        return len(self.pixels)

    def shifts(self) -> np.ndarray | None:
        """float32 (n, 3), or None without a colour shift."""
        t = self.transform
        if not t.shifts:
            return None
        return colour_shifts(colour_normals(t.seed, self.epoch, self.first, len(self)),
                             t.sigma, t.pca.eigenvalues, t.pca.eigenvectors)

    def header(self) -> np.ndarray:
        """uint32 (5 + n,): the per-step words the device kernel reads (kernel/colour.py)."""
        return input_header(self.transform.seed, self.epoch, self.first,
                            self.transform.shifts, self.offsets, self.flips)

    def to_float(self) -> np.ndarray:
        """float32 (n, 3, crop, crop): crop(image) − crop(mean) + shift, as write_view."""
        n, crop = len(self), self.pixels.shape[-1]
        out = np.empty((n, 3, crop, crop), np.float32)
        mean, shifts = self.transform.mean, self.shifts()
        for i in range(n):
            top, left = int(self.offsets[i][0]), int(self.offsets[i][1])
            means = mean[:, top:top + crop, left:left + crop]
            if self.flips[i]:
                means = means[:, :, ::-1]
            out[i] = self.pixels[i]
            out[i] -= means
            if shifts is not None:
                out[i] += shifts[i][:, None, None]
        return out
