"""Scores of the tasks without a COCO metric (region, point and image questions, visual prompts).

``VisionLLM.predict`` answers each ``eval_tasks`` example of every validation image (built from its ground
truth by ``Task.eval_examples``) and leaves ``(task, prediction, reference)`` triples on the sample; this
metric groups them by task and lets the task summarise its own (``Task.summarize``: accuracy, CIDEr, mask
IoU, AP), then logs one table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from visionllm.registry import METRICS
from visionllm.tasks import TASKS


@METRICS.register_module()
class TaskExamplesMetric(BaseMetric):
    """Per task, its own metrics over the examples ``VisionLLM.predict`` answered (``task_examples``).

    Args:
        answers_file: also write every answer in words to this JSON-lines file, one line per question:
            ``image``, ``task``, ``question`` (with its ``<region>`` / ``<point>`` placeholders),
            ``regions`` and ``points`` (original pixels), ``answer`` as the model wrote it, ``reference``.
    """

    default_prefix = "tasks"

    def __init__(self, answers_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers_file = answers_file

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        # one result per image: mmengine keeps as many results as the dataset has images
        for sample in data_samples:
            if isinstance(sample, dict):
                self.results.append((sample.get("img_path"), sample.get("task_examples", [])))
            else:
                self.results.append((sample.metainfo.get("img_path"), sample.task_examples))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if self.answers_file:
            self._write_answers(results)
        grouped: dict[str, list] = {}
        for name, prediction, reference in (example for _, image in results for example in image):
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

    def _write_answers(self, results: list) -> None:
        """One JSON line per answer in words (``answers_file``)."""
        path = Path(self.answers_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            for image, examples in results:
                for name, prediction, reference in examples:
                    if prediction.text is None:  # answered with objects: scored, not written
                        continue
                    request = prediction.request
                    line = dict(
                        image=image,
                        task=name,
                        question=request.text,
                        regions=[list(box) for box in request.regions],
                        points=[list(point) for point in request.points],
                        answer=prediction.text,
                        reference=str(reference),
                    )
                    out.write(json.dumps(line) + "\n")
        MMLogger.get_current_instance().info(f"answers in words written to {path}")
