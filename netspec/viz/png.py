"""Layout -> Pillow image. Drawn at twice the target size and scaled down, because ImageDraw
does not antialias lines or polygon edges; the reduction smooths them."""
from __future__ import annotations

from PIL import Image, ImageDraw

from .fonts import ANCHORS, load_font
from .layout import Bitmap, Layout, Polygon, Polyline, Rect, Text

SUPERSAMPLE = 2


def dash_segments(points, pattern) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The 'on' pieces of a polyline drawn with a dash pattern (on, off, on, off ...)."""
    out = []
    k, left, on = 0, pattern[0], True    # pattern index, length left in it, drawing?
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        seg = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
        t = 0.0
        while seg > 0 and t < seg:
            step = min(left, seg - t)
            if on:
                a, b = t / seg, (t + step) / seg
                out.append(((x0 + (x1 - x0) * a, y0 + (y1 - y0) * a),
                            (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)))
            t += step
            left -= step
            if left <= 1e-9:
                k = (k + 1) % len(pattern)
                left, on = pattern[k], not on
    return out


def render_png(layout: Layout, width: int | None = None) -> Image.Image:
    """The layout as an RGB image, `width` pixels wide (default: the layout's own width)."""
    scale = (width / layout.width) if width else 1.0
    out_size = (max(1, round(layout.width * scale)), max(1, round(layout.height * scale)))
    s = scale * SUPERSAMPLE
    img = Image.new("RGB", (round(layout.width * s), round(layout.height * s)),
                    layout.background)
    draw = ImageDraw.Draw(img)

    def pt(p):
        return (p[0] * s, p[1] * s)

    def lw(w):
        return max(1, round(w * s))

    for e in layout.elements:
        for sh in e.shapes:
            if isinstance(sh, Rect):
                draw.rectangle([sh.x * s, sh.y * s, (sh.x + sh.w) * s, (sh.y + sh.h) * s],
                               fill=sh.fill, outline=sh.stroke,
                               width=lw(sh.stroke_width) if sh.stroke else 0)
            elif isinstance(sh, Polygon):
                pts = [pt(p) for p in sh.points]
                draw.polygon(pts, fill=sh.fill)
                if sh.stroke:
                    draw.line(pts + pts[:1], fill=sh.stroke, width=lw(sh.stroke_width),
                              joint="curve")
            elif isinstance(sh, Polyline):
                if sh.dash:
                    for a, b in dash_segments(sh.points, sh.dash):
                        draw.line([pt(a), pt(b)], fill=sh.stroke, width=lw(sh.width))
                else:
                    draw.line([pt(p) for p in sh.points], fill=sh.stroke, width=lw(sh.width),
                              joint="curve")
            elif isinstance(sh, Text):
                draw.text(pt((sh.x, sh.y)), sh.text, fill=sh.fill,
                          font=load_font(sh.size * s, sh.bold), anchor=ANCHORS[sh.anchor])
            elif isinstance(sh, Bitmap):
                box = (round(sh.x * s), round(sh.y * s), round((sh.x + sh.w) * s),
                       round((sh.y + sh.h) * s))
                tile = Image.fromarray(sh.pixels, "RGB").resize(
                    (box[2] - box[0], box[3] - box[1]),
                    Image.Resampling.NEAREST if sh.pixelated else Image.Resampling.LANCZOS)
                img.paste(tile, box[:2])
            else:
                raise TypeError(f"cannot draw {type(sh).__name__}")
    return img.resize(out_size, Image.Resampling.LANCZOS)
