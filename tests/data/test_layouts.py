"""The three layouts --data accepts (class folders, ILSVRC2012 + devkit, Kaggle CLS-LOC), their
labels proven right by training on colour-coded classes, and the layout errors."""
import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from netspec.cli import main
from netspec.data import open_dataset, prepare_dataset
from netspec.data.folder import list_image_folder
from netspec.errors import DataError
from netspec.train.loop import Trainer, TrainOptions

from .imagenet_layouts import COLOURS, NAMES, WNIDS, make_kaggle, make_naive_val, make_official

COLOUR_SPEC = """network colours
input 3x8x8
classes 4
conv c1 filters 4 size 3 relu weight gauss(0.01)
maxpool p1 size 2 stride 2
fc f1 outputs 4 weight gauss(0.01)
softmax prob
train
  batch 8
  epochs 5
  sgd lr 0.001 momentum 0.9 weight_decay 0.0005
  schedule none
"""


def colour_label(image: np.ndarray) -> int:
    """The class whose colour is nearest the image's mean colour: an oracle independent of
    any label file."""
    mean = image.reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.sum((mean - np.array(c)) ** 2) for c in COLOURS]))


def val_labels_match_colours(ds) -> None:
    labels = ds.labels("val")
    assert len(labels) == 12
    assert [colour_label(ds.image("val", i)) for i in range(len(labels))] == list(labels)


@pytest.mark.parametrize("tar", [False, True], ids=["devkit-dir", "devkit-tar.gz"])
def test_official_layout_labels_come_from_wnids_not_ids(tmp_path, tar):
    root, truth = make_official(tmp_path / "imagenet", tar=tar)
    listing = list_image_folder(root)
    assert listing.layout == "ILSVRC2012"
    assert listing.classes == tuple(WNIDS)
    assert listing.class_names == tuple(NAMES)
    assert "ILSVRC2012_validation_ground_truth.txt" in listing.labels_source
    # val is listed label by label; the truth is per file number
    by_file = {p: label for p, label in zip(listing.splits["val"].paths,
                                            listing.splits["val"].labels)}
    assert by_file == {f"val/ILSVRC2012_val_{i:08d}.JPEG": label
                       for i, label in enumerate(truth, 1)}
    val_labels_match_colours(open_dataset(root, base=8))


def test_kaggle_layout_from_its_root_and_from_cls_loc(tmp_path):
    root, truth = make_kaggle(tmp_path / "kaggle")
    for where in (root, root / "ILSVRC" / "Data" / "CLS-LOC"):
        listing = list_image_folder(where)
        assert listing.layout == "Kaggle CLS-LOC"
        assert listing.root == root / "ILSVRC" / "Data" / "CLS-LOC"
        assert listing.class_names == tuple(NAMES)
        assert "LOC_val_solution.csv" in listing.labels_source
        by_file = dict(zip(listing.splits["val"].paths, listing.splits["val"].labels))
        assert by_file == {f"val/ILSVRC2012_val_{i:08d}.JPEG": label
                           for i, label in enumerate(truth, 1)}
    val_labels_match_colours(open_dataset(root, base=8))


def test_class_folders_take_names_from_synset_words(tmp_path):
    root, _ = make_official(tmp_path / "imagenet")
    naive = make_naive_val(root, tmp_path / "sorted")
    (naive / "synset_words.txt").write_text("n01440764 tench, Tinca tinca\n")
    listing = list_image_folder(naive)
    assert listing.layout == "class folders"
    assert listing.class_names == ("tench", *WNIDS[1:])
    # val sorted into wnid folders next to the devkit: names from its meta.mat
    (naive / "synset_words.txt").unlink()
    (naive / "ILSVRC2012_devkit_t12").symlink_to(root / "ILSVRC2012_devkit_t12")
    assert list_image_folder(naive).class_names == tuple(NAMES)


def test_flat_val_without_labels_is_an_error(tmp_path):
    root, _ = make_official(tmp_path / "imagenet")
    import shutil
    shutil.rmtree(root / "ILSVRC2012_devkit_t12")
    with pytest.raises(DataError, match="labels are missing.*ILSVRC2012_devkit_t12") as e:
        open_dataset(root)
    assert "\n" not in str(e.value)
    kaggle, _ = make_kaggle(tmp_path / "kaggle")
    (kaggle / "LOC_val_solution.csv").unlink()
    with pytest.raises(DataError, match="LOC_val_solution.csv is not there"):
        open_dataset(kaggle)


