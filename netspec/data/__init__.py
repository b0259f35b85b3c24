"""Data: ImageNet's on-disk layouts (class folders, ILSVRC2012 with its devkit, Kaggle
CLS-LOC; layouts.py), one tree walk that counts every odd entry by kind (walk.py), the
paper's preprocessing (§2) and augmentation (§4.1), a prepared cache, the demo dataset, and
the batch pipeline.

    ds = open_dataset("demo")                   # or any accepted layout, or a cache
    check_class_count(ds.classes, num_outputs)
    with ds.loader("train", batch_size=128, crop=64, workers=2, epoch=e) as batches:
        for x, y in batches:                    # x float32 (N, 3, crop, crop), y int64 (N,)
            ...
    for x, y in ds.ten_crop_batches("val", batch_size=16, crop=64):
        ...                                     # x (N, 10, 3, crop, crop)

Warnings go to the "netspec.data" logger; every problem with the data is a DataError.
"""
from netspec.data.augment import TEN_CROP_ORDER, ten_crop, ten_crop_offsets
from netspec.data.dataset import DEMO, Dataset
from netspec.data.folder import check_class_count
from netspec.data.loader import Loader
from netspec.data.open import open_dataset
from netspec.data.prepare import prepare_dataset
from netspec.data.stats import PCA

__all__ = [
    "DEMO", "PCA", "TEN_CROP_ORDER", "Dataset", "Loader", "check_class_count", "open_dataset",
    "prepare_dataset", "ten_crop", "ten_crop_offsets",
]
