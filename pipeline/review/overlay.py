"""Pose overlays for review thumbnails, drawn with Pillow.

Each person gets one colour for its box, skeleton (``model.keypoints.SKELETON``) and
keypoints. A keypoint's marker grows with its score; keypoints (and the limbs that touch
them) scoring below a threshold are drawn faded and hollow, never hidden. Detected persons
have a solid box, recovered ones (``origin == 'recovered'``) a dashed box and the word
"recovered" in their label.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model.codecs.boxes import xywh_to_xyxy
from model.codecs.coords import original_to_decoded
from model.keypoints import NUM_KEYPOINTS, SKELETON
from schemas.output import ORIGIN_RECOVERED

# Keypoints below this score are drawn faded (pose_score averages the keypoints above 0.2).
KEYPOINT_THRESHOLD = 0.2

# Saturated colours that stay readable on photographs, one per person (cycled).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64),
    (64, 160, 255),
    (80, 220, 90),
    (255, 190, 0),
    (220, 90, 255),
    (0, 220, 220),
    (255, 120, 190),
    (170, 255, 60),
    (255, 140, 40),
    (150, 150, 255),
)

_STRONG_ALPHA = 235
_FADED_ALPHA = 95


def person_colour(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th person of an image."""
    return PALETTE[index % len(PALETTE)]


def _font(size: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, round(size)))


def _dashed_line(
    draw: ImageDraw.ImageDraw,
    start: tuple[float, float],
    end: tuple[float, float],
    fill: tuple[int, ...],
    width: int,
    dash: float,
) -> None:
    (x0, y0), (x1, y1) = start, end
    length = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
    if length == 0:
        return
    steps = max(1, int(length // dash))
    for k in range(0, steps, 2):
        a, b = k / steps, min(1.0, (k + 1) / steps)
        draw.line(
            (x0 + (x1 - x0) * a, y0 + (y1 - y0) * a, x0 + (x1 - x0) * b, y0 + (y1 - y0) * b),
            fill=fill,
            width=width,
        )


def _box(
    draw: ImageDraw.ImageDraw,
    xyxy: tuple[float, float, float, float],
    fill: tuple[int, ...],
    width: int,
    dashed: bool,
    dash: float,
) -> None:
    x0, y0, x1, y1 = xyxy
    if not dashed:
        draw.rectangle(xyxy, outline=fill, width=width)
        return
    for start, end in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)),
                       ((x0, y1), (x0, y0))):  # fmt: skip
        _dashed_line(draw, start, end, fill, width, dash)


def draw_poses(
    image: Image.Image,
    persons: Sequence[dict[str, Any]],
    scale: float,
    *,
    threshold: float = KEYPOINT_THRESHOLD,
    line_scale: float = 1.0,
) -> Image.Image:
    """``image`` (RGB) with every person drawn on it; a new image, the input is left alone.

    Args:
        image: the picture, ``scale`` times the size of the original image.
        persons: rows' ``persons`` entries (``box_xywh``, ``keypoints`` as 17 x ``x, y, score``
            in original pixels, ``pose_score``, ``origin``).
        scale: original pixels to ``image`` pixels.
        threshold: keypoints scoring below it are drawn faded and hollow.
        line_scale: multiplies line widths, marker sizes and text (2 when drawing at twice the
            final size, to be shrunk afterwards for smooth edges).
    """
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    limb_width = max(1, round(2.5 * line_scale))
    box_width = max(1, round(2 * line_scale))
    font = _font(12 * line_scale)
    parsed = []
    for index, person in enumerate(persons):
        kp = np.asarray(person["keypoints"], np.float64).reshape(-1, 3)[:NUM_KEYPOINTS]
        xy = original_to_decoded(kp[:, :2], scale)
        points = [(float(x), float(y), float(v)) for (x, y), v in zip(xy, kp[:, 2], strict=True)]
        parsed.append((index, person, person_colour(index), points))

    # Faded parts first, so confident ones are drawn over them.
    for faded_pass in (True, False):
        for _, _, colour, points in parsed:
            for a, b in SKELETON:
                if a >= len(points) or b >= len(points):
                    continue
                (xa, ya, sa), (xb, yb, sb) = points[a], points[b]
                if (min(sa, sb) < threshold) != faded_pass:
                    continue
                alpha = _FADED_ALPHA if faded_pass else _STRONG_ALPHA
                draw.line((xa, ya, xb, yb), fill=(*colour, alpha), width=limb_width)
    for faded_pass in (True, False):
        for _, _, colour, points in parsed:
            for x, y, score in points:
                if (score < threshold) != faded_pass:
                    continue
                s = min(max(score, 0.0), 1.0)
                radius = (1.5 + 3.0 * s) * line_scale
                ellipse = (x - radius, y - radius, x + radius, y + radius)
                if faded_pass:
                    draw.ellipse(
                        ellipse,
                        outline=(*colour, _FADED_ALPHA + 40),
                        width=max(1, round(line_scale)),
                    )
                else:
                    draw.ellipse(
                        ellipse,
                        fill=(*colour, _STRONG_ALPHA),
                        outline=(255, 255, 255, 220),
                        width=max(1, round(0.75 * line_scale)),
                    )
    for index, person, colour, _ in parsed:
        x1, y1, x2, y2 = original_to_decoded(xywh_to_xyxy(person["box_xywh"]), scale).tolist()
        recovered = person.get("origin") == ORIGIN_RECOVERED
        _box(draw, (x1, y1, x2, y2), (*colour, 230), box_width, recovered, 6 * line_scale)
        label = f"{index + 1} {float(person['pose_score']):.2f}"
        if recovered:
            label += " recovered"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        pad = 2 * line_scale
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        lx = min(max(0.0, x1), max(0.0, base.width - tw))
        ly = y1 - th if y1 - th >= 0 else y1
        draw.rectangle((lx, ly, lx + tw, ly + th), fill=(*colour, 215))
        draw.text((lx + pad - left, ly + pad - top), label, fill=(0, 0, 0, 255), font=font)
    return Image.alpha_composite(base, layer).convert("RGB")


def placeholder(size: tuple[int, int], title: str, reason: str) -> Image.Image:
    """A grey tile saying why there is no picture (``title`` on top, ``reason`` wrapped)."""
    width, height = size
    img = Image.new("RGB", size, (58, 58, 62))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(200, 80, 80), width=3)
    title_font, body_font = _font(20), _font(13)
    draw.text((16, 16), title, fill=(255, 200, 200), font=title_font)
    chars = max(10, int((width - 32) / 7.5))
    lines = textwrap.wrap(reason, chars)[: max(1, (height - 60) // 17)]
    for i, line in enumerate(lines):
        draw.text((16, 52 + 17 * i), line, fill=(230, 230, 230), font=body_font)
    return img
