"""The kernel grid (Figure 3): each kernel at its cell, sections per GPU, normalised."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from netspec.viz import VizError, draw_filters, filters_layout, normalise_filters


def _kernels(n=96, c=3, k=11, seed=0):
    return np.random.default_rng(seed).normal(0, 0.01, (n, c, k, k)).astype(np.float32)


def _centre(element):
    x0, y0, x1, y1 = element.box
    return round((x0 + x1) / 2), round((y0 + y1) / 2)


def test_normalise_filters_scales_each_kernel_to_0_1():
    w = _kernels(5, 3, 3)
    w[1] *= 1000            # magnitude doesn't matter
    w[3] = 7.0              # a flat kernel shows as mid grey
    n = normalise_filters(w)
    for i in (0, 1, 2, 4):
        assert n[i].min() == 0 and n[i].max() == 1
    assert np.all(n[3] == 0.5)
    np.testing.assert_allclose(n[1], normalise_filters(w[1:2] / 1000)[0], atol=1e-6)


def test_a_known_kernel_shows_at_its_cell(tmp_path):
    w = _kernels()
    w[53] = -1.0
    w[53, 0] = 1.0          # pure red after normalisation
    w[7] = -1.0
    w[7, 2, 5:, :] = 1.0    # blue in its lower half
    parts = [(0, 0, 48), (1, 48, 96)]
    layout = draw_filters(w, tmp_path / "f.png", parts, title="conv1")
    img = np.asarray(Image.open(tmp_path / "f.png"))
    cells = {int(e.data["kernel"]): e for e in layout.find("filter")}
    assert sorted(cells) == list(range(96))
    assert tuple(img[_centre(cells[53])[::-1]]) == (255, 0, 0)
    x0, y0, x1, y1 = cells[7].box
    assert tuple(img[round(y0 + 0.85 * (y1 - y0)), round((x0 + x1) / 2)]) == (0, 0, 255)
    assert tuple(img[round(y0 + 0.15 * (y1 - y0)), round((x0 + x1) / 2)]) == (0, 0, 0)


def test_kernels_fill_rows_within_their_gpu_section():
    layout = filters_layout(_kernels(), [(0, 0, 48), (1, 48, 96)])
    sections = {int(e.data["gpu"]): e.box for e in layout.find("section")}
    cells = {int(e.data["kernel"]): e for e in layout.find("filter")}
    for k, e in cells.items():
        gpu = 0 if k < 48 else 1
        assert int(e.data["gpu"]) == gpu
        sx0, sy0, sx1, sy1 = sections[gpu]
        x0, y0, x1, y1 = e.box
        assert sx0 <= x0 and x1 <= sx1 and sy0 <= y0 and y1 <= sy1
    assert sections[0][3] < sections[1][1]                  # GPU 0 above GPU 1
    # Figure 3's grid: 48 kernels per GPU in 3 rows of 16, row-major
    row0 = [cells[k].box for k in range(16)]
    assert all(b[1] == row0[0][1] for b in row0)
    assert all(a[0] < b[0] for a, b in zip(row0, row0[1:]))
    assert cells[16].box[1] > cells[15].box[1] and cells[16].box[0] == cells[0].box[0]


def test_deeper_kernels_are_grey_tiles_per_input_channel(tmp_path):
    w = _kernels(8, 5, 3)
    w[2] = 0.0
    w[2, 3] = 1.0            # kernel 2 weighs only on channel 3
    layout = draw_filters(w, tmp_path / "g.png", [(0, 0, 4), (1, 4, 8)])
    img = np.asarray(Image.open(tmp_path / "g.png"))
    tiles = {(int(e.data["kernel"]), int(e.data["channel"])): e
             for e in layout.find("filter")}
    assert len(tiles) == 8 * 5
    assert tuple(img[_centre(tiles[(2, 3)])[::-1]]) == (255, 255, 255)
    assert tuple(img[_centre(tiles[(2, 1)])[::-1]]) == (0, 0, 0)


def test_large_layers_are_capped_and_say_so():
    layout = filters_layout(_kernels(64, 48, 5), [(0, 0, 32), (1, 32, 64)], max_kernels=4,
                            max_channels=6)
    assert len(layout.find("filter")) == 2 * 4 * 6
    heads = [t.text for e in layout.find("section-title") for t in e.shapes]
    assert heads[0] == ("GPU 0: kernels 0–31 (showing 4 of 32 kernels, input channels 0–5 "
                        "of 48)")


def test_per_part_kernels_with_different_input_counts():
    w = [_kernels(6, 3, 3), _kernels(2, 5, 3)]
    layout = filters_layout(w, [(0, 0, 6), (1, 6, 8)])
    tiles = layout.find("filter")
    assert {int(e.data["kernel"]) for e in tiles} == set(range(8))
    assert sum(1 for e in tiles if int(e.data["kernel"]) == 7) == 5


def test_bad_kernels_are_reported():
    with pytest.raises(VizError, match="out, in, kh, kw"):
        filters_layout(np.zeros((4, 3, 3)))
    with pytest.raises(VizError, match="outside"):
        filters_layout(_kernels(4, 3, 3), [(0, 0, 2), (1, 2, 6)])


@pytest.mark.parametrize("k,c,least", [(5, 3, 90), (11, 3, 90), (3, 3, 90), (5, 48, 60)])
def test_tiles_are_drawn_large_each_weight_a_square(k, c, least):
    """Like shownet, each kernel scaled up: a tile of ~96 px (RGB) or ~64 px (grey channel
    tiles), every weight a whole square of at least 6 pixels."""
    layout = filters_layout(_kernels(8, c, k), [(0, 0, 8)])
    for e in layout.find("filter"):
        x0, y0, x1, y1 = e.box
        assert x1 - x0 == y1 - y0 >= least
        assert (x1 - x0) % k == 0 and (x1 - x0) // k >= 6
