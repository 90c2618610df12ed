"""COCO-format detection data: fail fast on a broken annotation file, drop (and report) broken samples.

Any COCO-format JSON works without listing its classes in code: they are read from its ``categories``.
What the dataset drops, :class:`~visionllm.evaluation.VisionLLMCocoMetric` drops too
(:func:`drop_unusable_annotations`), so evaluation scores against exactly the ground truth the dataset kept.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmengine.logging import print_log

from visionllm.mmengine_private import live_metainfo
from visionllm.registry import DATASETS
from visionllm.vocab import TASK_TOKEN_PATTERN

#: Keys each entry of a section must have (what mmdet and pycocotools read unconditionally).
_REQUIRED_KEYS = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox", "area"),
    "categories": ("id", "name"),
}
#: Annotation keys mmdet turns into instance fields; every other key is carried over as is.
_COCO_ANNOTATION_KEYS = frozenset(
    {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation", "ignore"}
)
#: The one polygon of an annotation without a usable one: mmdet's own placeholder (three points at the
#: origin, no area), which ``LoadAnnotations`` accepts without ignoring the instance, so its box still
#: trains detection; segmentation targets skip it for having no area.
NO_POLYGON = (0.0,) * 6


def load_coco_json(path: str, display_name: str | None = None) -> dict[str, Any]:
    """Read a COCO annotation file and check its structure and references.

    Raises ValueError naming the file (``display_name`` if given) when it is not JSON, not an object with
    ``images``, ``annotations`` and ``categories`` lists whose entries have the keys mmdet reads, or when an
    annotation (named by its id) repeats an id or refers to a category or image the file does not define.
    """
    name = display_name or path
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{name} is not a JSON file: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(
            f"{name}: expected a COCO object with images/annotations/categories, got {type(data).__name__}"
        )
    for section, keys in _REQUIRED_KEYS.items():
        if not isinstance(data.get(section), list):
            raise ValueError(f"{name}: missing the '{section}' list of a COCO annotation file")
        for index, entry in enumerate(data[section]):
            missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
            if missing:
                raise ValueError(f"{name}: {section}[{index}] lacks {missing}")

    for category in data["categories"]:
        category_name = category["name"]
        if not isinstance(category_name, str):
            raise ValueError(f"{name}: category id {category['id']} has name {category_name!r}, not a string")
        token = TASK_TOKEN_PATTERN.search(category_name)
        if token:  # class names are written into instructions, where a task token would be read as one
            raise ValueError(
                f"{name}: category id {category['id']} is named {category_name!r}, which contains the task "
                f"token {token.group()!r}; rename the category"
            )
    category_names = [category["name"] for category in data["categories"]]
    if len(set(category_names)) < len(category_names):
        raise ValueError(f"{name}: category names repeat ({category_names}); they name the classes")
    category_ids = {category["id"] for category in data["categories"]}
    image_ids = {image["id"] for image in data["images"]}
    annotation_ids: set = set()
    for annotation in data["annotations"]:
        ann_id = annotation["id"]
        if ann_id in annotation_ids:
            raise ValueError(f"{name}: annotation id {ann_id} is used twice")
        annotation_ids.add(ann_id)
        if annotation["category_id"] not in category_ids:
            raise ValueError(
                f"{name}: annotation id {ann_id} has category_id {annotation['category_id']!r}, "
                "which is not among the file's categories"
            )
        if annotation["image_id"] not in image_ids:
            raise ValueError(
                f"{name}: annotation id {ann_id} has image_id {annotation['image_id']!r}, "
                "which is not among the file's images"
            )
    return data


def coco_index(data: dict[str, Any]) -> COCO:
    """mmdet's COCO API over an already loaded annotation dict."""
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    coco.img_ann_map, coco.cat_img_map = coco.imgToAnns, coco.catToImgs  # mmdet's snake-case aliases
    return coco


def box_problem(bbox: Any) -> str | None:
    """Why a COCO ``[x, y, w, h]`` box cannot be trained on (not 4 finite numbers, or no area), else None."""
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return f"bbox {bbox!r} is not [x, y, w, h]"
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in bbox):
        return f"bbox {bbox!r} has a value that is not a finite number"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return f"bbox {bbox!r} has zero or negative size"
    return None


