"""Miniature ImageNet downloads, laid out as the official tars + devkit and as Kaggle's CLS-LOC.

Each class is a colour (with noise), so a net can learn it from a few tiny images and the
right label of every file is known from how it was made. The devkit's ILSVRC2012_IDs are a
derangement of the sorted-wnid order: a loader that takes ID - 1 as the label gets every val
image wrong.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

# (wnid, meta.mat words), in sorted-wnid order: labels 0..3
SYNSETS = [("n01440764", "tench, Tinca tinca"), ("n01443537", "goldfish, Carassius auratus"),
           ("n01484850", "great white shark, white shark, man-eater"),
           ("n01491361", "tiger shark, Galeocerdo cuvieri")]
WNIDS = [w for w, _ in SYNSETS]
NAMES = ["tench", "goldfish", "great white shark", "tiger shark"]
# ILSVRC2012_ID of each wnid: not the sorted order (no wnid has ID = label + 1)
ILSVRC_ID = {"n01440764": 2, "n01443537": 3, "n01484850": 4, "n01491361": 1}
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30)]
SIZE = (14, 18)  # height, width: not square, rescaled and centre-cropped like ImageNet's


def colour_image(label: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.integers(-25, 26, size=(*SIZE, 3))
    return np.clip(np.array(COLOURS[label]) + noise, 0, 255).astype(np.uint8)


def save_jpeg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=95)


def val_truth(count: int, seed: int = 1) -> list[int]:
    """The true label of val image 1..count: every class equally often, shuffled."""
    labels = np.arange(count) % len(WNIDS)
    return [int(v) for v in np.random.default_rng(seed).permutation(labels)]


def write_train(train_dir: Path, per_class: int, rng) -> None:
    for label, wnid in enumerate(WNIDS):
        for i in range(per_class):
            save_jpeg(train_dir / wnid / f"{wnid}_{i + 1}.JPEG", colour_image(label, rng))


def write_flat_val(val_dir: Path, truth: list[int], rng) -> None:
    for i, label in enumerate(truth, 1):
        save_jpeg(val_dir / f"ILSVRC2012_val_{i:08d}.JPEG", colour_image(label, rng))


def meta_mat_bytes() -> bytes:
    """meta.mat as the devkit has it: a struct array 'synsets' with the 1000 leaves (IDs
    1..1000, num_children 0) first and inner nodes of the hierarchy after them."""
    from scipy.io import savemat

    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
              ("num_children", "O")]
    rows = [(ILSVRC_ID[w], w, words, "a fish", 0) for w, words in SYNSETS]
    rows.sort(key=lambda r: r[0])
    rows.append((5, "n02512053", "fish", "any of various vertebrates", 4))
    synsets = np.empty((len(rows), 1), dtype=fields)
    for i, row in enumerate(rows):
        synsets[i, 0] = row
    buffer = io.BytesIO()
    savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def devkit_files(truth: list[int]) -> dict[str, bytes]:
    ids = "".join(f"{ILSVRC_ID[WNIDS[label]]}\n" for label in truth)
    return {"data/meta.mat": meta_mat_bytes(),
            "data/ILSVRC2012_validation_ground_truth.txt": ids.encode()}


def make_official(root: Path, per_class: int = 6, val: int = 12, tar: bool = False,
                  seed: int = 0) -> tuple[Path, list[int]]:
    """ROOT/train/<wnid>/*.JPEG, ROOT/val/ILSVRC2012_val_*.JPEG, and the devkit as a folder
    or as ILSVRC2012_devkit_t12.tar.gz. Returns (root, true val labels)."""
    rng = np.random.default_rng(seed)
    truth = val_truth(val)
    write_train(root / "train", per_class, rng)
    write_flat_val(root / "val", truth, rng)
    files = devkit_files(truth)
    if tar:
        with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    else:
        for name, data in files.items():
            path = root / "ILSVRC2012_devkit_t12" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root, truth


def make_kaggle(root: Path, per_class: int = 6, val: int = 12, seed: int = 0) -> tuple[Path, list[int]]:
    """The Kaggle CLS-LOC download: ROOT/ILSVRC/Data/CLS-LOC/{train,val},
    ROOT/LOC_val_solution.csv (rows in no particular order, several boxes per image) and
    ROOT/LOC_synset_mapping.txt."""
    rng = np.random.default_rng(seed)
    truth = val_truth(val)
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    write_train(data / "train", per_class, rng)
    write_flat_val(data / "val", truth, rng)
    rows = [f"ILSVRC2012_val_{i:08d},{WNIDS[label]} 1 2 30 40 {WNIDS[label]} 5 6 7 8 "
            for i, label in enumerate(truth, 1)]
    order = np.random.default_rng(seed + 7).permutation(len(rows))
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(rows[i] + "\n" for i in order))
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {words}\n" for w, words in SYNSETS))
    return root, truth


def make_naive_val(official: Path, out: Path) -> Path:
    """What a loader that assumes IDs are in sorted-wnid order builds from the official
    layout: val/<WNIDS[ID - 1]>/ folders. Every val image lands in a wrong class."""
    truth_ids = (official / "ILSVRC2012_devkit_t12" / "data" /
                 "ILSVRC2012_validation_ground_truth.txt").read_text().split()
    out.mkdir(parents=True)
    (out / "train").symlink_to(official / "train")
    for i, id_ in enumerate(truth_ids, 1):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        target = out / "val" / WNIDS[int(id_) - 1] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((official / "val" / name).read_bytes())
    return out
