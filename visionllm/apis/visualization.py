"""Draw a :class:`~visionllm.apis.inference.Prediction` over its image: boxes, semi-transparent
polygons and "class score" labels, one colour per requested class; the request's input regions (dashed
white boxes, numbered) and points (white rings), and an answer in words in a band under the image.

Small images are scaled up before drawing (to ``min_size`` on their longer side) so that labels stay
readable; the output PNG has the drawn size.
"""

from __future__ import annotations

import os

from PIL import Image, ImageDraw, ImageFont

from visionllm.apis.inference import ImageInput, Prediction, load_rgb

#: Matplotlib's tab10 colours: distinct and readable on photos.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
FILL_ALPHA = 90


def draw_predictions(
    image: ImageInput,
    prediction: Prediction,
    out_png: str | os.PathLike | None = None,
    *,
    min_size: int = 512,
) -> Image.Image:
    """The image with ``prediction`` drawn on it, saved to ``out_png`` when given.

    ``image`` is what was predicted on (path, PIL image or RGB array); it must have the prediction's
    size. Lower-scoring objects are drawn first, so the best ones stay on top.
    """
    pixels = load_rgb(image)
    if pixels.shape[:2] != (prediction.height, prediction.width):
        raise ValueError(
            f"the image is {pixels.shape[1]}x{pixels.shape[0]} but the prediction was made on a "
            f"{prediction.width}x{prediction.height} image"
        )
    scale = max(1.0, min_size / max(prediction.width, prediction.height))
    size = (round(prediction.width * scale), round(prediction.height * scale))
    canvas = Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC).convert("RGBA")
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font_size = max(14, round(max(size) / 50))
    font = ImageFont.load_default(size=font_size)
    line_width = max(2, font_size // 7)
    colour_of = {name: PALETTE[k % len(PALETTE)] for k, name in enumerate(prediction.request.classes)}
    objects = sorted(prediction.objects, key=lambda obj: obj.score)
    for obj in objects:
        for polygon in obj.polygons:
            points = [(x * scale, y * scale) for x, y in zip(polygon[::2], polygon[1::2])]
            colour = colour_of[obj.class_name]
            draw.polygon(points, fill=(*colour, FILL_ALPHA), outline=(*colour, 255), width=line_width // 2)
    for obj in objects:
        colour = colour_of[obj.class_name]
        x1, y1, x2, y2 = (v * scale for v in obj.box)
        draw.rectangle((x1, y1, x2, y2), outline=(*colour, 255), width=line_width)
        text = f"{obj.class_name} {obj.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        width, height = right - left + 2 * line_width, bottom - top + 2 * line_width
        label_y = y1 - height if y1 >= height else y1  # above the box, else inside its top edge
        draw.rectangle((x1, label_y, x1 + width, label_y + height), fill=(*colour, 255))
        text_colour = (0, 0, 0) if sum(colour) > 3 * 150 else (255, 255, 255)
        draw.text((x1 + line_width - left, label_y + line_width - top), text, fill=text_colour, font=font)
    _draw_inputs(draw, prediction, scale, font, line_width)
    drawn = Image.alpha_composite(canvas, overlay).convert("RGB")
    if prediction.text is not None:
        drawn = _with_answer(drawn, f"{prediction.request.task}: {prediction.text}", font, line_width)
    if out_png is not None:
        drawn.save(out_png)
    return drawn


def _draw_inputs(
    draw: ImageDraw.ImageDraw, prediction: Prediction, scale: float, font, line_width: int
) -> None:
    """The request's regions (dashed boxes labelled 1, 2, ...) and points (rings), in white on black."""
    for k, (x1, y1, x2, y2) in enumerate(prediction.request.regions, 1):
        x1, y1, x2, y2 = (v * scale for v in (x1, y1, x2, y2))
        dash = 4 * line_width
        for start in range(0, int(2 * (x2 - x1 + y2 - y1)), 2 * dash):
            segment = _perimeter_segment(x1, y1, x2, y2, start, start + dash)
            draw.line(segment, fill=(255, 255, 255, 255), width=line_width)
        draw.text((x1 + line_width, y1 + line_width), str(k), fill=(255, 255, 255, 255), font=font,
                  stroke_width=2, stroke_fill=(0, 0, 0, 255))  # fmt: skip
    for x, y in prediction.request.points:
        radius = 3 * line_width
        x, y = x * scale, y * scale
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius), outline=(0, 0, 0, 255), width=line_width + 2
        )
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius), outline=(255, 255, 255, 255), width=line_width
        )


def _perimeter_segment(x1: float, y1: float, x2: float, y2: float, a: float, b: float) -> list[tuple]:
    """The points of the box outline between arc lengths ``a`` and ``b`` (clockwise from the top left)."""
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    points, walked = [], 0.0
    for (px, py), (qx, qy) in zip(corners, corners[1:]):
        length = abs(qx - px) + abs(qy - py)
        lo, hi = max(a - walked, 0.0), min(b - walked, length)
        if lo < hi and length:
            t0, t1 = lo / length, hi / length
            segment = [(px + (qx - px) * t0, py + (qy - py) * t0), (px + (qx - px) * t1, py + (qy - py) * t1)]
            points += segment if not points else segment[1:]
        walked += length
    return points or [(x1, y1), (x1, y1)]


def _with_answer(image: Image.Image, text: str, font, margin: int) -> Image.Image:
    """``image`` above a white band holding ``text``."""
    probe = ImageDraw.Draw(image)
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    band = bottom - top + 4 * margin
    out = Image.new("RGB", (image.width, image.height + band), (255, 255, 255))
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text(
        (2 * margin - left, image.height + 2 * margin - top), text, fill=(0, 0, 0), font=font
    )
    return out
