"""Write small image folders for the data tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save(path: Path, image, **options) -> Path:
    """Save a PIL image or a uint8 (H, W, 3) array to `path` (format from the extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, **options)
    return path


def coordinate_image(size: int) -> np.ndarray:
    """uint8 (size, size, 3): red = row, green = column, blue = 7. size <= 256."""
    rows, cols = np.mgrid[0:size, 0:size]
    return np.stack([rows, cols, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def random_images(rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
    return [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(count)]


def write_folder(root: Path, images: dict[str, dict[str, list[np.ndarray]]]) -> Path:
    """Write {split: {class: [arrays]}} as lossless PNGs root/split/class/NNN.png."""
    for split, classes in images.items():
        for name, arrays in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, array in enumerate(arrays):
                save(folder / f"{i:03d}.png", array)
    return root
