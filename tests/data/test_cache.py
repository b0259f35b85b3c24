"""The prepared cache's checksums: a truncated or corrupted shard is found, named, and decoded
again from its source files, or left out when they are gone; never read as images. The
oracle is the image folder itself, decoded by open_dataset."""
import json
import os
import shutil

import numpy as np
import pytest

import netspec.data.cache as cache
from netspec.data import open_dataset, prepare_dataset
from netspec.data.cache import MANIFEST_NAME


@pytest.fixture
def prepared(small_demo, tmp_path):
    source = shutil.copytree(small_demo, tmp_path / "src")
    prepare_dataset(source, tmp_path / "cache", base=24, workers=0, progress=False)
    manifest = json.loads((tmp_path / "cache" / MANIFEST_NAME).read_text())
    return source, tmp_path / "cache", manifest


def shard_names(manifest, split="train"):
    return [name for name, count in manifest["splits"][split]["shards"] if count]


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1000)


def flip_bytes_keep_mtime(path):
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))   # only ctime tells it was written


def same_images(ds, folder, split="train"):
    assert ds.size(split) == folder.size(split)
    return all(np.array_equal(ds.image(split, i), folder.image(split, i))
               for i in range(ds.size(split)))


@pytest.mark.parametrize("damage", [truncate, flip_bytes_keep_mtime])
def test_a_damaged_shard_is_named_and_decoded_again(prepared, damage, data_warnings):
    source, root, manifest = prepared
    name = shard_names(manifest)[1]
    damage(root / name)
    ds = open_dataset(root)
    assert any(name in w and "damaged" in w and "decoded it again" in w
               for w in data_warnings()), data_warnings()
    assert same_images(ds, open_dataset(source, base=24))
    # repaired on disk: the next open finds nothing wrong
    assert cache.verify_shards(root, json.loads((root / MANIFEST_NAME).read_text())) == {}


def test_without_its_sources_a_damaged_shard_is_left_out(prepared, data_warnings):
    source, root, manifest = prepared
    folder = open_dataset(source.rename(source.parent / "moved"), base=24)   # the plan's is gone
    names = shard_names(manifest)
    counts = dict(map(tuple, manifest["splits"]["train"]["shards"]))
    start = sum(counts[n] for n in names[:1])
    bad = names[1]
    flip_bytes_keep_mtime(root / bad)
    ds = open_dataset(root)
    assert any(bad in w and f"its {counts[bad]} images are left out" in w
               for w in data_warnings()), data_warnings()
    assert ds.size("train") == folder.size("train") - counts[bad]
    gone = range(start, start + counts[bad])
    kept = [i for i in range(folder.size("train")) if i not in gone]
    assert np.array_equal(ds.labels("train"), folder.labels("train")[kept])
    for j, i in enumerate(kept):
        assert np.array_equal(ds.image("train", j), folder.image("train", i))
        assert ds.path("train", j).name == folder.path("train", i).name
    left_out = {p for p, why in ds.skipped if bad in why}
    assert left_out == {str(folder.path("train", i).relative_to(folder.root)) for i in gone}
    assert same_images(open_dataset(root), folder, "val")


def test_a_verified_shard_is_not_read_again_until_it_changes(prepared, monkeypatch):
    source, root, manifest = prepared
    reads = []
    real = cache.file_crc32
    monkeypatch.setattr(cache, "file_crc32", lambda p: reads.append(p) or real(p))
    open_dataset(root)
    assert reads == []                # prepare verified every shard and recorded it
    name = shard_names(manifest)[0]
    os.utime(root / name)              # touched: read and checked once more
    open_dataset(root)
    open_dataset(root)
    assert [p.name for p in reads] == [os.path.basename(name)]
