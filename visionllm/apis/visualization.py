"""Draw a :class:`~visionllm.apis.inference.Prediction` over its image: boxes, semi-transparent
polygons and "class score" labels, one colour per requested class.

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
    drawn = Image.alpha_composite(canvas, overlay).convert("RGB")
    if out_png is not None:
        drawn.save(out_png)
    return drawn