def annotation_problem(annotation: dict, image: dict) -> str | None:
    """Why the annotation cannot be trained on, else None: :func:`box_problem`, or one of the conditions
    under which mmdet's ``CocoDataset`` skips an annotation silently (marked ``ignore``, a box outside its
    image or under one pixel wide or high, an ``area`` that is not positive)."""
    bbox = annotation["bbox"]
    problem = box_problem(bbox)
    if problem:
        return problem
    if annotation.get("ignore", False):
        return "it is marked 'ignore'"
    x, y, w, h = bbox
    if min(x + w, image["width"]) <= max(x, 0) or min(y + h, image["height"]) <= max(y, 0):
        return f"bbox {bbox!r} lies outside the {image['width']}x{image['height']} image"
    if w < 1 or h < 1:
        return f"bbox {bbox!r} is under one pixel wide or high"
    area = annotation["area"]
    if not (isinstance(area, int | float) and math.isfinite(area) and area > 0):
        return f"area {area!r} is not a positive number"
    return None


def polygon_problem(polygon: Any) -> str | None:
    """Why one part of a polygon segmentation is unusable (not finite numbers, an odd count of
    coordinates, fewer than 3 points), else None."""
    if not isinstance(polygon, list) or not all(
        isinstance(v, int | float) and math.isfinite(v) for v in polygon
    ):
        return "is not a list of finite numbers"
    if len(polygon) % 2:
        return f"has an odd number ({len(polygon)}) of coordinates"
    if len(polygon) < 6:
        return f"has {len(polygon) // 2} points, fewer than 3"
    return None


@dataclass(frozen=True)
class AnnotationProblem:
    """What :func:`drop_unusable_annotations` removed from one annotation: the whole annotation
    (``dropped``) or some of its polygon parts, and why."""

    ann_id: Any
    image_file: str
    reason: str
    dropped: bool

    def message(self, file: str) -> str:
        """The warning naming the annotation file, the annotation id and its image."""
        action = "dropping annotation id" if self.dropped else "keeping the box of annotation id"
        return f"{file}: {action} {self.ann_id} of image {self.image_file}: {self.reason}"


def drop_unusable_annotations(data: dict[str, Any]) -> list[AnnotationProblem]:
    """Make a checked COCO dict (:func:`load_coco_json`) what the dataset trains on and the metric scores
    against, in place, and return what was removed.

    An annotation with an :func:`annotation_problem` is removed. From a polygon segmentation, only the
    unusable parts (:func:`polygon_problem`) are removed; an annotation left without a polygon (or that had
    no segmentation) gets :data:`NO_POLYGON`, so it trains detection only instead of losing its box.
    """
    images = {image["id"]: image for image in data["images"]}
    kept, problems = [], []
    for annotation in data["annotations"]:
        image = images[annotation["image_id"]]
        problem = annotation_problem(annotation, image)
        if problem:
            problems.append(AnnotationProblem(annotation["id"], image["file_name"], problem, dropped=True))
            continue
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, list):
            whys = [polygon_problem(part) for part in segmentation]
            bad = [f"polygon part {i}, which {why}" for i, why in enumerate(whys) if why]
            segmentation = [part for part, why in zip(segmentation, whys) if not why]
            if bad:
                left = "" if segmentation else "; no polygon is left, so it trains detection only"
                reason = f"dropping {'; '.join(bad)}{left}"
                problems.append(
                    AnnotationProblem(annotation["id"], image["file_name"], reason, dropped=False)
                )
        if not segmentation:
            annotation["segmentation"] = [list(NO_POLYGON)]
        elif isinstance(segmentation, list):
            annotation["segmentation"] = segmentation
        kept.append(annotation)
    data["annotations"] = kept
    return problems


