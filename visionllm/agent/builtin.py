"""The built-in tools: the model's tasks (through the executor's Predictor) and plain operations on
images and objects. :func:`default_registry` returns a fresh registry holding all of them."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from visionllm.agent.tools import Object, Objects, ToolContext, ToolRegistry
from visionllm.apis.visualization import draw_predictions
from visionllm.structures import Prediction
from visionllm.tasks.base import Request

Selector = Literal["largest", "smallest", "leftmost", "rightmost", "topmost", "bottommost", "best"]


def _predict(ctx: ToolContext, image: Image.Image, **request) -> Objects:
    if ctx.predictor is None:
        raise RuntimeError("this tool needs the model, but the agent was started without a Predictor")
    [prediction] = ctx.predictor.predict(np.asarray(image.convert("RGB")), score_thr=ctx.score_thr, **request)
    return prediction.objects


def detect(ctx: ToolContext, image: Image.Image, classes: list[str]) -> Objects:
    """Find every object of the named classes: boxes, classes and scores."""
    return _predict(ctx, image, task="detect", classes=classes)


def segment(ctx: ToolContext, image: Image.Image, classes: list[str]) -> Objects:
    """Find every object of the named classes with its outline (polygon and mask)."""
    return _predict(ctx, image, task="segment", classes=classes)


def ground(ctx: ToolContext, image: Image.Image, phrase: str) -> Objects:
    """Find the object a referring phrase describes, e.g. 'the red car on the left'."""
    return _predict(ctx, image, task="ground", phrase=phrase)


def _area(obj: Object) -> float:
    x1, y1, x2, y2 = obj.box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def _centre(obj: Object) -> tuple[float, float]:
    x1, y1, x2, y2 = obj.box
    return (x1 + x2) / 2, (y1 + y2) / 2


_SELECT_KEYS = {
    "largest": lambda o: -_area(o),
    "smallest": _area,
    "leftmost": lambda o: _centre(o)[0],
    "rightmost": lambda o: -_centre(o)[0],
    "topmost": lambda o: _centre(o)[1],
    "bottommost": lambda o: -_centre(o)[1],
    "best": lambda o: -o.score,
}


def select(objects: Objects, by: Selector) -> Object:
    """Pick one object: the largest, smallest, leftmost, rightmost, topmost, bottommost or best-scoring."""
    if not objects:
        raise ValueError(f"there is no {by} object: nothing was found")
    return min(objects, key=_SELECT_KEYS[by])  # min is stable: ties keep the model's order


def select_class(objects: Objects, class_name: str) -> Objects:
    """Keep the objects of one class."""
    return [obj for obj in objects if obj.class_name == class_name]


def count(objects: Objects) -> int:
    """How many objects there are."""
    return len(objects)


def _box_pixels(image: Image.Image, obj: Object) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = obj.box
    return (
        max(0, int(np.floor(x1))),
        max(0, int(np.floor(y1))),
        min(image.width, int(np.ceil(x2))),
        min(image.height, int(np.ceil(y2))),
    )


def crop(image: Image.Image, object: Object) -> Image.Image:
    """The part of the image inside one object's box."""
    box = _box_pixels(image, object)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"the {object.class_name}'s box {object.box} has no area inside the image")
    return image.crop(box)


def crop_each(image: Image.Image, objects: Objects) -> list[Image.Image]:
    """One crop per object, in order."""
    return [crop(image, obj) for obj in objects]


def _region_mask(image: Image.Image, objects: Objects) -> Image.Image:
    """An L mask of the objects' outlines (their boxes where they have none)."""
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    for obj in objects:
        outlines = [p for p in obj.polygons if len(p) >= 6]
        for polygon in outlines:
            draw.polygon(list(zip(polygon[::2], polygon[1::2])), fill=255)
        if not outlines:
            draw.rectangle(_box_pixels(image, obj), fill=255)
    return mask


def mask_out(image: Image.Image, objects: Objects) -> Image.Image:
    """The image with the objects' regions painted black."""
    return Image.composite(Image.new("RGB", image.size), image.convert("RGB"), _region_mask(image, objects))


def blur(image: Image.Image, objects: Objects, radius: int = 8) -> Image.Image:
    """The image with the objects' regions blurred."""
    rgb = image.convert("RGB")
    return Image.composite(rgb.filter(ImageFilter.GaussianBlur(radius)), rgb, _region_mask(image, objects))


