"""A small ImageFolder made here, and short training runs on it."""
import numpy as np
from PIL import Image

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
TINY = (ROOT / "examples" / "tiny-alexnet.net").read_text()


def tiny_spec(**recipe) -> str:
    """tiny-alexnet with its recipe lines replaced (e.g. schedule='none', batch='8')."""
    lines = TINY.split("train\n")[0].splitlines()
    out = "\n".join(lines) + "\ntrain\n"
    defaults = {"batch": "8", "epochs": "50", "sgd": "lr 0.01 momentum 0.9 weight_decay 0.0005",
                "schedule": "none", "augment": "crop 64 from 72 flip pca 0.1"}
    defaults.update(recipe)
    return out + "".join(f"  {k} {v}\n" for k, v in defaults.items() if v is not None)


def make_folder(root, classes=10, train=4, val=2, size=(80, 90), seed=0):
    """Blobs of a class-dependent colour on noise, as PNG/JPEG files."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
                img[20:60, 20:60] = (25 * c, 255 - 25 * c, (80 * c) % 256)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


