"""Damaged statistics caches (issue #28, red-team kind 9): a folder's cached mean image and PCA
(<user cache>/stats/*.npz) and a prepared cache's mean.npy and PCA are checked when read
(shape, finite, ranges); a damaged one is named in a warning and rebuilt, never used. The
oracle is the statistics computed from the images before the damage."""
from __future__ import annotations

import json

import numpy as np
import pytest

from netspec.data import open_dataset, prepare_dataset
from netspec.data.cache import MANIFEST_NAME
from netspec.data.stats import statistics_problem


def _stats_file(user_cache):
    files = list((user_cache / "stats").glob("*.npz"))
    assert len(files) == 1, files
    return files[0]


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as a:
        arrays = {k: a[k] for k in a.files}
    arrays.update(changes)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


DAMAGE = {
    "a 5x5 mean": {"mean": np.full((5, 5), 120, np.float32)},
    "a NaN mean": {"mean": np.full((24, 24, 3), np.nan, np.float32)},
    "a mean above 255": {"mean": np.full((24, 24, 3), 300, np.float32)},
    "negative eigenvalues": {"eigenvalues": np.array([-1.0, 0.01, 0.001])},
    "NaN eigenvectors": {"eigenvectors": np.full((3, 3), np.nan)},
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_folder_statistics_cache_is_rebuilt(small_demo, user_cache, damage,
                                                      data_warnings):
    first = open_dataset(small_demo, base=24)
    mean, pca = first.mean.copy(), first.pca
    path = _stats_file(user_cache)
    _rewrite(path, **DAMAGE[damage])
    again = open_dataset(small_demo, base=24)
    np.testing.assert_array_equal(again.mean, mean)
    np.testing.assert_array_equal(again.pca.eigenvectors, pca.eigenvectors)
    assert any("damaged" in w and str(path) in w for w in data_warnings()), data_warnings()
    with np.load(path) as a:                       # the file was replaced by a good one
        assert statistics_problem(a["mean"], a["eigenvalues"], a["eigenvectors"], 24) is None


def test_an_unreadable_stats_file_is_rebuilt(small_demo, user_cache, data_warnings):
    mean = open_dataset(small_demo, base=24).mean.copy()
    _stats_file(user_cache).write_bytes(b"PK\x03\x04 not a zip")
    np.testing.assert_array_equal(open_dataset(small_demo, base=24).mean, mean)
    assert any("damaged" in w for w in data_warnings())


@pytest.mark.parametrize("damage", ["5x5", "nan", "eigenvalue"])
def test_a_prepared_caches_damaged_statistics_are_rebuilt(small_demo, tmp_path, damage,
                                                          data_warnings):
    root = tmp_path / "cache"
    prepare_dataset(small_demo, root, base=24, workers=0, progress=False)
    good = open_dataset(root)
    mean, values = good.mean.copy(), good.pca.eigenvalues.copy()
    if damage == "5x5":
        np.save(root / "mean.npy", np.full((5, 5), 100, np.float32))
    elif damage == "nan":
        m = mean.copy()
        m[3, 4, 1] = np.nan
        np.save(root / "mean.npy", m)
    else:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
        manifest["pca"]["eigenvalues"] = [5.0, 0.01, 0.0]
        (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    ds = open_dataset(root)
    np.testing.assert_array_equal(ds.mean, mean)
    np.testing.assert_allclose(ds.pca.eigenvalues, values, rtol=1e-12)
    assert any("statistics were damaged" in w for w in data_warnings()), data_warnings()
    again = open_dataset(root)                     # repaired on disk
    np.testing.assert_array_equal(np.load(root / "mean.npy"), mean)
    np.testing.assert_array_equal(again.mean, mean)


def test_a_prepared_cache_without_sums_to_rebuild_from_is_a_clean_error(small_demo, tmp_path):
    from netspec.errors import DataError
    root = tmp_path / "cache"
    prepare_dataset(small_demo, root, base=24, workers=0, progress=False)
    np.save(root / "mean.npy", np.full((5, 5), 100, np.float32))
    for sidecar in (root / "train").glob("*.npz"):
        sidecar.write_bytes(b"damaged")
    with pytest.raises(DataError, match="shape .5, 5.*prepare it again"):
        open_dataset(root)
