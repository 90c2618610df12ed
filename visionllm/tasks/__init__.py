"""Tasks defined in language, one module per task, and the registry that builds them by name."""

from __future__ import annotations

from typing import Any

from visionllm.tasks.base import (
    TASKS,
    DetectedObject,
    Geometry,
    ImageAnnotations,
    ObjectTargets,
    ParseResult,
    Request,
    Task,
    TaskBase,
    TextTask,
    register_task,
)
from visionllm.vocab import TaskVocab

# isort: split
# Importing a task module registers its tasks; this order (detect, segment, ground, then the region,
# point, visual-prompt and image questions) is the order in which tasks are listed (docs, errors).
from visionllm.tasks.detection import DetectionTask  # isort: split

from visionllm.tasks.segmentation import SegmentationTask  # isort: split

from visionllm.tasks.grounding import GroundingAccuracy, GroundingTask, NoReferentError, ReferringExpression

# isort: split
from visionllm.tasks.regions import RegionClassificationTask, RegionComparisonTask, RegionDescriptionTask

# isort: split
from visionllm.tasks.points import PointClassificationTask, PointSegmentationTask

# isort: split
from visionllm.tasks.visual_prompt import VisualPromptDetectionTask

# isort: split
from visionllm.tasks.image_qa import CaptionTask, ColorQuestionTask, CountingTask

#: The built-in tasks (every registered task is in ``TASKS``).
SUPPORTED_TASKS: tuple[str, ...] = tuple(TASKS)


def canonical_task_name(name: str) -> str:
    """``"detection"``, ``"instance_segmentation"``, ... -> ``"detect"``, ``"segment"``, ..."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    aliases = {alias: task.name for task in TASKS.values() for alias in (task.name, *task.synonyms)}
    if key not in aliases:
        raise ValueError(f"unknown task {name!r}; supported tasks: {', '.join(TASKS)}")
    return aliases[key]


def task_class(name: str) -> type[TaskBase]:
    return TASKS[canonical_task_name(name)]


def build_task(name_or_cfg: str | dict[str, Any], vocab: TaskVocab, **options: Any) -> TaskBase:
    """Build a task from its name (or a synonym) or a config ``dict(type=name, **options)``."""
    if isinstance(name_or_cfg, dict):
        options = {**{k: v for k, v in name_or_cfg.items() if k != "type"}, **options}
        name_or_cfg = name_or_cfg["type"]
    return task_class(name_or_cfg)(vocab, **options)


__all__ = [
    "SUPPORTED_TASKS",
    "TASKS",
    "CaptionTask",
    "ColorQuestionTask",
    "CountingTask",
    "PointClassificationTask",
    "PointSegmentationTask",
    "RegionClassificationTask",
    "RegionComparisonTask",
    "RegionDescriptionTask",
    "TaskBase",
    "TextTask",
    "VisualPromptDetectionTask",
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
    "register_task",
    "task_class",
]