@DATASETS.register_module()
class VisionLLMCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` for any COCO-format file, robust to bad data.

    - The annotation file is checked before parsing (:func:`load_coco_json`): structural faults raise
      ValueError naming the file and, where one is at fault, the annotation id.
    - Classes default to the file's categories (in file order) when the config gives none (set when the
      file loads: with ``lazy_init=True``, after ``full_init()``).
    - An annotation mmdet cannot train on (a box that is not finite, has no area, lies outside its image,
      ...: :func:`annotation_problem`) is dropped with a warning naming the file and the annotation id, and
      listed in ``dropped_annotations``. An unusable polygon part is dropped with a warning, keeping the
      instance and its box. Crowd annotations load as ignored instances (``ignore_flag=1``), as in mmdet.
      Images left without annotations follow ``filter_cfg`` (kept unless ``filter_empty_gt=True``); when
      no image is left, a ValueError names the file and why.
    - Extra annotation fields (e.g. ``attributes``) are kept in ``data_info['instances'][i]``.
    - In test mode, a sample the pipeline cannot produce (e.g. an unreadable image) raises an error naming
      the image; in training, mmengine fetches another sample instead.
    """

    METAINFO = {"classes": ()}
    #: ``{annotation id: why}`` of the annotations dropped when the file was loaded.
    dropped_annotations: dict[Any, str]

    def COCOAPI(self, local_path: str) -> COCO:  # noqa: N802  (mmdet's loader calls self.COCOAPI(path))
        """Check the annotation file and index it for mmdet's ``load_data_list``; take its class names
        when the config gives none (mmdet reads ``metainfo['classes']`` right after this call). Unusable
        annotations and polygon parts are removed first, with a warning each."""
        data = load_coco_json(local_path, display_name=self.ann_file)
        problems = drop_unusable_annotations(data)
        for problem in problems:
            print_log(problem.message(self.ann_file), logger="current", level=logging.WARNING)
        self.dropped_annotations = {p.ann_id: p.reason for p in problems if p.dropped}
        file_classes = [category["name"] for category in data["categories"]]
        metainfo = live_metainfo(self)
        if not metainfo.get("classes"):
            metainfo["classes"] = tuple(file_classes)
        unknown = set(metainfo["classes"]) - set(file_classes)
        if unknown:
            raise ValueError(
                f"{self.ann_file}: configured classes {sorted(unknown)} are not among its categories "
                f"{file_classes}"
            )
        # labels follow the configured order (mmdet numbers the selected categories in file order)
        order = {name: label for label, name in enumerate(metainfo["classes"])}
        data["categories"] = sorted(data["categories"], key=lambda c: order.get(c["name"], len(order)))
        return coco_index(data)

    def parse_data_info(self, raw_data_info: dict) -> dict:
        """mmdet's parsing, applied one annotation at a time so that each instance keeps the annotation's
        extra fields."""
        img_info = raw_data_info["raw_img_info"]
        data_info = super().parse_data_info({"raw_img_info": img_info, "raw_ann_info": []})
        for ann in raw_data_info["raw_ann_info"]:
            extras = {key: value for key, value in ann.items() if key not in _COCO_ANNOTATION_KEYS}
            parsed = super().parse_data_info({"raw_img_info": img_info, "raw_ann_info": [ann]})
            data_info["instances"].extend({**extras, **instance} for instance in parsed["instances"])
        return data_info

    def filter_data(self) -> list[dict]:
        """mmdet's filtering (``filter_cfg``); when no image is left, a ValueError naming the file and why
        (mmengine would otherwise fail with 'need at least one array to concatenate')."""
        kept = super().filter_data()
        if kept:
            return kept
        if not self.data_list:
            raise ValueError(f"{self.ann_file}: the file has no images")
        filter_empty_gt = self.filter_cfg.get("filter_empty_gt", False)
        min_size = self.filter_cfg.get("min_size", 0)
        with_classes = set().union(*(self.cat_img_map[cat_id] for cat_id in self.cat_ids))
        empty = sum(info["img_id"] not in with_classes for info in self.data_list)
        small = sum(min(info["width"], info["height"]) < min_size for info in self.data_list)
        reasons = []
        if filter_empty_gt and empty:
            reasons.append(
                f"{empty} have no usable annotation of the classes {list(self.metainfo['classes'])} "
                "and filter_cfg has filter_empty_gt=True"
            )
        if small:
            reasons.append(f"{small} are smaller than filter_cfg's min_size={min_size}")
        if self.dropped_annotations:
            reasons.append(
                f"{len(self.dropped_annotations)} annotations were dropped as unusable (see the warnings)"
            )
        raise ValueError(
            f"{self.ann_file}: all {len(self.data_list)} images were filtered out: {'; '.join(reasons)}"
        )

    def prepare_data(self, idx: int) -> Any:
        data = super().prepare_data(idx)
        if data is None and self.test_mode:
            raise RuntimeError(
                f"the pipeline returned None for sample {idx}, {self.get_data_info(idx)['img_path']} "
                "(e.g. an unreadable image); test mode cannot skip samples"
            )
        return data
