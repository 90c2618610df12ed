"""mmengine registries for VisionLLM, children of mmdet's so one config can mix both.

Build anything with ``MODELS.build(cfg)``; a ``type`` that VisionLLM does not register is looked up in
mmdet (and from there in mmengine), so ``type='DetDataPreprocessor'`` or ``type='PackDetInputs'`` work.
"""

from mmdet import registry as mmdet_registry
from mmengine.registry import Registry


def _child(name: str, location: str | None = None) -> Registry:
    """A ``visionllm``-scoped child of mmdet's registry of the same name."""
    parent = getattr(mmdet_registry, name)
    return Registry(parent.name, parent=parent, scope="visionllm", locations=[location] if location else [])


# Registries VisionLLM adds components to
MODELS = _child("MODELS", "visionllm.models")
DATASETS = _child("DATASETS", "visionllm.data")
TRANSFORMS = _child("TRANSFORMS", "visionllm.data")
METRICS = _child("METRICS", "visionllm.evaluation")
HOOKS = _child("HOOKS", "visionllm.engine")
# The rest exist so that a config with ``default_scope='visionllm'`` finds mmdet's components too
RUNNERS = _child("RUNNERS")
RUNNER_CONSTRUCTORS = _child("RUNNER_CONSTRUCTORS")
LOOPS = _child("LOOPS")
DATA_SAMPLERS = _child("DATA_SAMPLERS")
MODEL_WRAPPERS = _child("MODEL_WRAPPERS")
WEIGHT_INITIALIZERS = _child("WEIGHT_INITIALIZERS")
OPTIMIZERS = _child("OPTIMIZERS")
OPTIM_WRAPPERS = _child("OPTIM_WRAPPERS")
OPTIM_WRAPPER_CONSTRUCTORS = _child("OPTIM_WRAPPER_CONSTRUCTORS")
PARAM_SCHEDULERS = _child("PARAM_SCHEDULERS")
EVALUATOR = _child("EVALUATOR")
TASK_UTILS = _child("TASK_UTILS")
VISUALIZERS = _child("VISUALIZERS")
VISBACKENDS = _child("VISBACKENDS")
LOG_PROCESSORS = _child("LOG_PROCESSORS")


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
