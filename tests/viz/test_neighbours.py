"""Nearest neighbours in feature space (Figure 4, right)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from netspec.viz import VizError, draw_neighbours, nearest_neighbours, overlapping_texts


def _brute_force(q, t, k):
    d = np.linalg.norm(q[:, None, :].astype(np.float64) - t[None, :, :], axis=2)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.mark.parametrize("chunk", [None, 1, 7, 64])
def test_equals_brute_force(chunk):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(9, 32)).astype(np.float32)
    t = rng.normal(size=(150, 32)).astype(np.float32)
    idx, dist = nearest_neighbours(q, t, 6, chunk=chunk)
    want_idx, want_dist = _brute_force(q, t, 6)
    assert idx.shape == (9, 6) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-6, atol=1e-6)


def test_ties_keep_the_lower_index_and_k_is_capped():
    t = np.array([[1.0, 0], [0, 1.0], [1.0, 0], [5, 5], [-1.0, 0]])
    idx, dist = nearest_neighbours(np.zeros((1, 2)), t, 10, chunk=2)
    assert idx.tolist() == [[0, 1, 2, 4, 3]]
    np.testing.assert_allclose(dist[0], [1, 1, 1, 1, np.sqrt(50)])


def test_a_query_finds_itself_first():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(40, 8))
    idx, dist = nearest_neighbours(t[[3, 17]], t, 3)
    assert idx[:, 0].tolist() == [3, 17]
    np.testing.assert_allclose(dist[:, 0], 0, atol=1e-7)


def test_bad_features():
    with pytest.raises(VizError, match="same D"):
        nearest_neighbours(np.zeros((2, 3)), np.zeros((5, 4)), 1)
    with pytest.raises(VizError, match="at least 1"):
        nearest_neighbours(np.zeros((2, 3)), np.zeros((5, 3)), 0)


def test_sheet_places_each_image_in_its_cell(tmp_path):
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255],
                        [255, 0, 255], [128, 128, 128]], dtype=np.uint8)
    solid = np.repeat(np.repeat(colours[:, None, None, :], 30, 1), 30, 2)   # (7, 30, 30, 3)
    queries = solid[[0, 1]]
    found = np.stack([solid[[2, 3, 4]], solid[[5, 6, 2]]])                   # (2, 3, ...)
    layout = draw_neighbours(queries, found, tmp_path / "n.png",
                             distances=np.array([[0.5, 1, 2], [0.1, 0.2, 0.3]]),
                             query_names=["a", "b"],
                             neighbour_names=[["c", "d", "e"], ["f", "g", "c"]])
    img = np.asarray(Image.open(tmp_path / "n.png"))

    def colour_at(el):
        bitmap = el.shapes[0]
        return tuple(img[round(bitmap.y + bitmap.h / 2), round(bitmap.x + bitmap.w / 2)])

    for el in layout.find("query"):
        assert colour_at(el) == tuple(queries[int(el.data["row"])][0, 0])
    for el in layout.find("neighbour"):
        r, j = int(el.data["row"]), int(el.data["rank"])
        assert colour_at(el) == tuple(found[r, j][0, 0])
    rows = {int(e.data["row"]): e.box[1] for e in layout.find("query")}
    assert rows[0] < rows[1]
    texts = [t.text for t in layout.texts()]
    assert "d = 0.5" in texts and "g" in texts
    assert overlapping_texts(layout) == []
