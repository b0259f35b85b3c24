"""Learning curves: series in the right places, lr on a log scale, usable with gaps."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from netspec.viz import VizError, curves_layout, draw_curves, overlapping_texts

EPOCHS = [1, 2, 3, 4, 5]


def _metrics():
    rows = []
    for e, lr in zip(EPOCHS, [0.1, 0.1, 0.01, 0.01, 0.001]):
        rows.append({"epoch": e, "step": 100 * e, "lr": lr, "train_loss": 3.0 / e,
                     "train_top1_error": 0.8 - 0.1 * e, "train_top5_error": 0.5 - 0.05 * e,
                     "val_top1_error": 1.0 - 0.2 * e, "val_top5_error": 0.6 - 0.1 * e,
                     "val_loss": 3.5 / e,
                     "images_per_sec": 500.0})
    return rows


def _series(layout, name):
    (el,) = [e for e in layout.find("series") if e.data["name"] == name]
    markers = [s for s in el.shapes if type(s).__name__ == "Rect"]
    return [(m.x + m.w / 2, m.y + m.h / 2) for m in markers]


def test_points_are_linear_in_epoch_and_error():
    layout = curves_layout(_metrics())
    pts = _series(layout, "val_top1_error")           # errors 80, 60, 40, 20, 0 %
    xs, ys = zip(*pts)
    assert np.allclose(np.diff(xs), xs[1] - xs[0]) and xs[1] > xs[0]
    assert np.allclose(np.diff(ys), ys[1] - ys[0]) and ys[1] > ys[0]   # falling error: lower
    top5 = _series(layout, "val_top5_error")           # 50, 40, ... %: below top-1 at epoch 1
    assert top5[0][1] > pts[0][1]
    assert [x for x, _ in top5] == pytest.approx(xs)


def test_learning_rate_is_on_a_log_scale():
    layout = curves_layout(_metrics())
    ys = [y for _, y in _series(layout, "lr")]          # 0.1, 0.1, 0.01, 0.01, 0.001
    assert ys[0] == pytest.approx(ys[1])
    assert ys[2] - ys[0] == pytest.approx(ys[4] - ys[2])   # one decade, the same height
    panels = {e.data["name"] for e in layout.find("panel")}
    assert panels == {"error", "loss", "lr"}
    loss = {e.data["name"] for e in layout.find("series") if e.data["panel"] == "loss"}
    assert loss == {"train_loss", "val_loss"}


def test_missing_values_are_skipped():
    rows = _metrics()
    rows[2]["val_top1_error"] = None
    del rows[3]["lr"]
    layout = curves_layout(rows)
    assert len(_series(layout, "val_top1_error")) == 4
    assert len(_series(layout, "lr")) == 4
    only_lr = curves_layout([{"epoch": 1, "lr": 0.01}])
    assert {e.data["name"] for e in only_lr.find("panel")} == {"lr"}


def test_nothing_to_plot_is_an_error():
    with pytest.raises(VizError, match="no evaluations"):
        curves_layout([])
    with pytest.raises(VizError):
        curves_layout([{"step": 5}])


def test_legend_names_final_values_without_clashing():
    layout = curves_layout(_metrics(), title="tiny-alexnet · runs/demo")
    legend = [t.text for e in layout.find("legend") for t in e.shapes if hasattr(t, "text")]
    assert "val top-1: 0.0%" in legend and "train top-1: 30.0%" in legend
    assert "learning rate: 0.001" in legend
    assert overlapping_texts(layout) == []


def test_png(tmp_path):
    draw_curves(_metrics(), tmp_path / "c.png")
    img = Image.open(tmp_path / "c.png")
    assert img.width == 1200
    assert np.asarray(img).std() > 10
    draw_curves(_metrics(), tmp_path / "c.png", width=600)
    assert Image.open(tmp_path / "c.png").width == 600
