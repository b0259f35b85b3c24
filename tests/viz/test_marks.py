"""The figures say what their marks mean: the predictions sheet names its red bar (the true
label, netspec/viz/predictions.py), the neighbours sheet draws in red the name of a
neighbour whose class is not the query's and says so in its header (neighbours.py)."""
from __future__ import annotations

import numpy as np

from netspec.viz import overlapping_texts, predictions_layout
from netspec.viz.neighbours import OTHER_CLASS, neighbours_layout


def test_predictions_legend_names_the_red_bar():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(7), 2)
    layout = predictions_layout(images, probs, np.array([1, 4]), [f"c{i}" for i in range(7)],
                                title="t")
    legend, = layout.find("legend")
    assert "red: the true label" in legend.shapes[0].text
    title, = layout.find("title")
    first_image = min(e.box[1] for e in layout.find("prediction"))
    assert title.box[3] <= legend.box[1] and legend.box[3] <= first_image   # stacked, apart
    assert overlapping_texts(layout) == []


def test_neighbours_mark_other_classes():
    thumbs = np.zeros((2, 3, 16, 16, 3), np.uint8)
    layout = neighbours_layout(np.zeros((2, 16, 16, 3), np.uint8), thumbs,
                               query_names=["cat", "dog"],
                               neighbour_names=[["cat", "dog", "cat"], ["dog", "dog", "cow"]])
    other = {(int(e.data["row"]), int(e.data["rank"])): e.shapes[1].fill
             for e in layout.find("neighbour")}
    # by hand: row 0 rank 1 (dog for a cat) and row 1 rank 2 (cow for a dog)
    assert {key for key, fill in other.items() if fill == OTHER_CLASS} == {(0, 1), (1, 2)}
    assert all(fill == "#333333" for key, fill in other.items()
               if key not in {(0, 1), (1, 2)})
    assert any("red name: not the query's class" in t.text for t in layout.texts())
    assert overlapping_texts(layout) == []
    # without names nothing can be marked, and the header doesn't promise it
    plain = neighbours_layout(np.zeros((1, 16, 16, 3), np.uint8), thumbs[:1])
    assert not any("red name" in t.text for t in plain.texts())
