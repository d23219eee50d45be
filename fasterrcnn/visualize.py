"""Drawing detections on images (boxes, class names, scores) with Pillow."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["class_colour", "draw_detections"]


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per class label (golden-ratio hues)."""
    h = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    width: int | None = None,
) -> Image.Image:
    """A copy of `image` with each box outlined in its class colour and labelled
    "name score". Label i is `class_names[i - 1]` (0 is background)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    lw = width or max(2, round(min(out.size) / 300))
    font = ImageFont.load_default(size=max(11, round(min(out.size) / 40)))
    for i, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        colour = class_colour(int(label))
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=lw)
        name = class_names[int(label) - 1] if class_names and 0 < int(label) <= len(class_names) else str(int(label))
        text = name if scores is None else f"{name} {float(scores[i]):.2f}"
        tx, ty = x1, max(0.0, y1 - font.size - 4)
        bbox = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle([bbox[0] - 2, bbox[1] - 2, bbox[2] + 2, bbox[3] + 2], fill=colour)
        draw.text((tx, ty), text, fill=(0, 0, 0), font=font)
    return out
