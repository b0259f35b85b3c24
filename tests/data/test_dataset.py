"""open_dataset on folders with bad files: converted or skipped and reported, never a crash."""
import numpy as np
import pytest
from PIL import Image

from netspec.data import open_dataset
from netspec.errors import DataError

from .imagefiles import random_images, save, write_folder


@pytest.fixture
def messy_folder(tmp_path):
    """train/good: every awkward-but-valid kind of image; train/bad: two unreadable files."""
    good, bad = tmp_path / "train" / "good", tmp_path / "train" / "bad"
    Image.new("CMYK", (30, 20), (10, 200, 30, 0)).save(save_dir(good) / "cmyk.jpg", quality=95)
    Image.new("L", (17, 33), 77).save(good / "grey.png")
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([12, 34, 56] * 256)
    palette.save(good / "palette.png")
    Image.new("RGBA", (9, 9), (10, 20, 30, 0)).save(good / "alpha.png")
    Image.fromarray(np.full((5, 7), 40000, dtype=np.uint16)).save(good / "deep.png")
    Image.new("RGB", (1, 1), (200, 100, 50)).save(good / "tiny.png")
    Image.new("RGB", (4000, 20), (90, 80, 70)).save(good / "panorama.JPG", quality=95)
    rng = np.random.default_rng(0)
    truncated = save(save_dir(bad) / "truncated.jpg",
                     rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:700])
    (bad / "x.jpg").write_text("this is text, not a JPEG\n")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(bad / "fine.png")
    write_folder(tmp_path, {"val": {"good": [np.zeros((8, 8, 3), np.uint8)]}})
    return tmp_path


def save_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_bad_files_are_skipped_counted_and_reported_once(messy_folder, data_warnings):
    dataset = open_dataset(messy_folder, base=8)
    assert sorted(path for path, _ in dataset.skipped) == ["train/bad/truncated.jpg",
                                                           "train/bad/x.jpg"]
    reasons = dict(dataset.skipped)
    assert "truncated" in reasons["train/bad/truncated.jpg"]
    lines = [line for line in data_warnings() if "skipped" in line]
    assert len(lines) == 1
    assert lines[0].startswith("skipped 2 unreadable image file(s)") and "x.jpg" in lines[0]
    assert dataset.size("train") == 8 and dataset.size("val") == 1


def test_awkward_images_are_converted(messy_folder):
    dataset = open_dataset(messy_folder, base=8)
    by_name = {dataset.path("train", i).name: dataset.image("train", i)
               for i in range(dataset.size("train"))}
    expected = {"grey.png": (77, 77, 77), "palette.png": (12, 34, 56),
                "alpha.png": (10, 20, 30), "deep.png": (156, 156, 156),
                "tiny.png": (200, 100, 50), "fine.png": (1, 2, 3)}
    for name, colour in expected.items():
        assert by_name[name].shape == (8, 8, 3) and by_name[name].dtype == np.uint8
        assert np.array_equal(by_name[name], np.broadcast_to(colour, (8, 8, 3))), name
    assert np.abs(by_name["cmyk.jpg"].astype(int) - [245, 55, 225]).max() <= 3
    assert np.abs(by_name["panorama.JPG"].astype(int) - [90, 80, 70]).max() <= 3


def test_batches_from_a_messy_folder(messy_folder):
    dataset = open_dataset(messy_folder, base=8)
    batches = list(dataset.loader("train", batch_size=4, crop=6))
    assert len(batches) == 2  # 8 readable images


def test_the_second_open_reuses_the_scan(messy_folder, monkeypatch):
    first = open_dataset(messy_folder, base=8)
    assert first.size("train") == 8
    import netspec.data.dataset as dataset_module

    def no_scan(*args, **kwargs):
        raise AssertionError("scanned again")

    monkeypatch.setattr(dataset_module, "_compute_folder_stats", no_scan)
    second = open_dataset(messy_folder, base=8)
    assert np.array_equal(second.mean, first.mean) and second.skipped == first.skipped
    # A changed file means a new scan.
    Image.new("RGB", (8, 8), (9, 9, 9)).save(messy_folder / "train" / "bad" / "fine.png")
    with pytest.raises(AssertionError, match="scanned again"):
        open_dataset(messy_folder, base=8).mean


def test_images_and_labels_by_index(tmp_path):
    rng = np.random.default_rng(2)
    train = {"a": random_images(rng, 2, 8), "b": random_images(rng, 3, 8)}
    write_folder(tmp_path, {"train": train})
    dataset = open_dataset(tmp_path, base=8)
    assert list(dataset.labels("train")) == [0, 0, 1, 1, 1]
    for i, expected in enumerate(train["a"] + train["b"]):
        assert np.array_equal(dataset.image("train", i), expected)
    assert dataset.path("train", 4) == tmp_path / "train" / "b" / "002.png"


def test_all_training_images_unreadable(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.jpg").write_text("no")
    with pytest.raises(DataError, match="none of the training images"):
        open_dataset(tmp_path).mean


@pytest.mark.parametrize("base", [0, -3, 2.5, True])
def test_bad_base(tmp_path, base):
    with pytest.raises(DataError, match="base must be a positive integer"):
        open_dataset(tmp_path, base=base)


def test_crop_larger_than_base(tmp_path):
    write_folder(tmp_path, {"train": {"a": [np.zeros((8, 8, 3), np.uint8)]}})
    with pytest.raises(DataError, match="crop 9 is larger than the images"):
        open_dataset(tmp_path, base=8).loader(crop=9)
