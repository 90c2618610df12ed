"""Training-loop glue: hooks, crash-safe checkpoints and launch helpers."""

from visionllm.engine.checkpoint import AtomicLocalBackend, ResumableCheckpointHook
from visionllm.engine.hooks import ClassNamesHook, TimeBudgetHook

__all__ = ["AtomicLocalBackend", "ClassNamesHook", "ResumableCheckpointHook", "TimeBudgetHook"]
