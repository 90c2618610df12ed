"""Training-loop glue: hooks and launch helpers."""

from visionllm.engine.hooks import ClassNamesHook

__all__ = ["ClassNamesHook"]