def draw(image: Image.Image, objects: Objects) -> Image.Image:
    """The image with the objects' boxes, outlines and labels drawn on it."""
    classes = list(dict.fromkeys(obj.class_name for obj in objects))
    shaped = bool(objects) and all(obj.mask is not None and obj.polygons for obj in objects)
    prediction = Prediction(
        request=Request(task="detect", classes=classes, text=""),
        decode_mode="agent",
        height=image.height,
        width=image.width,
        boxes=[obj.box for obj in objects],
        scores=[obj.score for obj in objects],
        class_indices=[classes.index(obj.class_name) for obj in objects],
        labels=[obj.label for obj in objects],
        polygons=[obj.polygons[0] for obj in objects] if shaped else None,
        masks=[obj.mask for obj in objects] if shaped else None,
    )
    return draw_predictions(np.asarray(image.convert("RGB")), prediction, min_size=0)


def _position(obj: Object, width: float, height: float) -> str:
    x, y = _centre(obj)
    column = "left" if x < width / 3 else "right" if x > 2 * width / 3 else "centre"
    row = "top" if y < height / 3 else "bottom" if y > 2 * height / 3 else "middle"
    return "centre" if (row, column) == ("middle", "centre") else f"{row} {column}"


def describe(image: Image.Image, objects: Objects) -> str:
    """Each object's class, score, box, place in the image (top left ... bottom right) and area."""
    if not objects:
        return "Nothing was found."
    width, height = image.size
    lines = [
        f"{obj.class_name} ({obj.score:.2f}) at [{', '.join(f'{v:.0f}' for v in obj.box)}], "
        f"{_position(obj, width, height)}, {_area(obj):.0f} px²"
        for obj in objects
    ]
    return f"{len(objects)} object{'s' if len(objects) != 1 else ''}: " + "; ".join(lines) + "."


#: Named colours by hue (degrees, the upper end of each band); low saturation or value reads as grey,
#: black or white.
_HUES = ((15, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (250, "blue"), (290, "purple"),
         (340, "pink"), (360, "red"))  # fmt: skip


def colour_name(rgb: np.ndarray) -> str:
    """The name of an RGB colour (0-255): black, white or grey when dull, else its hue's band."""
    r, g, b = (float(v) / 255 for v in rgb)
    high, low = max(r, g, b), min(r, g, b)
    if high < 0.2:
        return "black"
    if high - low < 0.15 * high or high - low < 0.1:
        return "white" if high > 0.85 else "grey"
    if high == r:
        hue = (60 * (g - b) / (high - low)) % 360
    elif high == g:
        hue = 60 * (b - r) / (high - low) + 120
    else:
        hue = 60 * (r - g) / (high - low) + 240
    return next(name for bound, name in _HUES if hue < bound)


def colour(image: Image.Image, objects: Objects) -> str:
    """Each object's colour: the name of the median colour inside its outline (its box without one)."""
    if not objects:
        return "Nothing was found."
    pixels = np.asarray(image.convert("RGB"))
    named = []
    for obj in objects:
        inside = np.asarray(_region_mask(image, [obj])) > 0
        rgb = np.median(pixels[inside], axis=0) if inside.any() else np.zeros(3)
        named.append(f"{obj.class_name} at [{', '.join(f'{v:.0f}' for v in obj.box)}]: {colour_name(rgb)}")
    return "; ".join(named) + "."


def compare(a: Object, b: Object) -> str:
    """Compare two objects' sizes and positions (larger/smaller, left/right, above/below)."""
    area_a, area_b = _area(a), _area(b)
    (xa, ya), (xb, yb) = _centre(a), _centre(b)
    size = "the same size as" if area_a == area_b else "larger than" if area_a > area_b else "smaller than"
    side = "left of" if xa < xb else "right of" if xa > xb else "level with"
    level = "above" if ya < yb else "below" if ya > yb else "level with"
    return (
        f"The {a.class_name} ({area_a:.0f} px²) is {size} the {b.class_name} ({area_b:.0f} px²), "
        f"{side} it and {level} it."
    )


BUILTIN_TOOLS = (
    detect, segment, ground, select, select_class, count, crop, crop_each, mask_out, blur, draw, describe,
    colour, compare,
)  # fmt: skip


def default_registry() -> ToolRegistry:
    """A new registry with every built-in tool (add your own to it with ``register``)."""
    registry = ToolRegistry()
    for function in BUILTIN_TOOLS:
        registry.register(function)
    return registry
