"""The predictions sheet (Figure 4, left): top-5 bars in order, red where the guess is right."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from netspec.viz import VizError, draw_predictions, overlapping_texts, predictions_layout, top_k
from netspec.viz.predictions import CELL_W

NAMES = ["tench, Tinca tinca", "goldfish, Carassius auratus",
         "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias",
         "tiger shark", "hammerhead", "electric ray", "stingray", "cock", "hen", "ostrich",
         "brambling", "goldfinch"]


def _data():
    rng = np.random.default_rng(0)
    n, k = 6, len(NAMES)
    images = rng.integers(0, 256, (n, 40, 50, 3), dtype=np.uint8)
    probs = rng.random((n, k)) ** 4
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1)
    labels = order[:, 0].copy()       # image 0: top-1 right
    labels[1] = order[1, 3]           # image 1: fourth guess
    labels[2] = order[2, 8]           # image 2: not in the top 5
    return images, probs, labels


def test_top_k_orders_by_probability_then_index():
    p = np.array([[0.1, 0.3, 0.3, 0.2, 0.05, 0.05]])
    assert top_k(p, 5).tolist() == [[1, 2, 3, 0, 4]]


def test_bars_follow_the_top_5_and_mark_the_true_label():
    images, probs, labels = _data()
    layout = predictions_layout(images, probs, labels, NAMES)
    bars = layout.find("bar")
    assert len(bars) == 6 * 5
    for i in range(6):
        mine = sorted((e for e in bars if e.data["image"] == str(i)),
                      key=lambda e: int(e.data["rank"]))
        want = np.argsort(-probs[i])[:5]
        assert [int(e.data["label"]) for e in mine] == want.tolist()
        for e in mine:
            p = probs[i, int(e.data["label"])]
            fill = [s for s in e.shapes if type(s).__name__ == "Rect"][1]
            assert fill.w == pytest.approx(p * CELL_W)
        marked = [int(e.data["rank"]) for e in mine if "bar-true" in e.kinds]
        assert marked == ([0] if i == 0 else [3] if i == 1 else [] if i == 2 else [0])
    cells = {e.data["index"]: e for e in layout.find("prediction")}
    assert [cells[str(i)].data["rank"] for i in range(3)] == ["0", "3", "-1"]
    assert overlapping_texts(layout) == []     # long names are shortened to fit


def test_true_label_is_written_under_each_image():
    images, probs, labels = _data()
    layout = predictions_layout(images, probs, labels, NAMES)
    for e in layout.find("prediction"):
        (text,) = [s.text for s in e.shapes if hasattr(s, "text")]
        name = NAMES[int(e.data["label"])]
        assert name.startswith(text.rstrip("…"))


def test_png_shows_the_red_bar(tmp_path):
    images, probs, labels = _data()
    layout = draw_predictions(images, probs, labels, NAMES, tmp_path / "p.png")
    img = np.asarray(Image.open(tmp_path / "p.png")).astype(int)
    (true_bar,) = [e for e in layout.find("bar-true") if e.data["image"] == "0"]
    fill = [s for s in true_bar.shapes if type(s).__name__ == "Rect"][1]
    y = round(fill.y + 2)
    x = round(fill.x + fill.w - 3)
    assert img[y, x, 0] > 200 and img[y, x, 1] < 110      # red
    assert img.std() > 10


def test_bad_inputs():
    images, probs, labels = _data()
    with pytest.raises(VizError, match="uint8"):
        predictions_layout(images.astype(float), probs, labels, NAMES)
    with pytest.raises(VizError, match="labels"):
        predictions_layout(images, probs, labels[:3], NAMES)
    with pytest.raises(VizError, match="class names"):
        predictions_layout(images, probs, labels, NAMES[:5])
