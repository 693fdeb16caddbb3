"""Small PNG bar charts (histograms) drawn with Pillow, for reports that must read anywhere — in a mail
client, a chat preview, a file opened years later — without JavaScript."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from PIL import Image, ImageDraw

BAR = (37, 99, 235)
AXIS = (100, 116, 139)
TEXT = (15, 23, 42)


def histogram_png(counts: Sequence[int | float], edges: Sequence[float], title: str, *, width: int = 420,
                  height: int = 180) -> bytes:
    """A bar per bin, the bin edges under the first, middle and last bars, the largest count on the axis."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 36, width - 10, 22, height - 22
    draw.text((left, 4), title[:70], fill=TEXT)
    draw.line([(left, bottom), (right, bottom)], fill=AXIS)
    draw.line([(left, top), (left, bottom)], fill=AXIS)
    peak = max([float(c) for c in counts] + [1.0])
    draw.text((4, top), f"{peak:g}"[:5], fill=AXIS)
    n = max(len(counts), 1)
    step = (right - left) / n
    for i, c in enumerate(counts):
        h = (bottom - top) * float(c) / peak
        x0 = left + i * step + 1
        draw.rectangle([x0, bottom - h, x0 + max(step - 2, 1), bottom], fill=BAR)
    if len(edges) >= 2:
        for i in sorted({0, len(edges) // 2, len(edges) - 1}):
            x = left + i * step
            draw.text((min(max(x - 8, 0), width - 30), bottom + 4), f"{edges[i]:.3g}", fill=AXIS)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
