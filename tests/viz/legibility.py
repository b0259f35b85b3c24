"""Checks on a diagram's layout shared by the figure tests."""
from __future__ import annotations

from netspec.viz import overlapping_texts
from netspec.viz.layout import Polyline, boxes_overlap, segment_hits_box


def assert_legible(layout) -> None:
    """No labels overlap or leave the canvas; no label sits on a block; no arrow runs
    through a label or through a block it doesn't connect."""
    assert overlapping_texts(layout, margin=1.0) == []
    texts = [(t.text, t.box) for t in layout.texts() if t.text]
    blocks = [(f"{b.data['layer']}:{b.data['part']}", b.box) for b in layout.find("block")]
    for text, (x0, y0, x1, y1) in texts:
        assert 0 <= x0 and x1 <= layout.width and 0 <= y0 and y1 <= layout.height, text
        for name, box in blocks:
            assert not boxes_overlap((x0, y0, x1, y1), box), (text, name)
    for arrow in layout.find("arrow"):
        ends = {arrow.data["src"], arrow.data["dst"]}
        others = [(n, b) for n, b in blocks if n not in ends]
        for shape in arrow.shapes:
            if not isinstance(shape, Polyline):
                continue
            for p, q in shape.segments():
                for text, box in texts:
                    assert not segment_hits_box(p, q, box), (arrow.data, text)
                for name, box in others:
                    assert not segment_hits_box(p, q, box), (arrow.data, name)
