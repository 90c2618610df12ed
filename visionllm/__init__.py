"""VisionLLM: a generalist vision LLM whose tasks are defined in language."""

from visionllm import compat  # noqa: F401  (must run before torchvision / mmcv / mmengine import)

__version__ = "0.1.0"
