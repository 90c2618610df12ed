"""DumpCocoResults (``tools/test.py --out``): a COCO results file that pycocotools loads and scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO

from visionllm.evaluation import evaluate_coco, polygons_to_rle
from visionllm.registry import METRICS, register_all_modules

HEIGHT, WIDTH = 60, 80
#: Two objects of the ground truth; category ids are not the label indices, nor in class order.
GT_OBJECTS = [
    dict(image_id=9, category_id=7, polygon=[10, 10, 40, 10, 40, 30, 10, 30]),
    dict(image_id=4, category_id=3, polygon=[50, 20, 70, 20, 60, 50]),
]
CLASSES = ("square", "triangle")  # in the file's category order: square (7), triangle (3)


@pytest.fixture
def ann_file(tmp_path: Path) -> Path:
    annotations = []
    for index, obj in enumerate(GT_OBJECTS, 1):
        xs, ys = obj["polygon"][::2], obj["polygon"][1::2]
        box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        annotations.append(
            dict(id=index, image_id=obj["image_id"], category_id=obj["category_id"], bbox=box,
                 area=box[2] * box[3], segmentation=[obj["polygon"]], iscrowd=0)
        )  # fmt: skip
    data = dict(
        images=[dict(id=i, file_name=f"{i}.png", height=HEIGHT, width=WIDTH) for i in (4, 9)],
        categories=[dict(id=7, name="square"), dict(id=3, name="triangle")],
        annotations=annotations,
    )
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path


def _sample(image_id: int, objects: list[tuple[list[float], int]], with_masks: bool) -> dict:
    """A predicted data sample as mmengine's evaluator hands it over (``to_dict()`` form)."""
    boxes = [[min(p[::2]), min(p[1::2]), max(p[::2]), max(p[1::2])] for p, _ in objects]
    pred = dict(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.full((len(objects),), 0.9),
        labels=torch.tensor([label for _, label in objects], dtype=torch.long),
    )
    if with_masks:
        pred["masks"] = [polygons_to_rle([p], HEIGHT, WIDTH) for p, _ in objects]
    return dict(img_id=image_id, ori_shape=(HEIGHT, WIDTH), pred_instances=pred)


def _dump(out_file: Path, samples: list[dict], ann_file: Path | None) -> list[dict]:
    register_all_modules()
    metric = METRICS.build(
        dict(type="DumpCocoResults", out_file=str(out_file), ann_file=ann_file and str(ann_file))
    )
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples[:1])
    metric.process({}, samples[1:])
    assert metric.evaluate(size=len(samples)) == {}
    return json.loads(out_file.read_text())


def test_results_load_and_score_perfectly_when_they_equal_the_ground_truth(
    ann_file: Path, tmp_path: Path
) -> None:
    square, triangle = (obj["polygon"] for obj in GT_OBJECTS)
    samples = [
        _sample(9, [(square, 0), ([1, 1, 5, 1, 5, 5], -1)], with_masks=True),  # label -1: left out
        _sample(4, [(triangle, 1)], with_masks=True),
        _sample(5, [], with_masks=True),  # an image without objects
    ]
    entries = _dump(tmp_path / "out" / "results.json", samples, ann_file)
    assert [(e["image_id"], e["category_id"]) for e in entries] == [(9, 7), (4, 3)]
    assert entries[0]["bbox"] == [10, 10, 30, 20] and entries[0]["score"] == pytest.approx(0.9)
    assert all(e["segmentation"]["size"] == [HEIGHT, WIDTH] for e in entries)
    COCO(str(ann_file)).loadRes(str(tmp_path / "out" / "results.json"))
    stats = evaluate_coco(ann_file, tmp_path / "out" / "results.json")
    assert stats["bbox"][0] == pytest.approx(1.0) and stats["segm"][0] == pytest.approx(1.0)


def test_boxes_only_and_label_indices_without_an_annotation_file(tmp_path: Path) -> None:
    square, triangle = (obj["polygon"] for obj in GT_OBJECTS)
    samples = [_sample(9, [(square, 0), (triangle, 1)], with_masks=False)]
    entries = _dump(tmp_path / "results.json", samples, ann_file=None)
    assert [e["category_id"] for e in entries] == [0, 1]
    assert all("segmentation" not in e for e in entries)
