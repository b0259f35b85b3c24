"""Layout -> SVG text. Every element becomes a `<g>` with its class, id and data attributes, so
the file can be styled, scripted and checked (tests count `class="lane"` groups)."""
from __future__ import annotations

import base64
import io
from xml.sax.saxutils import escape, quoteattr

from PIL import Image

from .fonts import SVG_FAMILY
from .layout import Bitmap, Element, Layout, Polygon, Polyline, Rect, Text

_ANCHOR = {"start": "start", "middle": "middle", "end": "end"}


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _paint(fill: str | None, stroke: str | None, width: float) -> str:
    out = f' fill="{fill or "none"}"'
    if stroke:
        out += f' stroke="{stroke}" stroke-width="{_num(width)}"'
    return out


def _shape(s) -> str:
    if isinstance(s, Rect):
        return (f'<rect x="{_num(s.x)}" y="{_num(s.y)}" width="{_num(s.w)}" '
                f'height="{_num(s.h)}"{_paint(s.fill, s.stroke, s.stroke_width)}/>')
    if isinstance(s, Polygon):
        pts = " ".join(f"{_num(x)},{_num(y)}" for x, y in s.points)
        return f'<polygon points="{pts}"{_paint(s.fill, s.stroke, s.stroke_width)}/>'
    if isinstance(s, Polyline):
        pts = " ".join(f"{_num(x)},{_num(y)}" for x, y in s.points)
        dash = f' stroke-dasharray="{" ".join(map(_num, s.dash))}"' if s.dash else ""
        return (f'<polyline points="{pts}" fill="none" stroke="{s.stroke}" '
                f'stroke-width="{_num(s.width)}" stroke-linejoin="round"{dash}/>')
    if isinstance(s, Text):
        weight = ' font-weight="bold"' if s.bold else ""
        return (f'<text x="{_num(s.x)}" y="{_num(s.y)}" font-size="{_num(s.size)}" '
                f'text-anchor="{_ANCHOR[s.anchor]}" fill="{s.fill}"{weight}>'
                f'{escape(s.text)}</text>')
    if isinstance(s, Bitmap):
        buf = io.BytesIO()
        Image.fromarray(s.pixels, "RGB").save(buf, "PNG")
        href = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        style = ' style="image-rendering:pixelated"' if s.pixelated else ""
        return (f'<image x="{_num(s.x)}" y="{_num(s.y)}" width="{_num(s.w)}" '
                f'height="{_num(s.h)}" preserveAspectRatio="none"{style} href="{href}"/>')
    raise TypeError(f"cannot draw {type(s).__name__}")


def _element(e: Element) -> str:
    attrs = f" class={quoteattr(e.cls)}"
    if e.id:
        attrs += f" id={quoteattr(e.id)}"
    for k, v in e.data.items():
        attrs += f" data-{k.replace('_', '-')}={quoteattr(v)}"
    inner = "".join(_shape(s) for s in e.shapes)
    return f"<g{attrs}>{inner}</g>"


def render_svg(layout: Layout, width: int | None = None) -> str:
    """The layout as an SVG document; `width` scales it (the viewBox keeps the layout's units)."""
    scale = width / layout.width if width else 1.0
    w, h = layout.width * scale, layout.height * scale
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(w)}" height="{_num(h)}" '
            f'viewBox="0 0 {_num(layout.width)} {_num(layout.height)}" '
            f'font-family={quoteattr(SVG_FAMILY)}>')
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', head]
    if layout.title:
        parts.append(f"<title>{escape(layout.title)}</title>")
    parts.append(f'<rect class="background" x="0" y="0" width="{_num(layout.width)}" '
                 f'height="{_num(layout.height)}" fill="{layout.background}"/>')
    parts.extend(_element(e) for e in layout.elements)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
