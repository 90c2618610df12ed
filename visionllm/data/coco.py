"""COCO-format detection data: fail fast on a broken annotation file, drop (and report) broken samples.

Any COCO-format JSON works without listing its classes in code: they are read from its ``categories``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmengine.logging import print_log

from visionllm.mmengine_private import live_metainfo
from visionllm.registry import DATASETS

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


@DATASETS.register_module()
class VisionLLMCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` for any COCO-format file, robust to bad data.

    - The annotation file is checked before parsing (:func:`load_coco_json`): structural faults raise
      ValueError naming the file and, where one is at fault, the annotation id.
    - Classes default to the file's categories (in file order) when the config gives none (set when the
      file loads: with ``lazy_init=True``, after ``full_init()``).
    - An annotation whose box has no area or is not finite is dropped with a warning naming the file and the
      annotation id; crowd annotations load as ignored instances (``ignore_flag=1``), as in mmdet. Images left
      without annotations follow ``filter_cfg`` (kept unless ``filter_empty_gt=True``).
    - Extra annotation fields (e.g. ``attributes``) are kept in ``data_info['instances'][i]``.
    - In test mode, a sample the pipeline cannot produce (e.g. an unreadable image) raises an error naming
      the image; in training, mmengine fetches another sample instead.
    """

    METAINFO = {"classes": ()}

    def COCOAPI(self, local_path: str) -> COCO:  # noqa: N802  (mmdet's loader calls self.COCOAPI(path))
        """Check the annotation file and index it for mmdet's ``load_data_list``; take its class names
        when the config gives none (mmdet reads ``metainfo['classes']`` right after this call)."""
        data = load_coco_json(local_path, display_name=self.ann_file)
        file_classes = [category["name"] for category in data["categories"]]
        metainfo = live_metainfo(self)
        if not metainfo.get("classes"):
            metainfo["classes"] = tuple(file_classes)
        unknown = set(metainfo["classes"]) - set(file_classes)
        if unknown:
            raise ValueError(
                f"{self.ann_file}: configured classes {sorted(unknown)} are not among its categories"
            )
        return coco_index(data)

    def parse_data_info(self, raw_data_info: dict) -> dict:
        """mmdet's parsing, applied one annotation at a time so that each instance keeps the annotation's
        extra fields, and so that unusable boxes are reported rather than silently skipped."""
        img_info = raw_data_info["raw_img_info"]
        data_info = super().parse_data_info({"raw_img_info": img_info, "raw_ann_info": []})
        for ann in raw_data_info["raw_ann_info"]:
            problem = box_problem(ann["bbox"])
            if problem:
                print_log(
                    f"{self.ann_file}: dropping annotation id {ann['id']} of image {img_info['file_name']}: "
                    f"{problem}",
                    logger="current",
                    level=logging.WARNING,
                )
                continue
            extras = {key: value for key, value in ann.items() if key not in _COCO_ANNOTATION_KEYS}
            parsed = super().parse_data_info({"raw_img_info": img_info, "raw_ann_info": [ann]})
            data_info["instances"].extend({**extras, **instance} for instance in parsed["instances"])
        return data_info

    def prepare_data(self, idx: int) -> Any:
        data = super().prepare_data(idx)
        if data is None and self.test_mode:
            raise RuntimeError(
                f"the pipeline returned None for sample {idx}, {self.get_data_info(idx)['img_path']} "
                "(e.g. an unreadable image); test mode cannot skip samples"
            )
        return data
