"""Tasks defined in language, one module per task, and the registry that builds them by name."""

from __future__ import annotations

from typing import Any

from visionllm.tasks.base import (
    DetectedObject,
    Geometry,
    ImageAnnotations,
    ObjectTargets,
    ParseResult,
    Request,
    Task,
)
from visionllm.tasks.detection import DetectionTask
from visionllm.tasks.grounding import GroundingAccuracy, GroundingTask, NoReferentError, ReferringExpression
from visionllm.tasks.segmentation import SegmentationTask
from visionllm.vocab import TaskVocab

#: Canonical task name -> class. Free-form instructions are matched against these tasks.
TASKS: dict[str, type[Task]] = {task.name: task for task in (DetectionTask, SegmentationTask, GroundingTask)}
SUPPORTED_TASKS: tuple[str, ...] = tuple(TASKS)
_ALIASES = {alias: task.name for task in TASKS.values() for alias in (task.name, *task.synonyms)}


def canonical_task_name(name: str) -> str:
    """``"detection"``, ``"instance_segmentation"``, ... -> ``"detect"``, ``"segment"``, ..."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in _ALIASES:
        raise ValueError(f"unknown task {name!r}; supported tasks: {', '.join(SUPPORTED_TASKS)}")
    return _ALIASES[key]


def task_class(name: str) -> type[Task]:
    return TASKS[canonical_task_name(name)]


def build_task(name_or_cfg: str | dict[str, Any], vocab: TaskVocab, **options: Any) -> Task:
    """Build a task from its name (or a synonym) or a config ``dict(type=name, **options)``."""
    if isinstance(name_or_cfg, dict):
        options = {**{k: v for k, v in name_or_cfg.items() if k != "type"}, **options}
        name_or_cfg = name_or_cfg["type"]
    return task_class(name_or_cfg)(vocab, **options)


__all__ = [
    "SUPPORTED_TASKS",
    "TASKS",
    "DetectedObject",
    "DetectionTask",
    "Geometry",
    "GroundingAccuracy",
    "GroundingTask",
    "ImageAnnotations",
    "NoReferentError",
    "ObjectTargets",
    "ParseResult",
    "ReferringExpression",
    "Request",
    "SegmentationTask",
    "Task",
    "build_task",
    "canonical_task_name",
    "task_class",
]
