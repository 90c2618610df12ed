"""COCO evaluation for VisionLLM.

- :func:`evaluate_coco` / ``tools/eval_coco.py``: pycocotools metrics of a results file, with checked input.
- :class:`VisionLLMCocoMetric` (the configs' evaluator): mmdet's ``CocoMetric`` against the ground truth the
  dataset kept, annotations it drops left out and counted. Its ``pred_instances.masks`` may be a mask tensor
  or a list of COCO RLE dicts (one per instance), so task decoders that predict polygons turn them into RLE
  with :func:`polygons_to_rle` and need no metric of their own.
- :class:`DumpCocoResults` (``tools/test.py --out``): writes the test predictions as a COCO results file.
- :mod:`~visionllm.evaluation.results`: the one place where predictions become COCO result dicts.
- :class:`TaskExamplesMetric`: the tasks COCO does not score (region, point and image questions, visual
  prompts), each by its own ``Task.summarize``.
"""

from visionllm.evaluation.coco_eval import STAT_NAMES, evaluate_coco, format_stats_table, polygons_to_rle
from visionllm.evaluation.coco_metric import VisionLLMCocoMetric
from visionllm.evaluation.dump import DumpCocoResults
from visionllm.evaluation.results import coco_result, prediction_to_coco
from visionllm.evaluation.task_metric import TaskExamplesMetric

__all__ = [
    "STAT_NAMES",
    "DumpCocoResults",
    "TaskExamplesMetric",
    "VisionLLMCocoMetric",
    "coco_result",
    "evaluate_coco",
    "format_stats_table",
    "polygons_to_rle",
    "prediction_to_coco",
]
