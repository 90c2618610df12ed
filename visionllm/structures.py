"""What the model answers: one :class:`Prediction` per image and request.

Every prediction leaves the model in one convention: xyxy boxes and flat x, y, ... polygons in
original-image pixels (the resize and padding undone, clipped to the image), scores in [0, 1], and
``class_indices`` into the request's class list. ``VisionLLM.generate`` builds them; the Runner's
``predict`` turns them into mmdet ``pred_instances`` and the :class:`~visionllm.apis.Predictor`
returns them as they are. COCO result dicts are made from them in ``visionllm.evaluation.results``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from visionllm.tasks.base import DetectedObject, ParseResult, Request


def polygons_to_rle(polygons: list[list[float]], height: int, width: int) -> dict:
    """One compressed COCO RLE (``counts`` as str, JSON-ready) for the union of ``polygons``.

    Each polygon is a flat ``[x1, y1, x2, y2, ...]`` list in pixels; polygons with fewer than 3 points
    enclose nothing and are skipped (so none at all gives an empty mask). An odd-length list is an error.
    """
    for index, polygon in enumerate(polygons):
        if len(polygon) % 2:
            raise ValueError(f"polygon {index} has an odd number of coordinates ({len(polygon)})")
    closed = [[float(v) for v in polygon] for polygon in polygons if len(polygon) >= 6]
    if closed:
        rle = mask_utils.merge(mask_utils.frPyObjects(closed, height, width))
    else:
        rle = mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


@dataclass
class ObjectPrediction:
    """One predicted object in original-image pixels (a view of one row of a :class:`Prediction`).

    ``label`` is the index of ``class_name`` in the model's class list, -1 for a class outside it (an
    open-vocabulary name or a grounding phrase). ``mask`` is a COCO RLE and ``polygon`` the predicted
    K points (flat x, y, ...) the mask was filled from (segmentation requests only).
    """

    class_name: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    label: int
    mask: dict | None = None
    polygon: list[float] | None = None

    @property
    def polygons(self) -> list[list[float]]:
        """COCO polygons (flat x, y, ... in pixels): the predicted polygon, else the mask's outer
        contours; [] without either."""
        if self.polygon is not None:
            return [self.polygon]
        if self.mask is None:
            return []
        contours, _ = cv2.findContours(
            mask_utils.decode(self.mask), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        return [contour.reshape(-1).astype(float).tolist() for contour in contours if len(contour) >= 3]


@dataclass
class Prediction:
    """What the model found in one image for one request, in original-image pixels.

    ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``class_indices`` (N,) into ``request.classes`` and
    ``labels`` (N,) into the model's class list (-1 outside it). ``polygons`` and ``masks`` (COCO
    RLE) hold one entry per object for tasks that predict shapes, and are None otherwise.
    ``dropped_tokens`` counts what the answer's parser threw away, by reason (``visionllm.tasks.base``);
    ``file_name`` is the image's path when the :class:`~visionllm.apis.Predictor` read it from a file.
    An answer in words (``TextTask``) is ``text``, with ``text_score`` the geometric mean of its tokens'
    probabilities, and no objects. ``request`` is the request as asked, its regions and points in
    original-image pixels too.
    """

    request: Request
    decode_mode: str
    height: int
    width: int
    boxes: np.ndarray
    scores: np.ndarray
    class_indices: np.ndarray
    labels: np.ndarray
    polygons: list[list[float]] | None = None
    masks: list[dict] | None = None
    dropped_tokens: dict[str, int] = field(default_factory=dict)
    file_name: str | None = None
    text: str | None = None
    text_score: float | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.class_indices = np.asarray(self.class_indices, dtype=np.int64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        lengths = [len(self.scores), len(self.class_indices), len(self.labels)]
        lengths += [len(v) for v in (self.polygons, self.masks) if v is not None]
        if any(length != n for length in lengths):
            raise ValueError(f"a prediction's fields describe different numbers of objects: {n}, {lengths}")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_parsed(
        cls,
        parsed: ParseResult,
        request: Request,
        image_meta: Mapping,
        decode_mode: str,
        class_names: Sequence[str] = (),
        with_shapes: bool = False,
    ) -> Prediction:
        """Parsed objects in model-input pixels -> original-image pixels, the one place that rescales.

        ``image_meta`` is the test pipeline's metainfo: boxes and polygons are divided by its
        ``scale_factor`` = (w_scale, h_scale) and clipped to its ``ori_shape`` = (h, w); objects with no
        area left (wholly in the padding: the box, or with shapes the polygon) are dropped.
        ``class_names`` (the model's) give ``labels``. ``with_shapes``: the task predicts polygons, which
        also become COCO RLE ``masks``.
        """
        height, width = (int(v) for v in image_meta["ori_shape"])
        sx, sy = image_meta.get("scale_factor", (1.0, 1.0))
        objects: list[DetectedObject] = parsed.objects
        boxes = np.asarray([o.box for o in objects], np.float64).reshape(-1, 4) / [sx, sy, sx, sy]
        boxes = np.clip(boxes, 0, [width, height, width, height])
        inside = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        polygons = masks = None
        if with_shapes:  # a polygon wholly in the padding is dropped too (its box may be a seed's)
            points = [np.asarray(objects[i].polygon).reshape(-1, 2) / [sx, sy] for i in inside]
            polygons = [np.clip(p, 0, [width, height]).reshape(-1).tolist() for p in points]
            masks = [polygons_to_rle([polygon], height, width) for polygon in polygons]
            filled = [k for k, mask in enumerate(masks) if mask_utils.area(mask) > 0]
            inside = inside[filled]
            polygons, masks = [polygons[k] for k in filled], [masks[k] for k in filled]
        objects = [objects[i] for i in inside]
        label_of = {name: i for i, name in enumerate(class_names)}
        class_indices = [o.class_index for o in objects]
        return cls(
            request=request.scaled(1 / sx, 1 / sy),
            decode_mode=decode_mode,
            height=height,
            width=width,
            boxes=boxes[inside],
            scores=[o.score for o in objects],
            class_indices=class_indices,
            labels=[label_of.get(request.classes[k], -1) for k in class_indices],
            polygons=polygons,
            masks=masks,
            dropped_tokens=dict(parsed.dropped),
        )

    @classmethod
    def from_text(
        cls, text: str, score: float, request: Request, image_meta: Mapping, decode_mode: str
    ) -> Prediction:
        """An answer in words (no objects) to ``request`` on the image ``image_meta`` describes."""
        height, width = (int(v) for v in image_meta["ori_shape"])
        sx, sy = image_meta.get("scale_factor", (1.0, 1.0))
        empty = np.zeros((0, 4))
        return cls(
            request.scaled(1 / sx, 1 / sy), decode_mode, height, width, empty, [], [], [], text=text,
            text_score=score,
        )  # fmt: skip

    @property
    def class_names(self) -> list[str]:
        return [self.request.classes[k] for k in self.class_indices.tolist()]

    @property
    def objects(self) -> list[ObjectPrediction]:
        """One :class:`ObjectPrediction` per object, in the model's order."""
        masks = self.masks or [None] * len(self)
        polygons = self.polygons or [None] * len(self)
        return [
            ObjectPrediction(name, score, tuple(box), label, mask, polygon)
            for name, score, box, label, mask, polygon in zip(
                self.class_names,
                self.scores.tolist(),
                self.boxes.tolist(),
                self.labels.tolist(),
                masks,
                polygons,
            )
        ]

    def select(self, keep: np.ndarray | list[int] | list[bool]) -> Prediction:
        """The objects picked by ``keep`` (indices or a boolean mask), everything else as it is."""
        index = np.arange(len(self))[np.asarray(keep)] if len(self) else np.zeros(0, dtype=np.int64)
        return replace(
            self,
            boxes=self.boxes[index],
            scores=self.scores[index],
            class_indices=self.class_indices[index],
            labels=self.labels[index],
            polygons=None if self.polygons is None else [self.polygons[i] for i in index],
            masks=None if self.masks is None else [self.masks[i] for i in index],
        )

    def above(self, score_thr: float) -> Prediction:
        """The objects scoring at least ``score_thr``."""
        return self.select(self.scores >= score_thr)
