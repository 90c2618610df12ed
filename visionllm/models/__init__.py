"""Model components, registered in ``visionllm.registry.MODELS`` on import."""

from visionllm.models.backbones import TimmBackbone
from visionllm.models.image_tokenizer import LanguageGuidedImageTokenizer
from visionllm.models.matcher import HungarianMatcher
from visionllm.models.visionllm import VisionLLM

__all__ = ["HungarianMatcher", "LanguageGuidedImageTokenizer", "TimmBackbone", "VisionLLM"]
