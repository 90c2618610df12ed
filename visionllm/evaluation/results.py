"""The one place where predictions become COCO result dicts (``predictions.json``, ``tools/test.py --out``,
the benchmarks): ``{image_id, [category_id], [category_name], bbox (xywh), score, [segmentation (RLE)]}``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from visionllm.structures import Prediction


def coco_result(
    image_id: int,
    box: Sequence[float],
    score: float,
    mask: dict | None = None,
    **fields: Any,
) -> dict:
    """One COCO result entry: ``box`` xyxy -> ``bbox`` xywh, ``mask`` (a COCO RLE) as ``segmentation``.
    ``fields`` (``category_id``, ``category_name``, ...) are added as given."""
    x1, y1, x2, y2 = (float(v) for v in box)
    entry = {"image_id": int(image_id), **fields, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
    if mask is not None:
        entry["segmentation"] = mask
    return entry


def prediction_to_coco(
    prediction: Prediction, image_id: int, category_ids: Mapping[str, int] | None = None
) -> list[dict]:
    """COCO result entries of one :class:`Prediction`: each has its ``category_name``, the predicted
    ``polygon`` (flat x, y, ...; a key COCO tools ignore) beside its RLE ``segmentation`` when there is
    a mask, and with ``category_ids`` (class name -> COCO id) its ``category_id``; objects of a class
    without an id are then left out."""
    entries = []
    for obj in prediction.objects:
        fields: dict = {"category_name": obj.class_name}
        if category_ids is not None:
            if obj.class_name not in category_ids:
                continue
            fields["category_id"] = int(category_ids[obj.class_name])
        if obj.polygon is not None:
            fields["polygon"] = obj.polygon
        entries.append(coco_result(image_id, obj.box, obj.score, obj.mask, **fields))
    return entries
