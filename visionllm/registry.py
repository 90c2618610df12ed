"""mmengine registries for VisionLLM, children of mmdet's so one config can mix both.

Build anything with ``MODELS.build(cfg)``; a ``type`` that VisionLLM does not register is looked up in
mmdet (and from there in mmengine), so ``type='DetDataPreprocessor'`` or ``type='PackDetInputs'`` work.
"""

from mmdet.registry import DATASETS as MMDET_DATASETS
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import METRICS as MMDET_METRICS
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.registry import TRANSFORMS as MMDET_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry("model", parent=MMDET_MODELS, scope="visionllm", locations=["visionllm.models"])
DATASETS = Registry("dataset", parent=MMDET_DATASETS, scope="visionllm", locations=["visionllm.data"])
TRANSFORMS = Registry("transform", parent=MMDET_TRANSFORMS, scope="visionllm", locations=["visionllm.data"])
METRICS = Registry("metric", parent=MMDET_METRICS, scope="visionllm", locations=["visionllm.evaluation"])
HOOKS = Registry("hook", parent=MMDET_HOOKS, scope="visionllm", locations=["visionllm.engine"])


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import mmdet's and VisionLLM's components so their registries are filled (what a config's
    ``custom_imports`` does for the Runner), and make ``visionllm`` the default scope."""
    import importlib

    from mmdet.utils import register_all_modules as register_mmdet
    from mmengine.registry import init_default_scope as set_scope

    register_mmdet(init_default_scope=False)
    for module in ("models", "data.coco", "data.loading", "data.transforms", "evaluation", "engine"):
        importlib.import_module(f"visionllm.{module}")
    if init_default_scope:
        set_scope("visionllm")
