"""Hooks that connect the dataset to the model."""

from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from visionllm.registry import HOOKS


@HOOKS.register_module()
class ClassNamesHook(Hook):
    """Gives the model its dataset's class names, which evaluation requests list and labels index.

    Taken from the training set, else the validation or test set, so a checkpoint trained on one class
    list keeps it when evaluated; the names are saved in the checkpoint's ``meta.dataset_meta``.
    """

    priority = "VERY_HIGH"

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if getattr(model, "class_names", None):
            return
        for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
            if getattr(runner, f"_{name}", None) is not None:  # configured (built on first access)
                model.class_names = list(getattr(runner, name).dataset.metainfo["classes"])
                return
