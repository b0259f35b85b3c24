"""Decode one image file into the paper's fixed-size input (§2).

"Given a rectangular image, we first rescaled the image such that the shorter side was of
length 256, and then cropped out the central 256×256 patch." `decode_image` does exactly that
for any `base`, in one resampling step: it resamples only the central square of the source
(Pillow's `resize(box=...)`), which equals rescale-then-crop without resizing the parts that
are thrown away (a 4000×20 panorama costs no more than a 20×20 image).

Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling (`Image.draft`),
never below the resolution the rescale needs.

Every Pillow mode becomes 8-bit RGB:
- L, 1, P, CMYK, YCbCr, LA, PA: Pillow's own conversion;
- RGBA, PA, LA: alpha is dropped (the colour under it is kept), as torchvision's loader does;
- 16-bit and 32-bit integer grey (I;16, I;16B, I): scaled from 0..65535 to 0..255;
- F (float grey): clipped to 0..255.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

# Pillow modes that hold 16- or 32-bit integer grey levels; the value range is 0..65535.
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

_RESAMPLE = Image.Resampling.BILINEAR  # antialiased when downscaling (Pillow scales the kernel)


class UnreadableImage(Exception):
    """A file that has an image extension but can't be decoded. The message says why."""


def is_image_name(name: str) -> bool:
    """True when the file name has one of the accepted extensions, in any case."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def decode_image(path: str | os.PathLike, base: int) -> np.ndarray:
    """Return the image at `path` as uint8 (base, base, 3) RGB, rescaled and centre-cropped.

    Raises UnreadableImage for a file that isn't a readable image (truncated, corrupt, not an
    image at all, an unsupported mode). Deterministic: the same file gives the same pixels.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns about big images and palette transparency; neither matters here.
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return _decode_open_image(img, base)
    except UnreadableImage:
        raise
    except MemoryError:
        raise
    except Image.DecompressionBombError:
        raise UnreadableImage("too many pixels (Pillow's decompression-bomb limit)") from None
    except Exception as exc:  # any decoder failure means a bad file, never a crash
        raise UnreadableImage(_describe(exc)) from None


def _decode_open_image(img: Image.Image, base: int) -> np.ndarray:
    width, height = img.size
    if width < 1 or height < 1:
        raise UnreadableImage("image has no pixels")
    extent = (float(width), float(height))
    if img.format == "JPEG":
        # Ask for the smallest DCT scale that still gives at least `base` on the shorter side.
        side = min(width, height)
        wanted = (max(1, -(-width * base // side)), max(1, -(-height * base // side)))
        drafted = img.draft("RGB", wanted)
        if drafted is not None:
            extent = drafted[1][2], drafted[1][3]  # the image's extent in decoded pixels
    img.load()  # decode now, so a truncated file fails here
    img, extent = _apply_exif_orientation(img, extent)
    rgb = _to_rgb(img)
    width, height = extent
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    out = rgb.resize((base, base), _RESAMPLE, box=(left, top, left + side, top + side))
    array = np.asarray(out, dtype=np.uint8)
    if array.shape != (base, base, 3):
        raise UnreadableImage(f"decoded to shape {array.shape}")
    return array


def _apply_exif_orientation(
    img: Image.Image, extent: tuple[float, float]
) -> tuple[Image.Image, tuple[float, float]]:
    """Turn a camera photo upright (EXIF orientation 2..8); other images are returned as is."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not worth rejecting the image for
        return img, extent
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return img, extent
    upright = ImageOps.exif_transpose(img)
    if orientation >= 5:  # 5..8 swap width and height
        extent = extent[1], extent[0]
    return upright, extent


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_GREY_MODES:
        grey = np.asarray(img).astype(np.int64)
        grey = (np.clip(grey, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        grey = np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32)), 0, 255)
        return Image.fromarray(np.rint(grey).astype(np.uint8), "L").convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise UnreadableImage(f"can't convert mode {img.mode} to RGB ({exc})") from None


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image Pillow can identify"
    if "truncated" in text.lower():
        return "truncated image file"
    return text
