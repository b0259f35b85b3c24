"""The ImageFolder layout: classes, labels, and every layout problem as one DataError line."""
import numpy as np
import pytest

from netspec.data import check_class_count, open_dataset
from netspec.data.folder import list_image_folder
from netspec.errors import DataError

from .imagefiles import save, write_folder

PIXEL = np.zeros((4, 4, 3), dtype=np.uint8)


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_classes_are_sorted_names_of_train_and_val_uses_them(tmp_path):
    write_folder(tmp_path, {"train": {"zebra": [PIXEL] * 2, "ant": [PIXEL], "Moth": [PIXEL]},
                            "val": {"zebra": [PIXEL], "ant": [PIXEL] * 2}})
    listing = list_image_folder(tmp_path)
    assert listing.classes == ("Moth", "ant", "zebra")
    assert listing.splits["train"].labels == (0, 1, 2, 2)
    assert listing.splits["val"].labels == (1, 1, 2)
    assert listing.splits["val"].paths[0] == "val/ant/000.png"


def test_extensions_in_any_case_and_other_files_ignored(tmp_path):
    folder = tmp_path / "train" / "a"
    for name in ["x.JPG", "y.jpeg", "z.PnG", "w.Jpeg"]:
        save(folder / name, PIXEL, format="PNG" if name.lower().endswith("png") else "JPEG")
    (folder / "notes.txt").write_text("hi")
    (folder / ".hidden.jpg").write_bytes(b"")
    save(folder / "nested" / "deeper.jpg", PIXEL)
    paths = list_image_folder(tmp_path).splits["train"].paths
    assert sorted(paths) == sorted(f"train/a/{n}" for n in
                                   ["x.JPG", "y.jpeg", "z.PnG", "w.Jpeg", "nested/deeper.jpg"])


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist") as excinfo:
        open_dataset(tmp_path / "nope")
    one_line(excinfo)


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match="is empty") as excinfo:
        open_dataset(tmp_path)
    one_line(excinfo)


def test_no_train_folder(tmp_path):
    write_folder(tmp_path, {"val": {"a": [PIXEL]}})
    with pytest.raises(DataError, match="no train/") as excinfo:
        open_dataset(tmp_path)
    one_line(excinfo)


def test_a_file_instead_of_a_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        open_dataset(tmp_path / "f")


def test_train_without_images(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders with images") as excinfo:
        open_dataset(tmp_path)
    one_line(excinfo)


def test_val_class_missing_from_train(tmp_path):
    write_folder(tmp_path, {"train": {"a": [PIXEL]}, "val": {"a": [PIXEL], "b": [PIXEL]}})
    with pytest.raises(DataError, match="class 'b' that train/ lacks") as excinfo:
        open_dataset(tmp_path)
    one_line(excinfo)


def test_empty_class_directory_is_ignored_with_a_warning(tmp_path, data_warnings):
    write_folder(tmp_path, {"train": {"a": [PIXEL], "c": [PIXEL]}, "val": {"a": [PIXEL]}})
    (tmp_path / "train" / "b").mkdir()
    (tmp_path / "val" / "c").mkdir()
    dataset = open_dataset(tmp_path, base=4)
    assert dataset.classes == ("a", "c")
    assert dataset.size("val") == 1
    lines = data_warnings()
    assert len(lines) == 2 and all("has no images; ignoring" in line for line in lines)
    assert any("train/b" in line for line in lines) and any("val/c" in line for line in lines)


def test_no_val_folder_is_a_warning_and_val_is_then_an_error(tmp_path, data_warnings):
    write_folder(tmp_path, {"train": {"a": [PIXEL]}})
    dataset = open_dataset(tmp_path, base=4)
    assert dataset.splits == ("train",)
    assert any("no val/" in line for line in data_warnings())
    with pytest.raises(DataError, match="no 'val' split"):
        dataset.loader("val", batch_size=1, crop=4)


def test_more_classes_than_outputs_is_an_error():
    with pytest.raises(DataError, match="12 classes but the network has only 10 outputs"):
        check_class_count([str(i) for i in range(12)], 10)


def test_fewer_classes_than_outputs_is_a_warning(data_warnings):
    check_class_count(["a", "b", "c"], 5)
    assert data_warnings() == [
        "the data has 3 classes but the network has 5 outputs; outputs 3..4 will never be a target"
    ]


def test_as_many_classes_as_outputs_is_silent(data_warnings):
    check_class_count(["a", "b"], 2)
    assert data_warnings() == []
