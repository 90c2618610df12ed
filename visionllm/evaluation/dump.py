"""Write predictions as a COCO results file: ``tools/test.py --out`` adds :class:`DumpCocoResults` to the
test evaluator, next to the metric that scores them."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

from mmengine.evaluator import BaseMetric
from pycocotools.coco import COCO

from visionllm.evaluation.results import coco_result
from visionllm.fileio import write_json_atomic
from visionllm.registry import METRICS


@METRICS.register_module()
class DumpCocoResults(BaseMetric):
    """Writes every test prediction to ``out_file`` in COCO results format and reports no metric.

    Each object becomes ``{image_id, category_id, bbox (xywh), score}``, plus ``segmentation`` (RLE)
    when the model predicts masks. Labels map to category ids as in mmdet's ``CocoMetric`` and
    ``CocoDataset``: ``COCO(ann_file).getCatIds(catNms=classes)``, or the label indices themselves
    without an annotation file (what ``CocoMetric`` does then). Objects of a class outside the dataset
    (label -1, from an open-vocabulary request) have no category id and are left out.

    Args:
        out_file: the results JSON to write.
        ann_file: the COCO annotation file whose category ids the labels map to.
    """

    default_prefix = "dump"

    def __init__(self, out_file: str, ann_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file
        self.ann_file = ann_file

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Keep each image's objects as ``(label, entry)`` pairs: one item per image, because mmengine
        trims the collected results to the dataset's size (and drops distributed padding that way)."""
        for sample in data_samples:
            pred = sample["pred_instances"]
            masks = pred.get("masks") or [None] * len(pred["labels"])
            objects = zip(pred["bboxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), masks)
            self.results.append(
                [
                    (label, coco_result(sample["img_id"], box, score, mask))
                    for box, score, label, mask in objects
                    if label >= 0
                ]
            )

    def compute_metrics(self, results: list[list[tuple[int, dict]]]) -> dict:
        category_ids = self._category_ids()
        entries = [
            {**entry, "category_id": category_ids[label]} for image in results for label, entry in image
        ]
        write_json_atomic(entries, self.out_file)
        return {}

    def _category_ids(self) -> list[int]:
        classes = self.dataset_meta["classes"]
        if self.ann_file is None:
            return list(range(len(classes)))
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            category_ids = COCO(self.ann_file).getCatIds(catNms=classes)
        if len(category_ids) != len(classes):
            raise ValueError(f"{self.ann_file} lacks categories for some of the classes {list(classes)}")
        return category_ids
