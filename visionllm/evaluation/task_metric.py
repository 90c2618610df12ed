"""Scores of the tasks without a COCO metric (region, point and image questions, visual prompts).

``VisionLLM.predict`` answers each ``eval_tasks`` example of every validation image (built from its ground
truth by ``Task.eval_examples``) and leaves ``(task, prediction, reference)`` triples on the sample; this
metric groups them by task and lets the task summarise its own (``Task.summarize``: accuracy, CIDEr, mask
IoU, AP), then logs one table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from visionllm.registry import METRICS
from visionllm.tasks import TASKS


@METRICS.register_module()
class TaskExamplesMetric(BaseMetric):
    """Per task, its own metrics over the examples ``VisionLLM.predict`` answered (``task_examples``)."""

    default_prefix = "tasks"

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        # one result per image: mmengine keeps as many results as the dataset has images
        for sample in data_samples:
            self.results.append(
                sample.get("task_examples", []) if isinstance(sample, dict) else sample.task_examples
            )

    def compute_metrics(self, results: list) -> dict[str, float]:
        grouped: dict[str, list] = {}
        for name, prediction, reference in (example for image in results for example in image):
            grouped.setdefault(name, []).append((prediction, reference))
        metrics, rows = {}, []
        for name, examples in grouped.items():
            scores = TASKS[name](None).summarize(examples)
            metrics.update({f"{name}/{key}": value for key, value in scores.items()})
            rows.append(
                f"| {name} | {len(examples)} | " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + " |"
            )
        table = "\n".join(["| task | examples | metrics |", "|---|---|---|", *rows])
        MMLogger.get_current_instance().info(f"task examples:\n{table}")
        return metrics
