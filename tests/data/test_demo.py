"""The demo dataset: deterministic, ImageFolder layout, made atomically in the user cache."""
import os

import numpy as np
from PIL import Image

from netspec.data import open_dataset
from netspec.data.demo import DEMO_CLASSES, demo_dir, ensure_demo, generate_demo


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_same_seed_same_files(tmp_path, monkeypatch):
    built = []
    for cache in ("a", "b"):
        monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path / cache))
        built.append(ensure_demo(seed=3, train_per_class=3, val_per_class=1))
    assert built[0].parent == tmp_path / "a" and built[1].parent == tmp_path / "b"
    a, b = files(built[0]), files(built[1])
    assert len(a) == 40 and a == b
    generate_demo(tmp_path / "c", seed=4, train_per_class=3, val_per_class=1)
    assert files(tmp_path / "c") != a


def test_layout_and_image_sizes(tmp_path):
    generate_demo(tmp_path, seed=0, train_per_class=4, val_per_class=2)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == sorted(DEMO_CLASSES)
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == sorted(DEMO_CLASSES)
    sizes = set()
    for path in tmp_path.rglob("*.jpg"):
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert 48 <= min(img.size) and max(img.size) <= 160
            sizes.add(img.size)
    assert len(sizes) > 40  # varied sizes and aspect ratios


def test_classes_differ_where_they_should(tmp_path):
    # Horizontal stripes vary down a column, vertical stripes along a row.
    generate_demo(tmp_path, seed=0, train_per_class=6, val_per_class=0)
    ds = open_dataset(tmp_path, base=32)
    labels = ds.labels("train")
    h, v = DEMO_CLASSES.index("horizontal_stripes"), DEMO_CLASSES.index("vertical_stripes")
    for i in range(len(labels)):
        if labels[i] in (h, v):
            grey = ds.image("train", i).astype(float).mean(axis=2)
            down, across = np.abs(np.diff(grey, axis=0)).mean(), np.abs(np.diff(grey, axis=1)).mean()
            assert (down > 2 * across) if labels[i] == h else (across > 2 * down)


def test_ensure_demo_builds_once_in_the_cache_dir(user_cache):
    path = ensure_demo(seed=1, train_per_class=2, val_per_class=1)
    assert path == demo_dir(1, 2, 1) and path.parent == user_cache
    assert (path / "demo.json").is_file()
    stamp = os.stat(path / "train" / "circle" / "circle_0000.jpg").st_mtime_ns
    assert ensure_demo(seed=1, train_per_class=2, val_per_class=1) == path
    assert os.stat(path / "train" / "circle" / "circle_0000.jpg").st_mtime_ns == stamp
    assert [p.name for p in user_cache.iterdir()] == [path.name]  # no temporary folder left


def test_default_demo_name_and_open_dataset_demo(user_cache, monkeypatch):
    import netspec.data.demo as demo

    assert demo_dir() == user_cache / "demo-v1"
    # The full-size demo takes seconds to make; the same code at 2 + 1 images a class doesn't.
    monkeypatch.setattr(demo, "TRAIN_PER_CLASS", 2)
    monkeypatch.setattr(demo, "VAL_PER_CLASS", 1)
    ds = open_dataset("demo")
    assert ds.base == demo.DEMO_BASE and ds.size("train") == 20 and ds.size("val") == 10
    # read as a prepared cache of itself, made once next to the JPEGs: the same pixels, labels
    # and statistics as decoding the folder
    assert ds.kind == "cache" and ds.root == user_cache / "demo-v1-prepared-72"
    assert sorted(p.name for p in user_cache.iterdir()) == ["demo-v1", "demo-v1-prepared-72"]
    folder = open_dataset(user_cache / "demo-v1", base=demo.DEMO_BASE)
    for split in ("train", "val"):
        assert np.array_equal(ds.labels(split), folder.labels(split))
        for i in range(ds.size(split)):
            assert np.array_equal(ds.image(split, i), folder.image(split, i))
    assert np.array_equal(ds.mean, folder.mean)
    manifest = ds.root / "netspec-cache.json"
    stamp = manifest.stat().st_mtime_ns
    assert open_dataset("demo").root == ds.root and manifest.stat().st_mtime_ns == stamp


def test_a_generation_killed_midway_is_cleaned_up_and_made_whole(user_cache, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    code = ("from netspec.data.demo import ensure_demo; "
            "ensure_demo(seed=2, train_per_class=20, val_per_class=1, progress=False)")
    p = subprocess.Popen([sys.executable, "-c", code],
                         env={**os.environ, "NETSPEC_CACHE_DIR": str(user_cache)})
    deadline = time.time() + 120
    while time.time() < deadline and not any(user_cache.glob(".demo-*/train/*/*.jpg")):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert list(user_cache.glob(".demo-*"))            # the killed one's half-made folder
    path = ensure_demo(seed=2, train_per_class=20, val_per_class=1, progress=False)
    assert [q.name for q in user_cache.iterdir()] == [path.name]   # and it is gone now
    generate_demo(tmp_path / "fresh", seed=2, train_per_class=20, val_per_class=1)
    assert files(path) == files(tmp_path / "fresh")
