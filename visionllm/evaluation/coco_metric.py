"""mmdet's ``CocoMetric`` scoring against the ground truth the dataset kept: an annotation that
``VisionLLMCocoDataset`` drops (a NaN box, a negative width, ...) is not counted as a missed object."""

from __future__ import annotations

import logging
from typing import Any

from mmdet.evaluation.metrics import CocoMetric
from mmengine.fileio import get_local_path
from mmengine.logging import print_log

from visionllm.data.coco import coco_index, drop_unusable_annotations, load_coco_json
from visionllm.mmengine_private import set_coco_api
from visionllm.registry import METRICS


@METRICS.register_module()
class VisionLLMCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric`` whose ground truth is ``ann_file`` read as ``VisionLLMCocoDataset`` reads it.

    The file goes through the dataset's checks (:func:`~visionllm.data.coco.load_coco_json`, which raises
    a ValueError naming the file and the fault) and the same removal of unusable annotations and polygon
    parts (:func:`~visionllm.data.coco.drop_unusable_annotations`). The dropped annotations are logged
    once, by id and reason, when the metric is built, and counted in every result as
    ``dropped_annotations``. An instance the dataset keeps without a polygon has an empty mask, which
    counts as missed in ``segm``.

    Args:
        ann_file: the COCO annotation file of the evaluated dataset.
        backend_args: mmengine file backend arguments to read ``ann_file`` with.
        sort_categories: sort the categories by id (as mmdet's ``CocoMetric`` does for Objects365).
        **kwargs: the other arguments of mmdet's ``CocoMetric``.
    """

    def __init__(
        self,
        ann_file: str,
        backend_args: dict | None = None,
        sort_categories: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(ann_file=None, backend_args=backend_args, **kwargs)
        with get_local_path(ann_file, backend_args=backend_args) as local_path:
            data = load_coco_json(local_path, display_name=ann_file)
        if sort_categories:
            data["categories"] = sorted(data["categories"], key=lambda category: category["id"])
        problems = drop_unusable_annotations(data)
        #: ``{annotation id: why}`` of the annotations left out of the ground truth.
        self.dropped_annotations = {p.ann_id: p.reason for p in problems if p.dropped}
        if self.dropped_annotations:
            listed = "; ".join(f"id {ann_id}: {why}" for ann_id, why in self.dropped_annotations.items())
            print_log(
                f"{ann_file}: scoring without the {len(self.dropped_annotations)} annotations the dataset "
                f"drops ({listed})",
                logger="current",
                level=logging.WARNING,
            )
        #: the ground truth's categories, to map label names to category ids
        self.categories = data["categories"]
        set_coco_api(self, coco_index(data))

    def compute_metrics(self, results: list) -> dict[str, float]:
        """mmdet's metrics, plus ``dropped_annotations``: how many annotations the ground truth left out.
        Label k is the category named ``dataset_meta['classes'][k]``, as in ``VisionLLMCocoDataset``."""
        if self.cat_ids is None:
            id_of = {category["name"]: category["id"] for category in self.categories}
            self.cat_ids = [id_of[name] for name in self.dataset_meta["classes"]]
        metrics = super().compute_metrics(results)
        metrics["dropped_annotations"] = len(self.dropped_annotations)
        return metrics
