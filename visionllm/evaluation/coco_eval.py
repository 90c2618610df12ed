"""COCO evaluation with pycocotools: the 12 standard numbers per IoU type, after checking the results so a
malformed entry is reported by its index instead of failing deep inside pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionllm.data.coco import coco_index, load_coco_json
from visionllm.evaluation.results import coco_result
from visionllm.structures import polygons_to_rle

#: The 12 numbers of ``COCOeval.stats``, in order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _checked_segmentation(segmentation: Any, height: int, width: int, where: str) -> dict:
    """The segmentation as a compressed RLE for the image's size, or ValueError saying what is wrong."""
    if isinstance(segmentation, dict):
        if list(segmentation.get("size", ())) != [height, width] or "counts" not in segmentation:
            raise ValueError(f"{where}: RLE segmentation needs 'counts' and 'size' == [{height}, {width}]")
        if isinstance(segmentation["counts"], list):  # uncompressed RLE
            return mask_utils.frPyObjects(segmentation, height, width)
        return segmentation
    if isinstance(segmentation, list) and all(
        isinstance(polygon, list) and all(_is_number(v) for v in polygon) for polygon in segmentation
    ):
        try:
            return polygons_to_rle(segmentation, height, width)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
    raise ValueError(f"{where}: 'segmentation' must be an RLE dict or a list of polygons")


def load_results(results: str | Path | list[dict], gt: COCO, iou_types: tuple[str, ...]) -> list[dict]:
    """Checked copies of the detection results (a COCO results JSON file, or its list).

    Each entry needs ``image_id`` and ``category_id`` known to ``gt``, a finite ``score``, and ``bbox``
    ``[x, y, w, h]`` and/or ``segmentation`` (RLE, or polygons, which are converted to RLE) as the IoU types
    require. Raises ValueError naming the file and the index of the first bad entry.
    """
    source = "results" if isinstance(results, list) else str(results)
    if not isinstance(results, list):
        try:
            results = json.loads(Path(results).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{source} is not a JSON file: {error}") from error
        if not isinstance(results, list):
            raise ValueError(f"{source}: expected a JSON list of results, got {type(results).__name__}")

    checked = []
    for index, result in enumerate(results):
        where = f"{source}: result [{index}]"
        if not isinstance(result, dict):
            raise ValueError(f"{where} is a {type(result).__name__}, not an object")
        missing = [key for key in ("image_id", "category_id", "score") if key not in result]
        if missing:
            raise ValueError(f"{where} lacks {missing}")
        if result["image_id"] not in gt.imgs:
            raise ValueError(f"{where}: image_id {result['image_id']!r} is not in the ground truth")
        if result["category_id"] not in gt.cats:
            raise ValueError(f"{where}: category_id {result['category_id']!r} is not in the ground truth")
        if not _is_number(result["score"]):
            raise ValueError(f"{where}: score {result['score']!r} is not a finite number")
        entry = copy.deepcopy(result)
        if "bbox" in entry:
            bbox = entry["bbox"]
            if not (isinstance(bbox, list | tuple) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                raise ValueError(f"{where}: bbox {bbox!r} is not four finite numbers [x, y, w, h]")
            if bbox[2] < 0 or bbox[3] < 0:
                raise ValueError(f"{where}: bbox {bbox!r} has a negative width or height")
        if "segmentation" in entry:
            image = gt.imgs[entry["image_id"]]
            entry["segmentation"] = _checked_segmentation(
                entry["segmentation"], image["height"], image["width"], where
            )
        if "segm" in iou_types and "segmentation" not in entry:
            raise ValueError(f"{where} has no 'segmentation', which segm evaluation needs")
        if "bbox" not in entry and "segmentation" not in entry:
            raise ValueError(f"{where} has neither 'bbox' nor 'segmentation'")
        if ("bbox" in entry) != ("bbox" in results[0]):  # pycocotools reads all results like the first
            raise ValueError(f"{where}: either every result has a 'bbox' or none does (as result [0])")
        checked.append(entry)
    return checked


def _results_index(gt: COCO, results: list[dict], iou_type: str) -> COCO:
    """pycocotools' index of the results for one IoU type.

    For segm, boxes are left out: pycocotools would otherwise take an instance's area (which decides
    small / medium / large) from its box rather than its mask (Detectron2 does the same).
    """
    if iou_type == "segm":
        results = [{key: value for key, value in result.items() if key != "bbox"} for result in results]
    if not results:  # loadRes cannot take an empty list: evaluate against no detections
        empty = COCO()
        empty.dataset = {
            "images": gt.dataset["images"],
            "categories": gt.dataset["categories"],
            "annotations": [],
        }
        empty.createIndex()
        return empty
    return gt.loadRes(copy.deepcopy(results))  # loadRes adds fields to the dicts it gets


def evaluate_coco(
    gt_json: str | Path, results: str | Path | list[dict], iou_types: tuple[str, ...] = IOU_TYPES
) -> dict[str, list[float]]:
    """COCO metrics of ``results`` (a results JSON or its list) against the annotation file ``gt_json``.

    Returns, per IoU type (``bbox``, ``segm``), the 12 numbers of pycocotools' ``COCOeval.stats`` in the
    order of :data:`STAT_NAMES` (-1 where the ground truth has no instance in that area range).
    """
    unknown = set(iou_types) - set(IOU_TYPES)
    if unknown:
        raise ValueError(f"unknown IoU types {sorted(unknown)}; choose from {IOU_TYPES}")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and its own summary
        gt = coco_index(load_coco_json(str(gt_json)))  # checked: a broken file is named
        checked = load_results(results, gt, tuple(iou_types))
        stats = {}
        for iou_type in iou_types:
            evaluator = COCOeval(gt, _results_index(gt, checked, iou_type), iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            stats[iou_type] = [float(value) for value in evaluator.stats]
    return stats


def format_stats_table(stats: dict[str, list[float]]) -> str:
    """A markdown table: one row per IoU type, one column per name in :data:`STAT_NAMES` (3 decimals)."""
    lines = [
        "| IoU type | " + " | ".join(STAT_NAMES) + " |",
        "|---" * (len(STAT_NAMES) + 1) + "|",
    ]
    for iou_type, values in stats.items():
        lines.append(f"| {iou_type} | " + " | ".join(f"{value:.3f}" for value in values) + " |")
    return "\n".join(lines)


def box_ap(examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """COCO box AP and AP50 of one-class detections: per example (an image of its own) the reference
    boxes (n,4), the predicted boxes (m,4) and their scores (m,), all xyxy pixels. (0, 0) without any
    reference box."""
    images, annotations, results = [], [], []
    for image_id, (references, boxes, scores) in enumerate(examples, 1):
        images.append({"id": image_id, "width": 1, "height": 1})
        for x1, y1, x2, y2 in np.asarray(references, dtype=float).reshape(-1, 4):
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
            )  # fmt: skip
        for (x1, y1, x2, y2), score in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), scores):
            results.append(coco_result(image_id, (x1, y1, x2, y2), float(score), category_id=1))
    if not annotations:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}
        gt.createIndex()
        evaluator = COCOeval(gt, _results_index(gt, results, "bbox"), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])
