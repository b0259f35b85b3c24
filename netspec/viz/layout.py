"""The one picture model that every figure is laid out in, and both renderers draw.

A `Layout` is a canvas size and a list of `Element`s in drawing order. An element is a named
group of primitives (`Rect`, `Polygon`, `Polyline`, `Text`, `Bitmap`) with a class and data
that say what it shows (`lane`, `block`, `arrow`, ...): the SVG writes them as `<g class=...
data-...>`, and tests read them to check what was drawn. Coordinates are pixels at scale 1,
y down; a Text's y is its baseline. Nothing here knows about SVG or Pillow.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .fonts import text_box

Box = tuple[float, float, float, float]   # x0, y0, x1, y1


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str | None = None
    stroke: str | None = None
    stroke_width: float = 1.0

    @property
    def box(self) -> Box:
        return (self.x, self.y, self.x + self.w, self.y + self.h)


@dataclass(frozen=True)
class Polygon:
    points: tuple[tuple[float, float], ...]
    fill: str | None = None
    stroke: str | None = None
    stroke_width: float = 1.0

    @property
    def box(self) -> Box:
        return _points_box(self.points)


@dataclass(frozen=True)
class Polyline:
    points: tuple[tuple[float, float], ...]
    stroke: str = "#000000"
    width: float = 1.0
    dash: tuple[float, ...] | None = None    # on, off, on, off ... lengths

    @property
    def box(self) -> Box:
        return _points_box(self.points)

    def segments(self) -> Iterator[tuple[tuple[float, float], tuple[float, float]]]:
        return zip(self.points, self.points[1:])


@dataclass(frozen=True)
class Text:
    x: float
    y: float                         # baseline
    text: str
    size: float = 12.0
    fill: str = "#222222"
    anchor: str = "start"            # start | middle | end
    bold: bool = False

    @property
    def box(self) -> Box:
        return text_box(self.text, self.size, self.bold, self.x, self.y, self.anchor)


@dataclass(frozen=True, eq=False)
class Bitmap:
    """An RGB image (uint8, H×W×3) drawn into the box; `pixelated` keeps pixels square."""

    x: float
    y: float
    w: float
    h: float
    pixels: np.ndarray
    pixelated: bool = True

    @property
    def box(self) -> Box:
        return (self.x, self.y, self.x + self.w, self.y + self.h)


Shape = Rect | Polygon | Polyline | Text | Bitmap


@dataclass
class Element:
    cls: str                                  # what it is: lane, block, arrow, label, ...
    shapes: list[Shape] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict)
    id: str | None = None

    @property
    def box(self) -> Box:
        return union_boxes(s.box for s in self.shapes)

    @property
    def kinds(self) -> set[str]:
        return set(self.cls.split())


@dataclass
class Layout:
    width: float
    height: float
    elements: list[Element] = field(default_factory=list)
    background: str = "#ffffff"
    title: str = ""

    def add(self, cls: str, *shapes: Shape, id: str | None = None, **data) -> Element:
        el = Element(cls, list(shapes), {k: str(v) for k, v in data.items()}, id)
        self.elements.append(el)
        return el

    def find(self, kind: str) -> list[Element]:
        """Elements whose class list includes `kind`."""
        return [e for e in self.elements if kind in e.kinds]

    def texts(self) -> list[Text]:
        return [s for e in self.elements for s in e.shapes if isinstance(s, Text)]


def _points_box(points) -> Box:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


def union_boxes(boxes) -> Box:
    boxes = list(boxes)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def boxes_overlap(a: Box, b: Box, margin: float = 0.0) -> bool:
    """True when the boxes share interior area (touching edges don't count)."""
    return (a[0] < b[2] + margin and b[0] < a[2] + margin and
            a[1] < b[3] + margin and b[1] < a[3] + margin)


def segment_hits_box(p: tuple[float, float], q: tuple[float, float], box: Box) -> bool:
    """Whether the segment p-q passes through the box's interior (Liang-Barsky clipping)."""
    x0, y0, x1, y1 = box
    dx, dy = q[0] - p[0], q[1] - p[1]
    t0, t1 = 0.0, 1.0
    for d, lo_gap, hi_gap in ((dx, p[0] - x0, x1 - p[0]), (dy, p[1] - y0, y1 - p[1])):
        if d == 0:
            if lo_gap <= 0 or hi_gap <= 0:
                return False
            continue
        ta, tb = -lo_gap / d, hi_gap / d
        if ta > tb:
            ta, tb = tb, ta
        t0, t1 = max(t0, ta), min(t1, tb)
        if t0 >= t1:
            return False
    return True


def arrow_head(tip: tuple[float, float], tail: tuple[float, float], length: float = 8.0,
               half_width: float = 3.5) -> tuple[tuple[float, float], ...]:
    """A filled triangle at `tip`, pointing away from `tail`."""
    dx, dy = tip[0] - tail[0], tip[1] - tail[1]
    n = (dx * dx + dy * dy) ** 0.5 or 1.0
    ux, uy = dx / n, dy / n
    bx, by = tip[0] - ux * length, tip[1] - uy * length
    return (tip, (bx - uy * half_width, by + ux * half_width),
            (bx + uy * half_width, by - ux * half_width))


def overlapping_texts(layout: Layout, margin: float = 0.0) -> list[tuple[Text, Text]]:
    """Pairs of texts whose boxes overlap: what a reader would see as clashing labels."""
    texts = [t for t in layout.texts() if t.text]
    boxes = [t.box for t in texts]
    out = []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if boxes_overlap(boxes[i], boxes[j], margin):
                out.append((texts[i], texts[j]))
    return out
