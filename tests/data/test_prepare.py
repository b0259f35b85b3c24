"""prepare_dataset: a cache that reads back exactly like the folder, resumable, atomic."""
import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from click.testing import CliRunner

import netspec.data.shards as shards
from netspec.cli.data import prepare
from netspec.data import open_dataset, prepare_dataset
from netspec.data.cache import MANIFEST_NAME, is_prepared_cache
from netspec.errors import DataError

from .imagefiles import random_images, write_folder


def collect(loader):
    with loader:
        return [(x.copy(), y.copy()) for x, y in loader]


def test_cache_gives_the_same_batches_as_the_jpeg_folder(small_demo, tmp_path):
    folder = open_dataset(small_demo, base=24)
    cache = prepare_dataset(small_demo, tmp_path / "cache", base=24, workers=2, progress=False)
    assert cache.kind == "cache" and is_prepared_cache(tmp_path / "cache")
    reopened = open_dataset(tmp_path / "cache")
    assert reopened.base == 24 and reopened.classes == folder.classes
    assert np.array_equal(reopened.mean, folder.mean)
    assert np.array_equal(reopened.pca.eigenvectors, folder.pca.eigenvectors)
    for split in ("train", "val"):
        assert np.array_equal(reopened.labels(split), folder.labels(split))
    for kwargs in [dict(split="train", seed=4, epoch=1, workers=2), dict(split="val")]:
        a = collect(folder.loader(batch_size=16, crop=20, **kwargs))
        b = collect(reopened.loader(batch_size=16, crop=20, **kwargs))
        assert len(a) == len(b) > 0
        for (xa, ya), (xb, yb) in zip(a, b):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert np.array_equal(reopened.image("val", 5), folder.image("val", 5))
    assert reopened.path("val", 5) == folder.path("val", 5)


def test_cache_layout_is_memory_mappable_npy(small_demo, tmp_path):
    prepare_dataset(small_demo, tmp_path / "c", base=24, workers=0, progress=False)
    manifest = json.loads((tmp_path / "c" / MANIFEST_NAME).read_text())
    total = 0
    for name, count in manifest["splits"]["train"]["shards"]:
        shard = np.load(tmp_path / "c" / name, mmap_mode="r")
        assert isinstance(shard, np.memmap) and shard.dtype == np.uint8
        assert shard.shape == (count, 3, 24, 24)
        total += count
    assert total == manifest["splits"]["train"]["count"] == 120
    assert json.loads((tmp_path / "c" / "classes.json").read_text()) == manifest["classes"]
    mean = np.load(tmp_path / "c" / "mean.npy")
    assert mean.dtype == np.float32 and mean.shape == (24, 24, 3)


