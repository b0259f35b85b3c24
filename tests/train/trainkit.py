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


# a net small enough for a run to take seconds: one conv, one overlapping pool, the head
MINI_NET = """\
network mini
input   3x16x16
classes 10
gpus    1
init weight gauss(0.05) bias 0
conv    conv1  filters 4  size 3 stride 1 pad 1  relu
maxpool pool1  size 3 stride 2
fc      fc8    outputs 10
softmax prob
"""


def mini_spec(**recipe) -> str:
    """MINI_NET with a recipe: batch 8, 3 epochs, no schedule, 16x16 crops of 20x20, unless
    `recipe` replaces a line (e.g. epochs=1000, sgd='lr 0.01 momentum 0.9 ...')."""
    lines = {"batch": "8", "epochs": "3", "sgd": "lr 0.01 momentum 0.9 weight_decay 0.0005",
             "schedule": "none", "augment": "crop 16 from 20"}
    lines.update(recipe)
    return MINI_NET + "train\n" + "".join(f"  {k} {v}\n" for k, v in lines.items())


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


