"""`netspec predict` (netspec/train/predict.py): the probabilities of each image equal the
network's on the data pipeline's own centre crop / 10 views of that image (what `netspec eval`
scores), and unreadable files get the pipeline's per-file reason."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

import netspec
from netspec.cli import main
from netspec.data import open_dataset
from netspec.data.decode import UnreadableImage, decode_image

from runkit import TINY, write_run
from trainkit import make_folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An image folder, and a run on it whose state holds the folder's mean image."""
    tmp = tmp_path_factory.mktemp("predict")
    folder = make_folder(tmp / "imgs", val=1)
    ds = open_dataset(str(folder), 72, progress=False)
    classes = [f"n{i:08d}" for i in range(10)]
    run, params = write_run(tmp / "run", TINY, classes=classes, seed=4, mean=ds.mean,
                            data=str(folder))
    net = netspec.build(TINY, "numpy")
    net.load_parameters(params)
    return folder, ds, run, net, classes


# the numpy reference's own numbers (auto may pick a backend that rounds differently)
PREDICT = ["predict", "--backend", "numpy"]


def _lines(output):
    return [json.loads(ln) for ln in output.splitlines() if ln.startswith("{")]


@pytest.mark.parametrize("ten_crop", [False, True], ids=["centre", "10-crop"])
def test_matches_the_pipelines_views(setup, ten_crop):
    folder, ds, run, net, classes = setup
    n = ds.size("val")
    paths = [str(ds.path("val", i)) for i in range(n)]
    if ten_crop:
        with ds.ten_crop_batches("val", batch_size=n, crop=64) as b:
            x, _ = next(iter(b))
            want = net.predict_proba(x.reshape(n * 10, 3, 64, 64)).reshape(n, 10, -1).mean(1)
    else:
        with ds.loader("val", batch_size=n, crop=64, train=False) as b:
            x, _ = next(iter(b))
            want = net.predict_proba(x)
    args = [*PREDICT, "--checkpoint", str(run), "--json", "--top", "3", "-b", "4", *paths]
    res = CliRunner().invoke(main, args + (["--ten-crop"] if ten_crop else []))
    assert res.exit_code == 0, res.output
    got = _lines(res.output)
    assert [g["image"] for g in got] == paths
    for g, p in zip(got, want):
        order = np.argsort(-p)[:3]
        assert [t["label"] for t in g["top"]] == order.tolist()
        assert [t["class"] for t in g["top"]] == [classes[i] for i in order]
        # the run keeps its mean image to 4 decimals: inputs differ by < 5e-5 grey levels
        np.testing.assert_allclose([t["probability"] for t in g["top"]], p[order], rtol=1e-4)
        assert g["views"] == (10 if ten_crop else 1)


def test_text_output(setup):
    folder, ds, run, net, classes = setup
    path = str(ds.path("val", 0))
    res = CliRunner().invoke(main, [*PREDICT, "--checkpoint", str(run), path])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == f"{path} (centre crop):"
    assert len(lines) == 6 and lines[1].lstrip().startswith("1. n")
    assert lines[1].rstrip().endswith("%")


def test_bad_files_get_the_pipelines_answer(setup, tmp_path):
    folder, ds, run, net, classes = setup
    good = str(ds.path("val", 0))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    cut = tmp_path / "cut.png"
    cut.write_bytes(pathlib.Path(good).read_bytes()[:200])
    missing = tmp_path / "missing.png"
    reasons = {}
    for p in (text, cut, missing):
        with pytest.raises(UnreadableImage) as e:
            decode_image(p, 72)
        reasons[str(p)] = str(e.value)
    res = CliRunner().invoke(main, [*PREDICT, "--checkpoint", str(run), "--json", str(text),
                                    good, str(cut), str(missing)])
    assert res.exit_code == 0, res.output
    got = _lines(res.output)
    assert [g["image"] for g in got] == [str(text), good, str(cut), str(missing)]
    for g in (got[0], got[2], got[3]):
        assert g["error"] == reasons[g["image"]]
        assert f"skipped {g['image']} ({g['error']})" in res.output
    assert "top" in got[1]
    assert "skipped 3 unreadable image file(s) of 4" in res.output
    res = CliRunner().invoke(main, [*PREDICT, "--checkpoint", str(run), str(text)])
    assert res.exit_code == 2 and "no image could be read" in res.output


def test_a_run_without_its_preprocessing_is_an_error(tmp_path):
    run, _ = write_run(tmp_path / "run", TINY)            # no mean image in its state
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(run), "x.png"])
    assert res.exit_code == 2 and "lacks data_mean" in res.output


def test_a_trained_run_directory_or_its_safetensors(tmp_path):
    """A run written by `netspec train` (its state's own mean image and classes); the bare
    checkpoint.safetensors carries the same state in its metadata."""
    from netspec.train.loop import Trainer, TrainOptions

    from trainkit import tiny_spec

    folder = make_folder(tmp_path / "imgs", classes=10, train=1, val=1)
    run = tmp_path / "run"
    Trainer(TrainOptions(spec=tiny_spec(batch="5"), data=str(folder), backend="numpy",
                         max_steps=1, out=str(run), progress=False), echo=lambda *a: None).run()
    ds = open_dataset(str(folder), 72, progress=False)
    paths = [str(ds.path("val", i)) for i in range(3)]
    r = CliRunner()
    a = _lines(r.invoke(main, [*PREDICT, "--checkpoint", str(run), "--json", *paths]).output)
    b = _lines(r.invoke(main, [*PREDICT, "--checkpoint", str(run / "checkpoint.safetensors"),
                               "--json", *paths]).output)
    assert a == b and len(a) == 3
    assert {t["class"] for g in a for t in g["top"]} <= set(ds.classes)


def test_human_names_and_a_grey_network(tmp_path):
    """A run whose state names its classes (ImageNet's words) lists those names; a network
    with `input 1x64x64` reads the luma of the views, as the loader gives it grey batches."""
    folder = make_folder(tmp_path / "imgs", classes=10, train=1, val=1)
    ds = open_dataset(str(folder), 72, progress=False)
    grey = TINY.replace("input   3x64x64", "input   1x64x64")
    words = ["tench", "goldfish", "shark", "crane", "crane", "hen", "ostrich", "owl", "frog",
             "eel"]
    run, params = write_run(tmp_path / "run", grey, classes=list(ds.classes), mean=ds.mean,
                            class_names=words)
    net = netspec.build(grey, "numpy")
    net.load_parameters(params)
    ds.channels = 1
    with ds.loader("val", batch_size=10, crop=64, train=False) as b:
        x, _ = next(iter(b))
    assert x.shape == (10, 1, 64, 64)
    want = net.predict_proba(x)
    paths = [str(ds.path("val", i)) for i in range(10)]
    res = CliRunner().invoke(main, [*PREDICT, "--checkpoint", str(run), "--json", "--top", "10",
                                    *paths])
    assert res.exit_code == 0, res.output
    for g, p in zip(_lines(res.output), want):
        labels = [t["label"] for t in g["top"]]
        np.testing.assert_allclose([t["probability"] for t in g["top"]], p[labels], rtol=1e-4)
        names = {t["label"]: t["name"] for t in g["top"]}
        assert names[0] == "tench" and names[3] == "crane (class03)"
    text = CliRunner().invoke(main, [*PREDICT, "--checkpoint", str(run), "--top", "10",
                                     paths[0]]).output
    assert "tench" in text and "crane (class03)" in text and "class00" in text
