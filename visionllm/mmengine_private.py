"""Every private mmengine (and mmcv) name VisionLLM depends on, listed in one place.

mmengine keeps no promise about names that start with an underscore or live in an underscore module;
an upgrade may rename them or change what they do without notice. VisionLLM's code reaches them only
through this module: private callables are re-exported here (import them from here, never from mmengine),
private attributes are read and written through the accessors below, and private methods that our
subclasses override are listed in :data:`PRIVATE_APIS` too. ``tests/test_mmengine_private.py`` checks
each entry against the installed mmengine (pinned to 0.10.7 in ``requirements.lock``): that it exists,
takes the parameters we pass, and behaves as we rely on; a failure names the API and where we use it.

From mmdet's private API, only ``CocoMetric._coco_api`` is used (:func:`set_coco_api`). The mmcv internals
that ``visionllm/compat.py`` patches are listed here as well; compat applies them itself, since it runs
before mmcv or mmengine is imported.

Import this module only after ``visionllm.compat`` has run (importing ``visionllm`` does that).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import mmcv.ops.multi_scale_deform_attn as mmcv_deform_attn
import mmengine._strategy as mmengine_strategy
import mmengine.runner.checkpoint as mmengine_checkpoint
from mmdet.datasets.api_wrappers import COCO
from mmdet.evaluation.metrics import CocoMetric
from mmengine._strategy import DeepSpeedStrategy  # private module: mmengine exports the class nowhere else
from mmengine.dataset import BaseDataset
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer
from mmengine.runner import FlexibleRunner, IterBasedTrainLoop, Runner
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

__all__ = [
    "PRIVATE_APIS",
    "DeepSpeedStrategy",
    "PrivateAPI",
    "_load_checkpoint",
    "_load_checkpoint_to_model",
    "configured_dataloader",
    "history_buffer_statistics_methods",
    "live_metainfo",
    "set_coco_api",
    "set_max_iters",
]


# ------------------------------------------------------------------------------------------- accessors


def configured_dataloader(runner: Runner | FlexibleRunner, split: str) -> Any:
    """The ``{split}_dataloader`` the runner was given (config dict or loader; None when not given),
    read without building it: the public ``runner.train_dataloader`` builds the loader (and the train
    loop) on first access. ``split`` is ``train``, ``val`` or ``test``."""
    return getattr(runner, f"_{split}_dataloader", None)


def set_max_iters(loop: IterBasedTrainLoop, max_iters: int) -> None:
    """Change an iteration-based train loop's iteration limit while it runs (``max_iters`` is read-only);
    the loop checks it before every iteration and the hooks read it through ``runner.max_iters``."""
    loop._max_iters = max_iters


def live_metainfo(dataset: BaseDataset) -> dict:
    """The dataset's own meta-information dict, to change in place; the public ``dataset.metainfo``
    returns a copy."""
    return dataset._metainfo


def set_coco_api(metric: CocoMetric, coco: COCO) -> None:
    """Set the ground truth mmdet's ``CocoMetric`` scores against (built from ``ann_file``, as read, in its
    ``__init__``; read by ``compute_metrics``)."""
    metric._coco_api = coco


def history_buffer_statistics_methods() -> set[str]:
    """The names of the statistics methods registered on ``HistoryBuffer`` (``min``, ``max``, ``current``,
    ``mean`` and any custom ones); a pickled ``HistoryBuffer`` references them by name."""
    return set(HistoryBuffer._statistics_methods)


# ------------------------------------------------------------------------------------------- the list


@dataclass(frozen=True)
class PrivateAPI:
    """One private name we depend on: ``owner.name``, what we use it for and where."""

    owner: Any  # the module or class that defines it
    name: str
    purpose: str
    used_in: tuple[str, ...]
    #: for callables, the leading parameters (``self`` included for methods) we pass, rely on or override
    params: tuple[str, ...] | None = None
    #: an instance attribute (set in ``__init__``), not found on the class itself
    instance_attribute: bool = False
    #: a private method our subclass overrides (mmengine calls it; we define it and call ``super()``'s)
    overridden: bool = False

    @property
    def qualname(self) -> str:
        owner = getattr(self.owner, "__qualname__", None) or self.owner.__name__
        module = self.owner.__module__ if inspect.isclass(self.owner) else ""
        return ".".join(part for part in (module, owner, self.name) if part)


#: Every private mmengine / mmcv name VisionLLM uses. ``tests/test_mmengine_private.py`` fails on private
#: imports, uses of these attributes and overrides of private methods anywhere else in the project.
PRIVATE_APIS: tuple[PrivateAPI, ...] = (
    PrivateAPI(
        mmengine_checkpoint,
        "_load_checkpoint",
        "read a checkpoint file (first half of mmengine's load_checkpoint)",
        ("visionllm/fileio.py: read_checkpoint (Predictor.from_checkpoint)",),
        params=("filename", "map_location", "logger"),
    ),
    PrivateAPI(
        mmengine_checkpoint,
        "_load_checkpoint_to_model",
        "load a read checkpoint into the model, 'module.' prefixes stripped (second half of load_checkpoint)",
        ("visionllm/apis/inference.py: Predictor.from_checkpoint",),
        params=("model", "checkpoint", "strict", "logger", "revise_keys"),
    ),
    PrivateAPI(
        mmengine_strategy,
        "DeepSpeedStrategy",
        "base class of VisionLLMDeepSpeedStrategy (mmengine._strategy is a private module)",
        ("visionllm/engine/deepspeed.py: VisionLLMDeepSpeedStrategy",),
    ),
    PrivateAPI(
        DeepSpeedStrategy,
        "_wrap_model",
        "overridden to cast BatchNorm statistics to the parameters' dtype after DeepSpeed wraps the model",
        ("visionllm/engine/deepspeed.py: VisionLLMDeepSpeedStrategy._wrap_model",),
        params=("self", "model"),
        overridden=True,
    ),
    PrivateAPI(
        CheckpointHook,
        "_save_checkpoint_with_step",
        "overridden to add every rank's RNG states to the checkpoint's meta and prune after saving",
        ("visionllm/engine/checkpoint.py: ResumableCheckpointHook._save_checkpoint_with_step",),
        params=("self", "runner", "step", "meta"),
        overridden=True,
    ),
    *(
        PrivateAPI(
            runner,
            f"_{split}_dataloader",
            f"the configured {split} loader, read without building it (configured_dataloader)",
            ("visionllm/engine/hooks.py: ClassNamesHook.before_run",),
            instance_attribute=True,
        )
        for runner in (Runner, FlexibleRunner)
        for split in ("train", "val", "test")
    ),
    PrivateAPI(
        IterBasedTrainLoop,
        "_max_iters",
        "end training after the current iteration when the time budget is spent (set_max_iters)",
        ("visionllm/engine/hooks.py: TimeBudgetHook.after_train_iter",),
        instance_attribute=True,
    ),
    PrivateAPI(
        BaseDataset,
        "_metainfo",
        "take the annotation file's class names when the config gives none (live_metainfo)",
        ("visionllm/data/coco.py: VisionLLMCocoDataset.COCOAPI",),
        instance_attribute=True,
    ),
    PrivateAPI(
        CocoMetric,
        "_coco_api",
        "score against the ground truth the dataset kept, unusable annotations dropped (set_coco_api)",
        ("visionllm/evaluation/coco_metric.py: VisionLLMCocoMetric.__init__",),
        instance_attribute=True,
    ),
    PrivateAPI(
        HistoryBuffer,
        "_statistics_methods",
        "the method names a pickled HistoryBuffer may look up (history_buffer_statistics_methods)",
        ("visionllm/compat.py: checkpoint_safe_globals",),
    ),
    PrivateAPI(
        mmcv_deform_attn,
        "IS_CUDA_AVAILABLE",
        "set False under mmcv-lite: deformable attention takes mmcv's pure-PyTorch path on CUDA too",
        ("visionllm/compat.py: patch_mmcv",),
    ),
    PrivateAPI(
        mmcv_deform_attn,
        "IS_MLU_AVAILABLE",
        "set False under mmcv-lite, as IS_CUDA_AVAILABLE",
        ("visionllm/compat.py: patch_mmcv",),
    ),
)
