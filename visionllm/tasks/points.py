"""Questions about a click: a ``<point>`` placeholder per user point.

    point_classify  "What is at <point>?"                 -> the class name, in words
    point_segment   "Segment the object at <point>, ..."  -> that object's K-point polygon, in the
                                                           segmentation grammar (one object, ``<c0>``)

The model fills each ``<point>`` with features sampled at the point on every level of the image
tokenizer's maps (``visionllm.models.prompt_encoder``). Training points fall on the visible part of an
instance: inside its polygon and outside every instance drawn over it (annotations list later ones on
top, as the synthetic set does); an instance known only by its box is clicked at its box centre.
Metrics: accuracy (classify), mean mask IoU of the best-scoring polygon with the instance (segment).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from visionllm.tasks.base import Cue, ImageAnnotations, Request, TextTask, register_task
from visionllm.tasks.regions import EVAL_PER_IMAGE
from visionllm.tasks.segmentation import SegmentationTask

if TYPE_CHECKING:
    from visionllm.structures import Prediction

#: Tries at drawing a visible point before falling back to the polygon's innermost vertex average.
POINT_ATTEMPTS = 30

POINT_CLASSIFY_CUE = re.compile(
    r"\b(?:what(?:'s|\s+is)\s+(?:at|under|here|there)|what\s+did\s+i\s+(?:click|tap|point)|"
    r"what\s+(?:object|thing)\s+is\s+(?:at|under))\b"
)
POINT_SEGMENT_CUE = re.compile(
    r"\b(?:segment|mask|outline|select|cut\s+out)\b.*\b(?:click\w*|tap\w*|point\w*|here|there)\b"
)


def _inside(polygons: Sequence[np.ndarray], x: float, y: float) -> bool:
    return any(
        len(p) >= 6 and cv2.pointPolygonTest(p.reshape(-1, 1, 2).astype(np.float32), (x, y), False) >= 0
        for p in polygons
    )


def visible_point(annotations: ImageAnnotations, index: int, rng: np.random.Generator) -> np.ndarray:
    """A point (x, y) on the visible part of instance ``index`` (see the module docstring)."""
    x1, y1, x2, y2 = annotations.boxes[index]
    parts = annotations.polygons[index]
    if not parts:
        return np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    covering = [part for later in annotations.polygons[index + 1 :] for part in later]
    for _ in range(POINT_ATTEMPTS):
        x, y = rng.uniform(x1, x2), rng.uniform(y1, y2)
        if _inside(parts, x, y) and not _inside(covering, x, y):
            return np.array([x, y])
    largest = max(parts, key=len).reshape(-1, 2)
    return largest.mean(axis=0)


def mask_iou(
    polygons_a: Sequence[Sequence[float]], polygons_b: Sequence[Sequence[float]], height: int, width: int
) -> float:
    """IoU of two shapes, each a list of flat x,y,... polygons, rasterised at ``height`` x ``width``."""
    masks = []
    for polygons in (polygons_a, polygons_b):
        parts = [list(map(float, p)) for p in polygons if len(p) >= 6]
        if not parts:
            return 0.0
        masks.append(mask_utils.merge(mask_utils.frPyObjects(parts, height, width)))
    return float(mask_utils.iou([masks[0]], [masks[1]], [0])[0, 0])


class PointTask:
    """What the point questions share: one click on one instance."""

    point_inputs: ClassVar[int] = 1

    def request_at(self, index: int, annotations: ImageAnnotations, template_index: int, rng) -> Request:
        point = visible_point(annotations, index, rng)
        return self.build_request(self.fixed_classes, template_index, target_indices=[index], points=[point])

    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        index = int(rng.integers(len(annotations)))
        return self.request_at(index, annotations, int(rng.integers(len(self.templates))), rng)

    def eval_examples(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> list[tuple[Request, Any]]:
        examples = []
        for index in range(min(len(annotations), EVAL_PER_IMAGE)):
            request = self.request_at(index, annotations, 0, rng)
            examples.append((request, self.reference(request, annotations, dataset_classes)))
        return examples


@register_task
class PointClassificationTask(PointTask, TextTask):
    name = "point_classify"
    synonyms = ("point_classification", "classify_point")
    names_kind = "none"
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((11, POINT_CLASSIFY_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = (
        "What is at <point>?",
        "What object is under <point>?",
        "Name the object at <point>.",
        "Which class is the object I clicked at <point>?",
    )
    example_instruction = "what is at this point? (with --point x,y)"

    def answer(self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]) -> str:
        return dataset_classes[int(annotations.labels[request.target_indices[0]])]

    reference = answer


@register_task
class PointSegmentationTask(PointTask, SegmentationTask):
    name = "point_segment"
    synonyms = ("point_segmentation", "click_segment", "segment_point")
    iou_types = ()
    names_kind = "none"
    fixed_classes = ("object",)
    tokens_find_answers = False  # "object" is every object to the tokens: the click picks one
    #: before segmentation's cue: "segment what I clicked" asks for the one object
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((18, POINT_SEGMENT_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = (
        "Segment the object at <point>, the {classes}.",
        "Outline the object I clicked at <point>, the {classes}.",
        "Give the mask of the object under <point>, the {classes}.",
    )
    answer_format = "Answer with the reference <cls> and polygon <poly>, as points <px> <py>."
    example_instruction = "segment what I clicked (with --point x,y)"

    def select_instances(
        self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]
    ) -> list[tuple[int, int]]:
        """The clicked instance, answered as ``<c0>``."""
        return [(index, 0) for index in request.target_indices]

    @staticmethod
    def reference(request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]):
        """The clicked instance's polygons (flat x,y lists)."""
        index = request.target_indices[0]
        return [p.tolist() for p in annotations.polygons[index]]

    def summarize(self, examples: Sequence[tuple[Prediction, Any]]) -> dict[str, float]:
        """Mean mask IoU of each answer's best-scoring polygon with the clicked instance."""
        ious = []
        for prediction, polygons in examples:
            if not len(prediction):
                ious.append(0.0)
                continue
            best = int(np.argmax(prediction.scores))
            ious.append(mask_iou([prediction.polygons[best]], polygons, prediction.height, prediction.width))
        return {"mask_iou": float(np.mean(ious)) if ious else 0.0}
