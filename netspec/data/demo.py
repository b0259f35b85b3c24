"""The demo dataset (`--data demo`): 10 classes of drawn shapes and textures, made on first use.

Each image is a JPEG of random size (48..160 px a side, any aspect ratio) with a random
background (flat or a gradient, with noise) and, in a random colour, one of:

    circle, square, triangle, star, cross, ring      one shape, randomly placed, sized, turned
    horizontal_stripes, vertical_stripes,
    checkerboard, dots                               a texture over the whole image

Shapes lie inside the image's central square, which the §2 centre crop keeps. Every image is
drawn from its own random stream (seed, class, split, index), so the set is the same on every
machine with the same Pillow/libjpeg, however it is generated. A small AlexNet-shaped net
learns it on 64×64 crops in a few minutes on a CPU (base DEMO_BASE, crop DEMO_CROP).

It is written to <user cache>/demo-v1 (netspec/cachedir.py) in a temporary folder that is
renamed into place when complete, so an interrupted generation leaves nothing half-made behind.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from netspec.cachedir import user_cache_dir
from netspec.data.shards import ProgressBar, terminal_only
from netspec.errors import DataError

log = logging.getLogger("netspec.data")

DEMO_VERSION = 1
DEMO_CLASSES = (
    "checkerboard", "circle", "cross", "dots", "horizontal_stripes",
    "ring", "square", "star", "triangle", "vertical_stripes",
)
DEMO_BASE = 72  # suggested base and crop for the demo; any others work
DEMO_CROP = 64
TRAIN_PER_CLASS = 300
VAL_PER_CLASS = 50

_MIN_SIDE, _MAX_SIDE = 48, 160
_SUPERSAMPLE = 2  # shapes are drawn at twice the size and scaled down, for smooth edges
_SPLIT_IDS = {"train": 0, "val": 1}


def demo_dir(seed: int = 0, train_per_class: int | None = None,
             val_per_class: int | None = None) -> Path:
    """Where the demo set of these parameters lives (default sizes: TRAIN/VAL_PER_CLASS)."""
    train_per_class = TRAIN_PER_CLASS if train_per_class is None else train_per_class
    val_per_class = VAL_PER_CLASS if val_per_class is None else val_per_class
    name = f"demo-v{DEMO_VERSION}"
    if (seed, train_per_class, val_per_class) != (0, TRAIN_PER_CLASS, VAL_PER_CLASS):
        name += f"-seed{seed}-{train_per_class}x{val_per_class}"
    return user_cache_dir() / name


def ensure_demo(seed: int = 0, train_per_class: int | None = None,
                val_per_class: int | None = None, progress: bool = True) -> Path:
    """The demo dataset's folder, generated first if it isn't there yet."""
    train_per_class = TRAIN_PER_CLASS if train_per_class is None else train_per_class
    val_per_class = VAL_PER_CLASS if val_per_class is None else val_per_class
    final = demo_dir(seed, train_per_class, val_per_class)

    def make(tmp: Path) -> None:
        log.info("generating the demo dataset in '%s'", final)
        generate_demo(tmp, seed, train_per_class, val_per_class, progress=progress)

    return build_in_place(final, make, lambda path: (path / "demo.json").is_file(),
                          "the demo dataset")


def build_in_place(final: Path, make, complete, what: str) -> Path:
    """Make the folder `final` by make(tmp) in a temporary sibling folder, then rename it into
    place: an interrupted build leaves nothing half-made (a killed one's folder is removed by
    the next build), and of concurrent builds the first to finish wins. complete(path) says
    whether a folder is whole; a whole `final` is returned as it is. DataError, naming
    `what`, when it can't be made or written."""
    if complete(final):
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", dir=final.parent))
    except OSError as exc:
        raise DataError(f"can't create {what} in '{final.parent}' ({exc}); "
                        f"set NETSPEC_CACHE_DIR to a writable folder") from None
    try:
        make(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not complete(final):                # not a concurrent run that finished first
                raise
    except OSError as exc:
        raise DataError(f"can't write {what} to '{final}' ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _remove_abandoned(final: Path) -> None:
    """Remove the half-made folders of generations whose process was killed."""
    for tmp in final.parent.glob(f".{final.name}.*"):
        pid = tmp.name[len(final.name) + 2:].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def generate_demo(root: Path, seed: int = 0, train_per_class: int = TRAIN_PER_CLASS,
                  val_per_class: int = VAL_PER_CLASS, progress: bool = False) -> None:
    """Write the demo dataset's JPEGs under root/train and root/val, then root/demo.json."""
    root = Path(root)
    total = len(DEMO_CLASSES) * (train_per_class + val_per_class)
    with ProgressBar(total=total, desc="demo dataset", unit="img",
                     disable=terminal_only(progress)) as bar:
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for label, name in enumerate(DEMO_CLASSES):
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    rng = np.random.default_rng([seed, label, _SPLIT_IDS[split], i])
                    image, quality = draw_demo_image(name, rng)
                    image.save(folder / f"{name}_{i:04d}.jpg", quality=quality)
                bar.update(count)
    info = {"version": DEMO_VERSION, "seed": seed, "classes": list(DEMO_CLASSES),
            "train_per_class": train_per_class, "val_per_class": val_per_class,
            "base": DEMO_BASE, "crop": DEMO_CROP}
    (root / "demo.json").write_text(json.dumps(info, indent=1))


def draw_demo_image(name: str, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """One demo image of class `name` and its JPEG quality."""
    width, height = (int(v) for v in rng.integers(_MIN_SIDE, _MAX_SIDE + 1, size=2))
    background, ink = _colour_pair(rng)
    k = _SUPERSAMPLE
    canvas = _background(rng, width * k, height * k, background)
    draw = ImageDraw.Draw(canvas)
    side = min(width, height) * k
    square = ((width * k - side) / 2, (height * k - side) / 2)  # the central square's corner
    if name in _TEXTURES:
        _TEXTURES[name](draw, rng, width * k, height * k, side, tuple(ink))
    else:
        radius = side * rng.uniform(0.2, 0.34)
        margin = radius / side
        cx = square[0] + side * rng.uniform(margin, 1 - margin)
        cy = square[1] + side * rng.uniform(margin, 1 - margin)
        _SHAPES[name](draw, rng, cx, cy, radius, tuple(ink))
    image = canvas.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size=(height, width, 3))
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return image, int(rng.integers(70, 96))


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and an ink colour that differ enough to be told apart."""
    while True:
        background, ink = rng.integers(0, 256, size=(2, 3))
        if np.abs(background - ink).sum() >= 180:
            return background, ink


def _background(rng, width: int, height: int, colour: np.ndarray) -> Image.Image:
    if rng.random() < 0.5:
        return Image.new("RGB", (width, height), tuple(int(c) for c in colour))
    other = np.clip(colour + rng.integers(-60, 61, size=3), 0, 255)
    t = np.linspace(0.0, 1.0, height if rng.random() < 0.5 else width, dtype=np.float32)
    ramp = colour[None, :] * (1 - t[:, None]) + other[None, :] * t[:, None]
    if len(t) == height:
        pixels = np.broadcast_to(ramp[:, None, :], (height, width, 3))
    else:
        pixels = np.broadcast_to(ramp[None, :, :], (height, width, 3))
    return Image.fromarray(np.rint(pixels).astype(np.uint8), "RGB")


def _turned(points, cx, cy, angle):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _circle(draw, rng, cx, cy, r, ink):
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=ink)


def _ring(draw, rng, cx, cy, r, ink):
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=ink, width=max(2, int(r * 0.3)))


def _square(draw, rng, cx, cy, r, ink):
    h = r * 0.85
    angle = math.radians(rng.uniform(-15, 15))
    draw.polygon(_turned([(-h, -h), (h, -h), (h, h), (-h, h)], cx, cy, angle), fill=ink)


def _triangle(draw, rng, cx, cy, r, ink):
    start = rng.uniform(0, 2 * math.pi)
    points = [(r * math.cos(start + i * 2 * math.pi / 3), r * math.sin(start + i * 2 * math.pi / 3))
              for i in range(3)]
    draw.polygon(_turned(points, cx, cy, 0.0), fill=ink)


def _star(draw, rng, cx, cy, r, ink):
    start = rng.uniform(0, 2 * math.pi)
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.42
        angle = start + i * math.pi / 5
        points.append((radius * math.cos(angle), radius * math.sin(angle)))
    draw.polygon(_turned(points, cx, cy, 0.0), fill=ink)


def _cross(draw, rng, cx, cy, r, ink):
    a = r * 0.3  # half the arm's width
    outline = [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a),
               (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)]
    draw.polygon(_turned(outline, cx, cy, math.radians(rng.uniform(-15, 15))), fill=ink)


def _period(rng, side: float) -> float:
    return side * rng.uniform(0.09, 0.16)


def _horizontal_stripes(draw, rng, width, height, side, ink):
    period = _period(rng, side)
    y = -rng.uniform(0, period)
    while y < height:
        draw.rectangle((0, y, width, y + period / 2), fill=ink)
        y += period


def _vertical_stripes(draw, rng, width, height, side, ink):
    period = _period(rng, side)
    x = -rng.uniform(0, period)
    while x < width:
        draw.rectangle((x, 0, x + period / 2, height), fill=ink)
        x += period


def _checkerboard(draw, rng, width, height, side, ink):
    cell = _period(rng, side) / 2 * 1.5
    x0, y0 = -rng.uniform(0, 2 * cell), -rng.uniform(0, 2 * cell)
    for row in range(int((height - y0) / cell) + 1):
        for col in range(int((width - x0) / cell) + 1):
            if (row + col) % 2 == 0:
                x, y = x0 + col * cell, y0 + row * cell
                draw.rectangle((x, y, x + cell, y + cell), fill=ink)


def _dots(draw, rng, width, height, side, ink):
    spacing = _period(rng, side) * 1.3
    r = spacing * rng.uniform(0.18, 0.3)
    x0, y0 = rng.uniform(0, spacing), rng.uniform(0, spacing)
    for row in range(int(height / spacing) + 2):
        shift = spacing / 2 if row % 2 else 0.0  # a staggered grid, like polka dots
        for col in range(int(width / spacing) + 2):
            x, y = x0 + shift + (col - 1) * spacing, y0 + (row - 1) * spacing
            draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)


_SHAPES = {"circle": _circle, "ring": _ring, "square": _square, "triangle": _triangle,
           "star": _star, "cross": _cross}
_TEXTURES = {"horizontal_stripes": _horizontal_stripes, "vertical_stripes": _vertical_stripes,
             "checkerboard": _checkerboard, "dots": _dots}
assert set(_SHAPES) | set(_TEXTURES) == set(DEMO_CLASSES)
