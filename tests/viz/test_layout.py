"""The picture model's geometry helpers, and the PNG renderer's dashes."""
from __future__ import annotations

import pytest

from netspec.viz.fonts import fit_text, text_box, text_width
from netspec.viz.layout import (
    Layout,
    Text,
    arrow_head,
    boxes_overlap,
    overlapping_texts,
    segment_hits_box,
)
from netspec.viz.png import dash_segments


def test_segment_hits_box_cases():
    box = (0, 0, 10, 10)
    assert segment_hits_box((-5, 5), (15, 5), box)
    assert segment_hits_box((-5, -5), (15, 15), box)
    assert not segment_hits_box((-5, 12), (15, 12), box)
    assert not segment_hits_box((-5, 10), (15, 10), box)
    assert segment_hits_box((4, 4), (6, 6), box)
    assert not segment_hits_box((-4, -4), (-1, -1), box)
    assert not segment_hits_box((-1, 5), (5, -1), (0, 0, 1, 1))   # misses a corner
    assert not segment_hits_box((5, -5), (5, 15), (6, 0, 10, 10))  # vertical, beside it


def test_boxes_overlap_needs_shared_area():
    assert boxes_overlap((0, 0, 10, 10), (5, 5, 15, 15))
    assert not boxes_overlap((0, 0, 10, 10), (10, 0, 20, 10))
    assert boxes_overlap((0, 0, 10, 10), (10, 0, 20, 10), margin=1)


def test_overlapping_texts_finds_a_clash():
    layout = Layout(200, 100)
    layout.add("a", Text(10, 50, "conv1 55×55×48"))
    layout.add("b", Text(40, 52, "overlaps"))
    layout.add("c", Text(10, 90, "clear"))
    clashes = overlapping_texts(layout)
    assert [(a.text, b.text) for a, b in clashes] == [("conv1 55×55×48", "overlaps")]


def test_text_box_follows_the_anchor():
    left = text_box("label", 12, x=100, y=50, anchor="start")
    mid = text_box("label", 12, x=100, y=50, anchor="middle")
    right = text_box("label", 12, x=100, y=50, anchor="end")
    assert left[0] == pytest.approx(100, abs=2)
    assert (mid[0] + mid[2]) / 2 == pytest.approx(100, abs=1)
    assert right[2] == pytest.approx(100, abs=2)
    assert left[1] < 50 < left[3] + 1      # baseline at y: ascent above it


def test_fit_text_shortens_with_an_ellipsis():
    long = "great white shark, white shark, man-eater, man-eating shark"
    short = fit_text(long, 11, 120)
    assert short.endswith("…") and text_width(short, 11) <= 120
    assert fit_text("hen", 11, 120) == "hen"


def test_arrow_head_points_along_the_line():
    tip, a, b = arrow_head((100, 50), (0, 50), length=8, half_width=3)
    assert tip == (100, 50)
    assert a[0] == b[0] == pytest.approx(92)
    assert sorted([a[1], b[1]]) == pytest.approx([47, 53])


def test_dashes_alternate_along_a_polyline():
    pieces = dash_segments([(0, 0), (10, 0), (10, 10)], (4, 2))
    # the pattern carries over the corner: on 0-4, off 4-6, on 6-10, off 0-2 down the second
    # segment, on 2-6, off 6-8, on 8-10
    assert pieces == [((0, 0), (4, 0)), ((6, 0), (10, 0)), ((10, 2), (10, 6)),
                      ((10, 8), (10, 10))]
