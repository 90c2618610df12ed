"""The synthetic shapes dataset: determinism, COCO validity, attributes, splits and overlap rules."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from visionllm.data.synthetic import (
    CLASSES,
    COLORS,
    MAX_BOX_IOU,
    MIN_VISIBLE_FRACTION,
    SIZE_RANGES,
    SIZES,
    generate_synthetic,
)

REPO = Path(__file__).resolve().parents[1]
ARGS = dict(num_images=24, image_size=128, seed=3, val_fraction=0.25, max_objects=6)
VERTICES = {"circle": 32, "square": 4, "triangle": 3, "star": 10, "hexagon": 6, "cross": 12}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, COCO]]:
    out = tmp_path_factory.mktemp("synthetic")
    paths = generate_synthetic(out, **ARGS)
    return out, {split: COCO(str(path)) for split, path in paths.items()}


def _image_items(dataset: tuple[Path, dict[str, COCO]]):
    """(pixels, annotations in drawing order, coco) per image of both splits."""
    out, cocos = dataset
    for coco in cocos.values():
        for image in coco.dataset["images"]:
            pixels = np.asarray(Image.open(out / "images" / image["file_name"]).convert("RGB"))
            anns = sorted(coco.imgToAnns[image["id"]], key=lambda ann: ann["id"])
            yield pixels, anns, coco


def _visible(masks: list[np.ndarray]) -> list[np.ndarray]:
    """The part of each mask that no later mask (drawn on top) covers."""
    covered = np.zeros_like(masks[0])
    visible = []
    for mask in reversed(masks):
        visible.append(mask & ~covered)
        covered |= mask
    return visible[::-1]


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    small = dict(num_images=5, image_size=96)
    generate_synthetic(tmp_path / "a", seed=7, **small)
    generate_synthetic(tmp_path / "b", seed=7, **small)
    generate_synthetic(tmp_path / "c", seed=8, **small)
    a, b, c = (_file_bytes(tmp_path / name) for name in "abc")
    assert len(a) == 5 + 2
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[name] != c[name] for name in a)


def test_image_does_not_depend_on_num_images(tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "few", num_images=2, image_size=96, seed=1)
    generate_synthetic(tmp_path / "more", num_images=4, image_size=96, seed=1)
    for name in ("000001.png", "000002.png"):
        assert (tmp_path / "few/images" / name).read_bytes() == (tmp_path / "more/images" / name).read_bytes()


def test_schema(dataset: tuple[Path, dict[str, COCO]]) -> None:
    out, cocos = dataset
    for split, coco in cocos.items():
        data = coco.dataset  # as loaded from annotations/instances_{split}.json
        assert data["categories"] == [
            {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)
        ]
        assert data["licenses"] == []
        assert data["info"]["split"] == split
        assert {key: data["info"][key] for key in ARGS} == ARGS
        for image in data["images"]:
            assert image["file_name"] == f"{image['id']:06d}.png"
            with Image.open(out / "images" / image["file_name"]) as png:
                assert png.size == (image["width"], image["height"]) == (ARGS["image_size"],) * 2
        for ann in data["annotations"]:
            assert ann["iscrowd"] == 0
            assert isinstance(ann["area"], float)
            assert all(isinstance(v, float) for v in ann["bbox"])
    image_ids = [img["id"] for coco in cocos.values() for img in coco.dataset["images"]]
    ann_ids = [ann["id"] for coco in cocos.values() for ann in coco.dataset["annotations"]]
    assert sorted(image_ids) == list(range(1, ARGS["num_images"] + 1))
    assert sorted(ann_ids) == list(range(1, len(ann_ids) + 1))


def test_split_sizes_and_object_counts(dataset: tuple[Path, dict[str, COCO]]) -> None:
    _, cocos = dataset
    train, val = set(cocos["train"].getImgIds()), set(cocos["val"].getImgIds())
    assert not train & val
    assert len(val) == round(ARGS["num_images"] * ARGS["val_fraction"])
    assert len(train) + len(val) == ARGS["num_images"]
    counts = []
    for coco in cocos.values():
        for image_id in coco.getImgIds():
            counts.append(len(coco.getAnnIds(imgIds=[image_id])))
        assert {ann["image_id"] for ann in coco.dataset["annotations"]} <= set(coco.getImgIds())
    assert 1 <= min(counts) and max(counts) <= ARGS["max_objects"]
    assert len(set(counts)) > 1


def test_polygons_masks_areas_and_boxes(dataset: tuple[Path, dict[str, COCO]]) -> None:
    size = ARGS["image_size"]
    for _, anns, coco in _image_items(dataset):
        for ann in anns:
            (polygon,) = ann["segmentation"]
            xs, ys = np.array(polygon[0::2]), np.array(polygon[1::2])
            assert len(xs) == VERTICES[CLASSES[ann["category_id"] - 1]]
            assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= size and ys.max() <= size
            x, y, w, h = ann["bbox"]
            assert np.allclose([x, y, x + w, y + h], [xs.min(), ys.min(), xs.max(), ys.max()], atol=0.011)
            mask = coco.annToMask(ann)
            assert mask.sum() == ann["area"] > 0
            mx, my, mw, mh = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask)))
            # the mask's pixel cells lie inside the box rounded outwards; the box is tight up to
            # sharp tips (star, triangle) thinner than a pixel, which cover no pixel centre
            assert mx >= np.floor(x) and mx + mw <= np.ceil(x + w)
            assert my >= np.floor(y) and my + mh <= np.ceil(y + h)
            assert abs(mx - x) <= 2 and abs(mx + mw - (x + w)) <= 2
            assert abs(my - y) <= 2 and abs(my + mh - (y + h)) <= 2


def test_attributes_match_pixels_and_geometry(dataset: tuple[Path, dict[str, COCO]]) -> None:
    seen_colors, seen_sizes = set(), set()
    for pixels, anns, coco in _image_items(dataset):
        visible_masks = _visible([coco.annToMask(ann).astype(bool) for ann in anns])
        for ann, visible in zip(anns, visible_masks):
            color, size = ann["attributes"]["color"], ann["attributes"]["size"]
            assert color in COLORS and size in SIZES
            seen_colors.add(color)
            seen_sizes.add(size)
            assert (pixels[visible] == COLORS[color]).all()
            (polygon,) = ann["segmentation"]
            vertices = np.array(polygon).reshape(-1, 2)
            diameter = 2 * np.linalg.norm(vertices - vertices.mean(axis=0), axis=1).max() / ARGS["image_size"]
            low, high = SIZE_RANGES[size]
            assert low - 0.01 <= diameter <= high + 0.01
    assert seen_colors == set(COLORS) and seen_sizes == set(SIZES)


def test_overlap_rules(dataset: tuple[Path, dict[str, COCO]]) -> None:
    overlapping_pairs = 0
    for _, anns, coco in _image_items(dataset):
        boxes = [ann["bbox"] for ann in anns]
        ious = mask_utils.iou(boxes, boxes, [0] * len(boxes)) - np.eye(len(boxes))
        assert ious.max() <= MAX_BOX_IOU + 1e-9
        overlapping_pairs += int((ious > 0).sum()) // 2
        masks = [coco.annToMask(ann).astype(bool) for ann in anns]
        for mask, visible in zip(masks, _visible(masks)):
            assert visible.sum() >= MIN_VISIBLE_FRACTION * mask.sum()
    assert overlapping_pairs > 0  # the rule is exercised, not avoided by never overlapping


def test_background_is_textured_and_never_an_object_color(dataset: tuple[Path, dict[str, COCO]]) -> None:
    palette = np.array(list(COLORS.values()))
    means = []
    for pixels, anns, coco in _image_items(dataset):
        objects = np.any([coco.annToMask(ann).astype(bool) for ann in anns], axis=0)
        background = pixels[~objects].astype(int)
        assert not (background[:, None, :] == palette[None]).all(axis=2).any()
        assert len(np.unique(background, axis=0)) > 20
        means.append(background.mean(axis=0))
    assert np.ptp(np.array(means), axis=0).min() > 20  # backgrounds vary between images


@pytest.mark.parametrize(
    "kwargs",
    [dict(val_fraction=1.0), dict(min_objects=3, max_objects=2), dict(image_size=16), dict(num_images=0)],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_synthetic(tmp_path, **kwargs)


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "datasets/synthetic.py",
        "--out",
        str(out),
        "--num-images",
        "3",
        "--image-size",
        "64",
    ]
    result = subprocess.run(cmd + ["--val-fraction", "0.34"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(json.loads((out / "annotations/instances_val.json").read_text())["images"]) == 1
    assert len(json.loads((out / "annotations/instances_train.json").read_text())["images"]) == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000001.png", "000002.png", "000003.png"]
