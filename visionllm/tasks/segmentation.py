"""Instance segmentation: for each requested object, its class reference and a K-point polygon.

Object grammar: ``<ck> px0 py0 px1 py1 ... px{K-1} py{K-1}`` (2K bins; K = ``num_points``, 16 by
default). Targets are made canonical so that matching and regression are well defined:

* **one part**: a COCO object made of several polygons keeps its largest part (by area). K points
  are too few to share between parts, and the largest part is usually most of the object.
* **resampling**: K points evenly spaced by arc length along the contour;
* **orientation**: clockwise as seen on screen (y points down), i.e. positive shoelace area;
* **start**: the original vertex nearest the top-left corner of the part's bounding box.

Instances without a polygon (crowd/RLE-only) and polygons that collapse below one bin are not
targets. An object's box is the bounding box of its polygon; the class-list sampling is the
detection task's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from visionllm.tasks.base import Cue, Geometry, ImageAnnotations, register_task
from visionllm.tasks.detection import FULL_LIST_PROB, DetectionTask
from visionllm.vocab import TaskVocab

DEFAULT_NUM_POINTS = 16
#: Free-form segmentation requests: "segment ...", "masks of ...", "outline ...", "contours", "cut out
#: ...", "the exact shape of ...", "which pixels belong to ...", "separate ... from the background".
SEGMENT_CUE = re.compile(
    r"\b(?:segment\w*|masks?|outlin\w*|contours?|polygons?|silhouettes?|delineat\w*|cut\s+out"
    r"|(?:exact|precise)\s+shapes?|pixels?\s+(?:belong(?:s|ing)?\s+to|of)|separate(?=.*\bbackground\b))\b"
)


def signed_area(points: np.ndarray) -> float:
    """Shoelace area of a closed polygon (m, 2); positive when clockwise on screen (y down)."""
    x, y = points[:, 0], points[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2


def largest_part(parts: Sequence[np.ndarray]) -> np.ndarray | None:
    """The part (as (m, 2) points) with the largest area, or None when no part has any."""
    candidates = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts if len(p) >= 6]
    if not candidates:
        return None
    areas = [abs(signed_area(p)) for p in candidates]
    best = int(np.argmax(areas))
    return candidates[best] if areas[best] > 0 else None


def resample_polygon(points: np.ndarray, num_points: int) -> np.ndarray | None:
    """A closed polygon (m, 2) -> ``num_points`` points evenly spaced along its contour, clockwise,
    starting at the vertex nearest the top-left of its bounds. None for a polygon without area."""
    keep = np.any(points != np.roll(points, 1, axis=0), axis=1)  # drop repeated vertices
    points = points[keep]
    if len(points) < 3 or signed_area(points) == 0:
        return None
    if signed_area(points) < 0:
        points = points[::-1]
    start = int(np.argmin(np.linalg.norm(points - points.min(axis=0), axis=1)))
    closed = np.roll(points, -start, axis=0)
    closed = np.vstack([closed, closed[:1]])
    edge_lengths = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(edge_lengths)])
    targets = np.arange(num_points) * (arc[-1] / num_points)
    edge = np.clip(np.searchsorted(arc, targets, side="right") - 1, 0, len(edge_lengths) - 1)
    fraction = ((targets - arc[edge]) / edge_lengths[edge])[:, None]
    return closed[edge] + fraction * (closed[edge + 1] - closed[edge])


@register_task
class SegmentationTask(DetectionTask):
    name = "segment"
    synonyms = ("segmentation", "instance_segmentation", "seg", "segm", "mask")
    iou_types = ("bbox", "segm")
    predicts_polygons = True
    locations_from_seed = False  # the LLM's vertices beat the seed box's outline
    boxes_from_seed = True  # ... and the seed's box beats their extent
    #: before detection's cue: "find the dogs and outline them" asks for shapes
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((20, SEGMENT_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = (
        "Segment all objects of the categories {classes} in the image.",
        "Outline every instance of {classes} in this image with a polygon.",
        "Give the instance masks of all {classes} in the picture.",
        "Trace the contour of each object that is one of {classes}.",
        "Instance segmentation. Categories: {classes}.",
        "Find every object from the category set {classes} and delineate its shape.",
        "Which of these objects appear in the image: {classes}? Segment each one.",
        "Draw the outline of every object in the image that belongs to {classes}.",
    )
    answer_format = "Answer with the class <cls> and polygon <poly> of each object, as points <px> <py>."
    example_instruction = "segment every dog"

    def __init__(
        self, vocab: TaskVocab, num_points: int = DEFAULT_NUM_POINTS, full_list_prob: float = FULL_LIST_PROB
    ) -> None:
        super().__init__(vocab, full_list_prob)
        if num_points < 3:
            raise ValueError(f"a polygon needs at least 3 points, got num_points={num_points}")
        self.num_points = num_points

    @property
    def format_tokens(self) -> list[str]:
        return ["<cls>"] + ["<px>", "<py>"] * self.num_points

    def instance_geometry(
        self, annotations: ImageAnnotations, index: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        part = largest_part(annotations.polygons[index])
        polygon = None if part is None else resample_polygon(part, self.num_points)
        if polygon is None:
            return None
        canvas = annotations.canvas_size
        polygon = np.clip(polygon, 0, canvas)
        bins = self.vocab.quantize(polygon.reshape(-1), canvas)
        if isinstance(self.decode_geometry(bins.tolist(), canvas), str):
            return None  # below the grammar's resolution
        return bins, np.concatenate([polygon.min(axis=0), polygon.max(axis=0)])

    def geometry_from_boxes(self, boxes: np.ndarray, canvas_size: float) -> np.ndarray:
        """Each box's outline as the polygon: K points along its sides, ordered as targets are."""
        outlines = [
            resample_polygon(np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]), self.num_points)
            if x2 > x1 and y2 > y1
            else np.tile([x1, y1], (self.num_points, 1))  # no area: every point at the corner
            for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ]
        points = np.asarray(outlines, dtype=np.float64).reshape(len(outlines), -1)
        return self.vocab.continuous_bins(points, canvas_size)

    def decode_geometry(self, bins: Sequence[int], canvas_size: float) -> Geometry | str:
        grid = np.asarray(bins, dtype=np.int64).reshape(-1, 2)
        if np.ptp(grid[:, 0]) == 0 or np.ptp(grid[:, 1]) == 0 or signed_area(grid) == 0:
            return "degenerate_polygon"
        points = self.vocab.dequantize(grid, canvas_size)
        box = (*points.min(axis=0), *points.max(axis=0))
        return Geometry(box=tuple(float(v) for v in box), polygon=points.reshape(-1).tolist())
