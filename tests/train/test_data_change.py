"""Data changed under --resume (issue #28, red-team kind 8): a run records its data's
fingerprint (per split: file count and a hash of the relative paths, sizes and mtimes, or of a
prepared cache's shards and checksums); resuming on images added, removed or rewritten since is
refused with what changed, or goes on with --allow-data-change and is recorded in the run."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from netspec.cli import main
from netspec.data import open_dataset, prepare_dataset

from trainkit import make_folder, mini_spec

MINI = mini_spec(sgd="lr 0.0001 momentum 0.5 weight_decay 0.0005")


@pytest.fixture
def setup(tmp_path):
    spec = tmp_path / "mini.net"
    spec.write_text(MINI)
    data = make_folder(tmp_path / "imgs")
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--spec", str(spec), "--data", str(data),
                                    "--out", str(run), "--backend", "numpy", "--max-steps", "3",
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    return data, run


def _resume(run, *extra):
    return CliRunner().invoke(main, ["train", "--resume", str(run), "--backend", "numpy",
                                     "--max-steps", "6", "--no-progress", *extra])


def _state(run):
    return json.loads((run / "state.json").read_text())


def _add_images(data, n=3):
    rng = np.random.default_rng(1)
    for i in range(n):
        img = rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)
        Image.fromarray(img).save(data / "train" / "class03" / f"added{i}.png")


def test_the_fingerprint_is_recorded_and_an_unchanged_resume_goes_on(setup):
    data, run = setup
    fp = _state(run)["data_fingerprint"]
    assert fp["train"]["files"] == 40 and fp["val"]["files"] == 20
    assert fp == open_dataset(data, base=20).fingerprint()
    res = _resume(run)
    assert res.exit_code == 0, res.output
    assert _state(run)["step"] == 6 and _state(run)["data_changes"] == []


def test_images_added_are_refused_then_allowed_and_recorded(setup):
    data, run = setup
    mean_before = np.asarray(_state(run)["data_mean"])
    _add_images(data)
    res = _resume(run)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "train: 40 files then, 43 now" in res.output and "--allow-data-change" in res.output
    assert _state(run)["step"] == 3                    # nothing was trained

    res = _resume(run, "--allow-data-change")
    assert res.exit_code == 0, res.output
    assert "the data changed since the run started" in res.output
    state = _state(run)
    assert state["step"] == 6
    change, = state["data_changes"]
    assert change["step"] == 3 and "40 files then, 43 now" in change["change"]
    assert change["after"]["train"]["files"] == 43 == state["data_fingerprint"]["train"]["files"]
    assert not np.array_equal(np.asarray(state["data_mean"]), mean_before)   # it moved
    assert _resume(run, "--max-steps", "7").exit_code == 0     # the new data is the run's now


def test_a_file_rewritten_in_place_is_a_change(setup):
    data, run = setup
    victim = next((data / "val" / "class01").iterdir())
    st = os.stat(victim)
    Image.fromarray(np.zeros((80, 90, 3), np.uint8)).save(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    res = _resume(run)
    assert res.exit_code == 2, res.output
    assert "val: same count (20), but files renamed, resized or rewritten" in res.output


def test_a_prepared_cache_prepared_again_from_more_images_is_a_change(tmp_path):
    spec = tmp_path / "mini.net"
    spec.write_text(MINI)
    src = make_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    prepare_dataset(src, cache, base=20, workers=0, progress=False)
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--spec", str(spec), "--data", str(cache),
                                    "--out", str(run), "--backend", "numpy", "--max-steps", "2",
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    _add_images(src, 5)
    shutil.rmtree(cache)
    prepare_dataset(src, cache, base=20, workers=0, progress=False)
    res = _resume(run)
    assert res.exit_code == 2 and "train: 40 files then, 45 now" in res.output, res.output


def test_allow_data_change_needs_resume(tmp_path):
    res = CliRunner().invoke(main, ["train", "--spec", "x.net", "--data", "demo",
                                    "--allow-data-change"])
    assert res.exit_code == 2 and "--allow-data-change goes with --resume" in res.output
