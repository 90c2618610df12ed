"""Synthetic shapes: VisionLLM's embedded default dataset, generated on the fly in COCO format.

Why: demos, tests and CI need a detection / segmentation set with attributes that costs no download
and is bit-for-bit reproducible. Each image is a textured background with 1..``max_objects`` filled
shapes; every shape carries a class, a colour and a size, so the same images serve detection,
instance segmentation, grounding ("the large red star") and captioning.

Guarantees (tested in ``tests/test_synthetic.py``):

* Deterministic: the same arguments give the same JSON and PNG bytes. Image ``i`` depends only on
  ``(seed, i, image_size, min_objects, max_objects)``, not on ``num_images``.
* Pixel-exact labels: a shape is painted with the mask that pycocotools rasterises from its
  ``segmentation``, so ``annToMask`` is exactly the painted region and ``area`` is its pixel count.
* Shapes lie fully inside the image, every two boxes have IoU <= ``MAX_BOX_IOU``, and each shape keeps
  at least ``MIN_VISIBLE_FRACTION`` of its pixels visible under the shapes drawn after it.
  Annotations of an image are listed in drawing order (later ones on top).
* Background pixels are low-saturation colours plus mild noise: far from every (saturated) object colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from visionllm.fileio import write_json_atomic

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")
#: Saturated, well-separated object colours (every channel spread >= 140, far from the grey backgrounds).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
SIZES: tuple[str, ...] = ("small", "medium", "large")
#: Diameter of the shape's circumscribed circle, as a fraction of ``image_size``; gaps keep sizes separable.
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.08, 0.14),
    "medium": (0.16, 0.24),
    "large": (0.26, 0.36),
}
BACKGROUNDS: tuple[str, ...] = ("gradient", "noise", "stripes", "checkerboard")
MAX_BOX_IOU = 0.3
MIN_VISIBLE_FRACTION = 0.7
#: Fresh positions / rotations tried per shape before it is dropped (so an image may hold fewer shapes).
PLACEMENT_ATTEMPTS = 50
MIN_IMAGE_SIZE = 64
_BORDER = 1.0  # px kept free at the image edges, so rounded vertices stay inside
_DECIMALS = 2  # JSON coordinates are rounded first; every derived quantity uses the rounded polygon
_BG_TINT = 40.0  # max per-channel deviation of a background colour from grey
_BG_NOISE_MAX_SIGMA = 6.0


def _regular_polygon(num_vertices: int, phase: float = -np.pi / 2) -> np.ndarray:
    """Vertices (N, 2) on the unit circle, the first at angle ``phase`` (default: pointing up)."""
    angles = phase + 2 * np.pi * np.arange(num_vertices) / num_vertices
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(inner_radius: float = 0.45) -> np.ndarray:
    """Five-pointed star: 10 vertices alternating between radius 1 and ``inner_radius``."""
    radii = np.where(np.arange(10) % 2 == 0, 1.0, inner_radius)
    return _regular_polygon(10) * radii[:, None]


def _cross(half_width: float = 0.3) -> np.ndarray:
    """Plus sign: 12 vertices, arms of half-width ``half_width``, circumradius 1."""
    a, b = half_width, 1.0
    outline = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b)]
    outline += [(-x, -y) for x, y in outline]
    vertices = np.array(outline)
    return vertices / np.hypot(a, b)


#: Unit outlines (circumradius 1, centred on the origin) of every class.
_OUTLINES: dict[str, np.ndarray] = {
    "circle": _regular_polygon(32),
    "square": _regular_polygon(4, phase=np.pi / 4),
    "triangle": _regular_polygon(3),
    "star": _star(),
    "hexagon": _regular_polygon(6),
    "cross": _cross(),
}


@dataclass
class _Shape:
    """One placed shape; ``visible`` shrinks as later shapes are drawn over it."""

    class_name: str
    color: str
    size: str
    polygon: list[float]  # x1, y1, x2, y2, ... (rounded)
    bbox: list[float]  # x, y, w, h: tight box of the polygon
    mask: np.ndarray  # (H, W) bool, pycocotools rasterisation of ``polygon``
    area: int  # pixels in ``mask``, as pycocotools computes it
    visible: np.ndarray  # (H, W) bool


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent generator per stream: 0 draws the train/val split, ``i >= 1`` draws image ``i``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def _muted_color(rng: np.random.Generator) -> np.ndarray:
    """A random near-grey colour (channel spread <= 2 * _BG_TINT), far from every object colour."""
    grey = rng.uniform(40.0, 215.0)
    return grey + rng.uniform(-_BG_TINT, _BG_TINT, size=3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured (size, size, 3) uint8 background: two muted colours blended by a random pattern."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    color0, color1 = _muted_color(rng), _muted_color(rng)
    theta = rng.uniform(0.0, np.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    u = xs * np.cos(theta) + ys * np.sin(theta)
    v = ys * np.cos(theta) - xs * np.sin(theta)
    if kind == "gradient":
        weight = (u - u.min()) / (u.max() - u.min())
    elif kind == "stripes":
        weight = np.floor(u / (rng.uniform(0.03, 0.15) * size)) % 2
    elif kind == "checkerboard":
        cell = rng.uniform(0.04, 0.15) * size
        weight = (np.floor(u / cell) + np.floor(v / cell)) % 2
    else:  # smooth value noise: a coarse random grid upsampled
        coarse = rng.random((rng.integers(3, 9),) * 2, dtype=np.float32)
        weight = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
        weight = np.clip(weight, 0.0, 1.0)
    pixels = color0.astype(np.float32) + weight[..., None] * (color1 - color0).astype(np.float32)
    pixels += rng.uniform(1.0, _BG_NOISE_MAX_SIGMA) * rng.standard_normal(pixels.shape, dtype=np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two ``[x, y, w, h]`` boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _boxes_intersect(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _fits(candidate: _Shape, placed: list[_Shape]) -> bool:
    """Whether ``candidate``, drawn on top of ``placed``, respects the overlap rules.

    Non-empty; box IoU <= MAX_BOX_IOU with every shape; no touching box of the same colour (the two
    would merge visually); every earlier shape keeps MIN_VISIBLE_FRACTION of its pixels visible.
    """
    if candidate.area == 0:
        return False
    for other in placed:
        if _box_iou(candidate.bbox, other.bbox) > MAX_BOX_IOU:
            return False
        if other.color == candidate.color and _boxes_intersect(candidate.bbox, other.bbox):
            return False
        still_visible = np.count_nonzero(other.visible & ~candidate.mask)
        if still_visible < MIN_VISIBLE_FRACTION * other.area:
            return False
    return True


def _candidate(
    rng: np.random.Generator, class_name: str, color: str, size_name: str, radius: float, image_size: int
) -> _Shape:
    """The shape at a random rotation and a random position that keeps it inside the image."""
    angle = rng.uniform(0.0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    offsets = _OUTLINES[class_name] @ rotation.T * radius
    low = _BORDER - offsets.min(axis=0)
    high = image_size - _BORDER - offsets.max(axis=0)
    vertices = np.round(offsets + rng.uniform(low, high), _DECIMALS)
    x0, y0 = vertices.min(axis=0)
    x1, y1 = vertices.max(axis=0)
    polygon = [float(c) for c in vertices.ravel()]
    rle = mask_utils.frPyObjects([polygon], image_size, image_size)[0]
    mask = mask_utils.decode(rle).astype(bool)
    bbox = [float(x0), float(y0), round(float(x1 - x0), _DECIMALS), round(float(y1 - y0), _DECIMALS)]
    area = int(mask_utils.area(rle))
    return _Shape(class_name, color, size_name, polygon, bbox, mask, area, visible=mask.copy())


def _render(rng: np.random.Generator, image_size: int, num_objects: int) -> tuple[np.ndarray, list[_Shape]]:
    """Draw one image: background, then up to ``num_objects`` shapes (the first always fits)."""
    pixels = _background(rng, image_size)
    placed: list[_Shape] = []
    color_names = tuple(COLORS)
    for _ in range(num_objects):
        class_name = CLASSES[rng.integers(len(CLASSES))]
        color = color_names[rng.integers(len(color_names))]
        size_name = SIZES[rng.integers(len(SIZES))]
        radius = rng.uniform(*SIZE_RANGES[size_name]) * image_size / 2
        for _ in range(PLACEMENT_ATTEMPTS):
            shape = _candidate(rng, class_name, color, size_name, radius, image_size)
            if _fits(shape, placed):
                for other in placed:
                    other.visible &= ~shape.mask
                placed.append(shape)
                pixels[shape.mask] = COLORS[color]
                break
    return pixels, placed


def generate_synthetic(
    out_dir: Path | str,
    num_images: int = 200,
    image_size: int = 256,
    seed: int = 0,
    val_fraction: float = 0.2,
    max_objects: int = 6,
    min_objects: int = 1,
) -> dict[str, Path]:
    """Generate the dataset under ``out_dir``; returns ``{"train": json_path, "val": json_path}``.

    Layout: ``images/{id:06d}.png`` and ``annotations/instances_{train,val}.json`` (COCO, plus an
    ``attributes`` dict ``{"color", "size"}`` per annotation). Image and annotation ids are 1-based and
    unique across both splits; ``round(num_images * val_fraction)`` random images form the val split.
    Each image asks for ``min_objects..max_objects`` shapes; a shape that cannot be placed within
    ``PLACEMENT_ATTEMPTS`` tries is dropped, so every image holds at least one shape.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    args = dict(
        seed=seed,
        num_images=num_images,
        image_size=image_size,
        val_fraction=val_fraction,
        max_objects=max_objects,
        min_objects=min_objects,
    )
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)

    num_val = int(num_images * val_fraction + 0.5)
    val_ids = {int(i) + 1 for i in _rng(seed, 0).choice(num_images, size=num_val, replace=False)}
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]
    splits: dict[str, dict[str, list]] = {
        name: {"images": [], "annotations": []} for name in ("train", "val")
    }
    next_ann_id = 1
    for image_id in range(1, num_images + 1):
        rng = _rng(seed, image_id)
        pixels, shapes = _render(rng, image_size, int(rng.integers(min_objects, max_objects + 1)))
        file_name = f"{image_id:06d}.png"
        Image.fromarray(pixels).save(image_dir / file_name, format="PNG", compress_level=1)  # fast
        split = splits["val" if image_id in val_ids else "train"]
        split["images"].append(
            {"id": image_id, "file_name": file_name, "width": image_size, "height": image_size}
        )
        for shape in shapes:
            split["annotations"].append(
                {
                    "id": next_ann_id,
                    "image_id": image_id,
                    "category_id": CLASSES.index(shape.class_name) + 1,
                    "bbox": shape.bbox,
                    "segmentation": [shape.polygon],
                    "area": float(shape.area),
                    "iscrowd": 0,
                    "attributes": {"color": shape.color, "size": shape.size},
                }
            )
            next_ann_id += 1

    paths: dict[str, Path] = {}
    for name, split in splits.items():
        info = {"description": "VisionLLM synthetic shapes", "version": "1.0", "split": name, **args}
        coco = {"info": info, "licenses": [], "categories": categories, **split}
        paths[name] = out_dir / "annotations" / f"instances_{name}.json"
        write_json_atomic(coco, paths[name])
    return paths
