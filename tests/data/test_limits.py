"""Resources a data command takes are bounded by the work and the machine: loader workers by
the batches and the usable cores, the folder walk by a depth (iterative, so no tree raises
RecursionError)."""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netspec.data import open_dataset
from netspec.data.folder import list_image_folder
from netspec.data.processes import bound_workers, usable_cores
from netspec.data.walk import MAX_DEPTH


def png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 10, 3), value, np.uint8)).save(path, format="PNG")


def deep_folder(top: Path, depth: int) -> Path:
    """top/d/d/.../d, `depth` folders below top (made one level at a time, relative to the
    last, so no path the kernel sees gets long)."""
    here = os.getcwd()
    os.makedirs(top, exist_ok=True)
    os.chdir(top)
    try:
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        Image.fromarray(np.full((10, 10, 3), 7, np.uint8)).save("bottom.png", format="PNG")
    finally:
        os.chdir(here)
    return top


def remove_deep_folder(top: Path) -> None:
    """Remove what deep_folder made, bottom up without recursion (shutil.rmtree, and so
    pytest's own clean-up of old temporary folders, recurses once per level)."""
    here = os.getcwd()
    os.chdir(top)
    depth = 0
    try:
        while os.path.isdir("d"):
            os.chdir("d")
            depth += 1
        if os.path.exists("bottom.png"):
            os.remove("bottom.png")
        for _ in range(depth):
            os.chdir("..")
            os.rmdir("d")
    finally:
        os.chdir(here)


@pytest.fixture
def deep(tmp_path):
    top = tmp_path / "data" / "train" / "a" / "deep"
    deep_folder(top, 1100)
    yield tmp_path / "data"
    remove_deep_folder(top)


def test_a_tree_1100_folders_deep_is_walked_and_its_depths_counted(deep):
    root = deep
    for cls, v in (("a", 50), ("b", 200)):
        for i in range(2):
            png(root / "train" / cls / f"{i}.png", v)
            png(root / "val" / cls / f"{i}.png", v)
    png(root / "train" / "a" / "sub" / "s.png", 60)     # a little depth is used as before
    listing = list_image_folder(root)
    train = listing.splits["train"]
    assert sorted(train.paths) == ["train/a/0.png", "train/a/1.png", "train/a/sub/s.png",
                                   "train/b/0.png", "train/b/1.png"]
    counts = Counter(kind for _, kind in listing.report.skipped)
    assert counts == Counter({"too deep": 1})
    (skipped, _), = listing.report.skipped
    # the first folder not entered is MAX_DEPTH + 1 below the class folder
    assert skipped.startswith("train/a/deep/d/")
    assert len(skipped.split("/")) - 2 == MAX_DEPTH + 1
    assert "1 too deep" in listing.report.summary(str(root))


def test_bound_workers_by_cores_and_by_tasks(caplog):
    cores = usable_cores()
    assert cores == len(os.sched_getaffinity(0))
    assert bound_workers(0, 4) == 0
    assert bound_workers(1, 4) == 1
    with caplog.at_level(logging.WARNING, logger="netspec.data"):
        assert bound_workers(200, 4) == min(cores, 4)
        assert bound_workers(200, 4) == min(cores, 4)      # noted once
        assert bound_workers(3, 1) == 1
    notes = [r.getMessage() for r in caplog.records]
    assert notes[0] == (f"note: 200 loader workers asked for; starting {min(cores, 4)} "
                        f"({cores} usable cores, 4 batches)")
    assert len([n for n in notes if "200 loader" in n]) == 1


@pytest.fixture
def four_batches(tmp_path):
    root = tmp_path / "data"
    for cls, v in (("a", 50), ("b", 200)):
        for i in range(4):
            png(root / "train" / cls / f"{i}.png", v + i)
        png(root / "val" / cls / "0.png", v)
    return open_dataset(root, base=8)


def test_j200_on_four_batches_starts_at_most_one_worker_per_core_and_batch(four_batches):
    loader = four_batches.loader("train", batch_size=2, crop=8, workers=200)
    assert loader.workers_asked == 200 and len(loader) == 4
    assert loader.workers == min(usable_cores(), 4)
    reference = [(x.copy(), y.copy()) for x, y in
                 four_batches.loader("train", batch_size=2, crop=8, workers=0)]
    got = []
    for x, y in loader:
        assert len(loader.worker_pids) == loader.workers
        got.append((x.copy(), y.copy()))
    # the bound changes nothing in what is loaded
    assert len(got) == 4
    for (a, b), (c, d) in zip(got, reference):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_workers_are_bounded_by_the_batches_left_on_resume(four_batches):
    loader = four_batches.loader("train", batch_size=2, crop=8, workers=200, start_batch=3)
    assert loader.workers == 1