def prepared_files(out):
    return {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_resume_after_an_interruption_redoes_only_unfinished_shards(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    write_folder(tmp_path / "data", {"train": {"a": random_images(rng, 10, 8),
                                               "b": random_images(rng, 10, 8)},
                                     "val": {"a": random_images(rng, 4, 8)}})
    clean = prepare_dataset(tmp_path / "data", tmp_path / "clean", base=8, workers=1,
                            progress=False)
    real = shards.decode_shard
    calls, interrupt_at = [], [3]

    def interrupted(job):
        calls.append((job.split, job.index))
        if len(calls) == interrupt_at[0]:
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of the third shard
        return real(job)

    monkeypatch.setattr(shards, "decode_shard", interrupted)
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(tmp_path / "data", out, base=8, workers=0, progress=False)
    assert not is_prepared_cache(out)
    before = prepared_files(out)
    assert len([p for p in before if p.suffix == ".npz"]) == 2  # two shards were finished
    calls.clear()
    interrupt_at[0] = None
    resumed = prepare_dataset(tmp_path / "data", out, base=8, workers=0, progress=False)
    assert len(calls) > 0 and ("train", 0) not in calls and ("train", 1) not in calls
    after = prepared_files(out)
    assert all(after[p] == t for p, t in before.items() if p.suffix in (".npy", ".npz")
               and p.parent.name in ("train", "val"))
    assert not list(out.rglob("*.tmp"))
    for split in ("train", "val"):
        assert np.array_equal(resumed.labels(split), clean.labels(split))
        for i in range(resumed.size(split)):
            assert np.array_equal(resumed.image(split, i), clean.image(split, i))
    assert np.array_equal(resumed.mean, clean.mean)
    # A third run has nothing to do.
    calls.clear()
    prepare_dataset(tmp_path / "data", out, base=8, workers=0, progress=False)
    assert calls == []


def test_a_cache_of_other_data_or_base_is_refused(small_demo, tmp_path):
    prepare_dataset(small_demo, tmp_path / "c", base=24, workers=0, progress=False)
    with pytest.raises(DataError, match="different base size"):
        prepare_dataset(small_demo, tmp_path / "c", base=32, workers=0, progress=False)
    with pytest.raises(DataError, match="holds 24×24 images, not base 32"):
        open_dataset(tmp_path / "c", base=32)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and is not a netspec cache"):
        prepare_dataset(small_demo, tmp_path / "other", base=24, workers=0, progress=False)
    with pytest.raises(DataError, match="must not be inside the data"):
        prepare_dataset(small_demo, small_demo / "train" / "cache", base=24, workers=0,
                        progress=False)


def test_skipped_files_are_recorded_in_the_cache(tmp_path, data_warnings):
    rng = np.random.default_rng(1)
    write_folder(tmp_path / "data", {"train": {"a": random_images(rng, 3, 8)}})
    (tmp_path / "data" / "train" / "a" / "bad.png").write_text("nope")
    cache = prepare_dataset(tmp_path / "data", tmp_path / "c", base=8, workers=0, progress=False)
    assert cache.size("train") == 3 and [p for p, _ in cache.skipped] == ["train/a/bad.png"]
    assert sum("skipped 1 unreadable" in line for line in data_warnings()) == 1
    assert [p for p, _ in open_dataset(tmp_path / "c").skipped] == ["train/a/bad.png"]


def test_prepare_command(small_demo, tmp_path):
    result = CliRunner().invoke(prepare, ["--data", str(small_demo), "--out",
                                          str(tmp_path / "c"), "-j", "0", "--base", "24"])
    assert result.exit_code == 0, result.output
    assert "10 classes, train 120, val 30 images (24×24)" in result.output
    assert open_dataset(tmp_path / "c").size("val") == 30


def test_prepare_command_passes_data_errors_up(tmp_path):
    result = CliRunner().invoke(prepare, ["--data", str(tmp_path / "missing"), "--out",
                                          str(tmp_path / "c")])
    assert isinstance(result.exception, DataError)
    assert "does not exist" in str(result.exception)


def test_ctrl_c_during_prepare_leaves_no_workers_and_a_rerun_finishes(tmp_path):
    rng = np.random.default_rng(3)
    write_folder(tmp_path / "data", {"train": {"a": random_images(rng, 60, 8),
                                               "b": random_images(rng, 60, 8)}})
    # Decoding is slowed down so that the interrupt lands in the middle of the work.
    script = textwrap.dedent(f"""
        import os, sys, time
        import netspec.data.shards as shards
        from netspec.data import prepare_dataset
        real = shards.decode_image
        def slow(*args):
            time.sleep(0.01)
            return real(*args)
        shards.decode_image = slow
        print("start", flush=True)
        try:
            prepare_dataset({str(tmp_path / "data")!r}, {str(tmp_path / "cache")!r}, base=8,
                            workers=2, progress=False)
        except KeyboardInterrupt:
            me = str(os.getpid())
            live = []
            for p in os.listdir("/proc"):
                try:
                    stat = open(f"/proc/{{p}}/stat").read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if p.isdigit() and stat[1] == me and stat[0] != "Z":
                    live.append(p)
            print("interrupted, children:", len(live), flush=True)
            sys.exit(3)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    deadline = time.time() + 20
    while time.time() < deadline and not list((tmp_path / "cache").glob("train/*.npz")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "interrupted, children: 0" in out, out
    assert not is_prepared_cache(tmp_path / "cache")
    done = sorted(p.name for p in (tmp_path / "cache" / "train").glob("*.npz"))
    assert done  # some shards were finished before the interrupt
    stamps = {n: (tmp_path / "cache" / "train" / n).stat().st_mtime_ns for n in done}
    cache = prepare_dataset(tmp_path / "data", tmp_path / "cache", base=8, workers=2,
                            progress=False)
    assert cache.size("train") == 120
    assert all((tmp_path / "cache" / "train" / n).stat().st_mtime_ns == t
               for n, t in stamps.items())