def test_unrecognised_layout_says_what_was_found_and_what_is_accepted(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.csv").write_text("x")
    r = CliRunner().invoke(main, ["prepare", "--data", str(tmp_path), "--out",
                                  str(tmp_path.parent / "cache-x")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "found: images/, labels.csv" in r.output
    for accepted in ("ROOT/train/<class>", "ILSVRC2012_devkit_t12", "Kaggle CLS-LOC"):
        assert accepted in r.output


def test_a_damaged_devkit_is_a_clean_error(tmp_path):
    root, _ = make_official(tmp_path / "imagenet")
    (root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").write_bytes(b"not a mat file")
    r = CliRunner().invoke(main, ["prepare", "--data", str(root), "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "meta.mat" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("make", [make_official, make_kaggle], ids=["official", "kaggle"])
def test_prepare_records_where_the_labels_came_from(tmp_path, make):
    root, truth = make(tmp_path / "data")
    cache = prepare_dataset(root, tmp_path / "cache", base=8, workers=0, progress=False)
    manifest = json.loads((tmp_path / "cache" / "netspec-cache.json").read_text())
    assert manifest["layout"] in ("ILSVRC2012", "Kaggle CLS-LOC")
    assert manifest["labels_source"] == list_image_folder(root).labels_source
    assert manifest["class_names"] == NAMES
    assert cache.class_names == tuple(NAMES) and cache.labels_source == manifest["labels_source"]
    val_labels_match_colours(open_dataset(tmp_path / "cache"))


def train(spec, data, out, lines=None):
    opts = TrainOptions(spec=str(spec), data=str(data), backend="numpy", out=str(out),
                        progress=False)
    return Trainer(opts, echo=(lines if lines is not None else []).append).run()


@pytest.mark.parametrize("make", [make_official, make_kaggle], ids=["official", "kaggle"])
def test_training_on_the_layout_reaches_near_zero_val_error(tmp_path, make):
    """Colour-coded classes are trivially learnable, so a near-zero val error proves every
    val image got its own class's label."""
    root, _ = make(tmp_path / "data")
    spec = tmp_path / "colours.net"
    spec.write_text(COLOUR_SPEC)
    lines = []
    result = train(spec, root, tmp_path / "run", lines)
    assert result["last"]["val_top1_error"] <= 1 / 12  # at most one of 12 wrong
    layout = list_image_folder(root)
    assert f"data layout: {layout.layout}; val labels from {layout.labels_source}" in lines
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["class_names"] == NAMES and state["classes"] == WNIDS
    assert state["data_layout"] == list_image_folder(root).layout
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    assert list(rows[-1]["val_class_top1_error"]) == NAMES


def test_a_val_labelled_by_id_order_gives_chance_and_eval_names_classes(tmp_path):
    """The same net on val images labelled as if ILSVRC2012_IDs were in sorted-wnid order:
    error at or above chance (3/4), where the devkit's labels give near zero."""
    root, _ = make_official(tmp_path / "imagenet")
    spec = tmp_path / "colours.net"
    spec.write_text(COLOUR_SPEC)
    train(spec, root, tmp_path / "run")
    naive = make_naive_val(root, tmp_path / "naive")
    runner = CliRunner()
    good = runner.invoke(main, ["eval", "--checkpoint", str(tmp_path / "run"), "--data",
                                str(root), "--backend", "numpy", "--json"])
    bad = runner.invoke(main, ["eval", "--checkpoint", str(tmp_path / "run"), "--data",
                               str(naive), "--backend", "numpy", "--json"])
    assert good.exit_code == 0 and bad.exit_code == 0, good.output + bad.output
    good, bad = json.loads(good.stdout), json.loads(bad.stdout)
    assert good["top1_error"] <= 1 / 12
    assert bad["top1_error"] >= 0.75
    assert [c["name"] for c in good["per_class"]] == NAMES
    text = runner.invoke(main, ["eval", "--checkpoint", str(tmp_path / "run"), "--data",
                                str(root), "--backend", "numpy"]).stdout
    assert "hardest classes (top-1 error): " in text
    assert "tench" in text and "n01440764" not in text


def test_predictions_figure_uses_class_names(tmp_path):
    from netspec.train.saved_net import run_predictions
    from netspec.viz.run import open_run

    root, _ = make_kaggle(tmp_path / "kaggle")
    spec = tmp_path / "colours.net"
    spec.write_text(COLOUR_SPEC.replace("epochs 5", "epochs 1"))
    train(spec, root, tmp_path / "run")
    _, _, _, names = run_predictions(open_run(tmp_path / "run"), count=4)
    assert list(names) == NAMES


def test_shared_synset_names_are_told_apart():
    from netspec.data.layouts import display_names
    assert display_names(["n02012849", "n03126707", "n01440764"], ["crane", "crane", "tench"]) \
        == ["crane (n02012849)", "crane (n03126707)", "tench"]


def test_a_clean_official_layout_opens_without_warnings(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="netspec.data")
    root, _ = make_official(tmp_path / "imagenet")
    open_dataset(root, base=8)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
