"""Every odd directory entry is used, or skipped and counted by kind, the same way in the
listing, the dataset fingerprint, prepare and train; never a traceback.

Unreadable permissions can't be seen as root (root reads anything), and the tests run as
root: that case runs in a forked child that drops its privileges to nobody (setuid 65534)
after importing everything, so the kernel really refuses the open."""
import json
import os
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netspec.data import open_dataset, prepare_dataset
from netspec.data.folder import list_image_folder
from netspec.data.walk import printable

SPEC = """network two
input 3x8x8
classes 2
conv c1 filters 4 size 3 relu weight gauss(0.01)
maxpool p1 size 2 stride 2
fc f1 outputs 2 weight gauss(0.01)
softmax prob
train
  batch 2
  epochs 1
  sgd lr 0.001 momentum 0.9 weight_decay 0.0005
  schedule none
"""


def png(path, value=100):
    path = Path(os.fsdecode(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12, 3), value, np.uint8)).save(path, format="PNG")


def odd_tree(root: Path) -> Path:
    """train/a holds 4 plain images, 3 odd but usable ones and one of every skipped kind."""
    a = root / "train" / "a"
    for i in range(4):
        png(a / f"{i}.png")
        png(root / "train" / "b" / f"{i}.png", 200)
    png(root / "val" / "a" / "v.png")
    png(root / "val" / "b" / "v.png", 200)
    # used: a Latin-1 (not UTF-8) name, a name with spaces, an image in a folder named *.jpg
    png(os.fsencode(a) + b"/caf\xe9.png")
    png(a / "with space.png")
    png(a / "fake.jpg" / "inner.png")
    # skipped, by kind
    png(a / "new\nline.png")                                   # odd name
    (a / "dangling.png").symlink_to(root / "nowhere.png")      # dangling symlink
    (a / "loop").symlink_to(a)                                 # symlink loop (a folder)
    (a / "self.png").symlink_to(a / "self.png")                # symlink loop (ELOOP)
    (a / "empty.png").write_bytes(b"")                         # empty file
    (a / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")             # hidden
    png(a / "._0.png")                                         # hidden (AppleDouble)
    png(a / ".ipynb_checkpoints" / "0-checkpoint.png")         # hidden
    png(root / "train" / "__MACOSX" / "a" / "._0.png")          # hidden
    (a / "notes.txt").write_text("hello")                      # not an image
    os.mkfifo(a / "pipe.png")                                  # not a file
    return root


USED_IN_A = {"0.png", "1.png", "2.png", "3.png", "caf\udce9.png", "with space.png",
             "fake.jpg/inner.png"}
SKIPPED = Counter({"hidden": 4, "symlink loop": 2, "odd name": 1, "dangling symlink": 1,
                   "empty file": 1, "not an image": 1, "not a file": 1})


@pytest.fixture
def odd(tmp_path):
    return odd_tree(tmp_path / "data")


def test_listing_uses_odd_names_and_counts_every_skipped_kind(odd):
    listing = list_image_folder(odd)
    train = listing.splits["train"]
    used = {p.removeprefix("train/a/") for p, label in zip(train.paths, train.labels) if label == 0}
    assert used == USED_IN_A
    assert Counter(kind for _, kind in listing.report.skipped) == SKIPPED
    assert "train/a/loop" in listing.report.loops()
    line = listing.report.summary(str(odd))
    assert "\n" not in line and "4 hidden" in line and "2 symlink loop" in line
    assert "train/a/new\\nline.png" in printable("train/a/new\nline.png")


def test_fingerprint_and_scan_take_the_same_walk(odd):
    ds = open_dataset(odd, base=8)          # the fingerprint stats every listed file
    assert ds.size("train") == 11 and ds.size("val") == 2 and ds.skipped == []
    assert Counter(kind for _, kind in ds.tree_skipped) == SKIPPED
    again = open_dataset(odd, base=8)       # the cached scan, found by the same fingerprint
    assert again.size("train") == 11


def test_prepare_takes_the_same_walk_and_records_it(odd, tmp_path):
    cache = prepare_dataset(odd, tmp_path / "cache", base=8, workers=0, progress=False)
    assert cache.size("train") == 11
    manifest = json.loads((tmp_path / "cache" / "netspec-cache.json").read_text())
    assert Counter(kind for _, kind in manifest["tree_skipped"]) == SKIPPED
    files = (tmp_path / "cache" / "train-files.txt").read_bytes().split(b"\n")
    assert b"train/a/caf\xe9.png" in files   # the name's own bytes, not a mangled copy
    reopened = open_dataset(tmp_path / "cache")
    assert reopened.path("train", [str(reopened.path("train", i)) for i in range(11)].index(
        str(odd / "train" / "a" / "caf\udce9.png"))).is_file()


def netspec_cli(*args, cache_dir):
    """The netspec command in a fresh process, as a user runs it: its stdout and stderr."""
    env = {**os.environ, "NETSPEC_CACHE_DIR": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", "netspec.cli", *args], capture_output=True,
                          text=True, errors="replace", env=env, timeout=300)


def test_prepare_train_and_eval_report_the_kinds_without_a_traceback(odd, tmp_path, user_cache):
    r = netspec_cli("prepare", "--data", str(odd), "--out", str(tmp_path / "c"), "-j", "0",
                    "--base", "8", cache_dir=user_cache)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "skipped 11 entries" in r.stderr
    assert "train 11, val 2 images" in r.stdout
    (tmp_path / "s.net").write_text(SPEC)
    r = netspec_cli("train", "--spec", str(tmp_path / "s.net"), "--data", str(odd), "--out",
                    str(tmp_path / "run"), "--backend", "numpy", "--max-steps", "2",
                    "--no-progress", cache_dir=user_cache)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    summary = next(line for line in r.stderr.splitlines() if "skipped 11 entries" in line)
    for kind, n in SKIPPED.items():
        assert f"{n} {kind}" in summary
    assert "symlink loop(s) not followed: train/a/loop" in summary
    assert "11 train / 2 val" in r.stdout
    r = netspec_cli("eval", "--checkpoint", str(tmp_path / "run"), "--backend", "numpy",
                    cache_dir=user_cache)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "skipped 11 entries" in r.stderr and "2 val images" in r.stdout


def test_a_class_folder_linked_twice_is_listed_once(tmp_path):
    for i in range(2):
        png(tmp_path / "train" / "a" / "x" / f"{i}.png")
    (tmp_path / "train" / "a" / "y").symlink_to(tmp_path / "train" / "a" / "x")
    listing = list_image_folder(tmp_path)
    assert len(listing.splits["train"].paths) == 2
    assert [kind for _, kind in listing.report.skipped] == ["folder seen twice"]


def _as_nobody(fn):
    """Run fn() in a forked child with uid/gid 65534; return what it returned (JSON)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            out = json.dumps(fn()).encode()
            os.write(write, out)
            code = 0
        except BaseException:  # report it to the parent, with where it was raised
            import traceback
            os.write(write, json.dumps({"error": traceback.format_exc()}).encode())
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b"{}")


def test_unreadable_entries_are_counted_when_permissions_really_apply(monkeypatch):
    from netspec.train.loop import Trainer, TrainOptions

    # in the system's /tmp, not the suite's temporary folder: user nobody must be able to
    # reach it, and pytest's folders are root's alone; removed below
    top = Path(tempfile.mkdtemp(prefix="netspec-perm-", dir="/tmp"))
    try:
        top.chmod(0o777)
        data = top / "data"
        for cls, value in (("a", 100), ("b", 200)):
            for i in range(3):
                png(data / "train" / cls / f"{i}.png", value)
            png(data / "val" / cls / "v.png", value)
        png(data / "train" / "a" / "secret.png")
        png(data / "train" / "a" / "locked" / "hidden-inside.png")
        for path in data.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        data.chmod(0o755)
        (data / "train" / "a" / "secret.png").chmod(0)
        (data / "train" / "a" / "locked").chmod(0)
        (top / "s.net").write_text(SPEC)
        for sub in ("cache-dir", "out", "tmp"):
            (top / sub).mkdir(mode=0o777)
            (top / sub).chmod(0o777)
        monkeypatch.setenv("NETSPEC_CACHE_DIR", str(top / "cache-dir"))
        root = os.geteuid() == 0
        if root:
            # as root the permissions don't apply: everything is read. This run also imports
            # every module the child needs (the child can't read /root's site-packages).
            assert len(list_image_folder(data).splits["train"].paths) == 8
            Trainer(TrainOptions(spec=str(top / "s.net"), data=str(data), backend="numpy",
                                 out=str(top / "root-run"), max_steps=1, progress=False),
                    echo=lambda *a, **k: None).run()

        def as_nobody():
            tempfile.tempdir = str(top / "tmp")    # the suite's (tests/conftest.py) is root's
            listing = list_image_folder(data)
            cache = prepare_dataset(data, top / "out" / "cache", base=8, workers=0,
                                    progress=False)
            result = Trainer(TrainOptions(spec=str(top / "s.net"), data=str(data),
                                          backend="numpy", out=str(top / "out" / "run"),
                                          max_steps=2, progress=False),
                             echo=lambda *a, **k: None).run()
            return {"uid": os.getuid(), "listed": len(listing.splits["train"].paths),
                    "skipped": listing.report.skipped, "cached": cache.size("train"),
                    "steps": result["step"]}

        got = _as_nobody(as_nobody) if root else as_nobody()  # not root: they apply already
        assert "error" not in got, got
        assert got["uid"] == (65534 if root else os.getuid())
        assert got["listed"] == 6 and got["cached"] == 6 and got["steps"] == 2
        assert sorted(map(tuple, got["skipped"])) == [("train/a/locked", "unreadable"),
                                                     ("train/a/secret.png", "unreadable")]
    finally:
        for path in top.rglob("*"):
            if not path.is_symlink():
                path.chmod(stat.S_IRWXU)
        import shutil
        shutil.rmtree(top, ignore_errors=True)
