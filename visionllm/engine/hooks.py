"""Runner hooks: the dataset's class names for the model, training for a wall-clock budget, and a progress
bar for evaluation."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn
from tqdm import tqdm

from visionllm.fileio import checkpoint_classes
from visionllm.mmengine_private import configured_dataloader, set_max_iters
from visionllm.registry import HOOKS


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a distributed wrapper (DDP and the like), else the model itself."""
    return model.module if is_model_wrapper(model) else model


def dataset_attribute_values(dataset) -> dict[str, list[str]]:
    """Attribute -> the sorted words of its values over every annotated instance of ``dataset`` (COCO
    annotations' ``attributes`` dicts, e.g. ``{"color": "red", "size": "large"}``); empty without them."""
    values: dict[str, set[str]] = {}
    for index in range(len(dataset)):
        for instance in dataset.get_data_info(index).get("instances", []):
            for key, value in instance.get("attributes", {}).items():
                values.setdefault(key, set()).add(str(value))
    return {key: sorted(words) for key, words in sorted(values.items())}


@HOOKS.register_module()
class ClassNamesHook(Hook):
    """Gives the model its dataset's class names, which evaluation requests list and labels index, and,
    when it trains attribute heads (``VisionLLM.attribute_loss_weight``), the words of each annotated
    attribute's values in the training set (``dataset_attribute_values``).

    Class names are taken from the training set, else the validation or test set; they are saved in the
    checkpoint's ``meta.dataset_meta``. A run that only evaluates takes the loaded checkpoint's names and
    refuses a test / validation set whose classes differ (their labels would mean other classes), naming
    both lists; a training run from ``load_from`` (fine-tuning) keeps its dataset's classes.
    """

    priority = "VERY_HIGH"

    def before_run(self, runner) -> None:
        model = unwrap_model(runner.model)
        if not getattr(model, "class_names", None):
            for split in ("train", "val", "test"):
                if configured_dataloader(runner, split) is not None:  # configured (built on first access)
                    dataset = getattr(runner, f"{split}_dataloader").dataset
                    model.class_names = list(dataset.metainfo["classes"])
                    break
        wants_attributes = getattr(model, "attribute_loss_weight", 0) > 0 and model.attribute_values is None
        if wants_attributes and configured_dataloader(runner, "train") is not None:
            model.attribute_values = dataset_attribute_values(runner.train_dataloader.dataset)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        trained_on = checkpoint_classes(checkpoint)
        if not trained_on or configured_dataloader(runner, "train") is not None:
            return
        unwrap_model(runner.model).class_names = trained_on
        for split in ("val", "test"):
            if configured_dataloader(runner, split) is None:
                continue
            dataset = getattr(runner, f"{split}_dataloader").dataset
            classes = list(dataset.metainfo["classes"])
            if classes != trained_on:
                raise ValueError(
                    f"the checkpoint was trained on the classes {trained_on}, but the {split} data "
                    f"({getattr(dataset, 'ann_file', '?')}) has {classes}; evaluate on data with the "
                    "checkpoint's classes (`visionllm test --data` selects them by name)"
                )


@HOOKS.register_module()
class TimeBudgetHook(Hook):
    """Trains for a wall-clock budget instead of an iteration count, validating every few minutes.

    The clock starts at ``before_train`` and leaves out validation time. After the first iteration
    that ends past ``budget_minutes`` the loop's iteration limit is set to that iteration, so training
    ends as if it had been configured that way: the last checkpoint is saved and the final
    validation runs. Every ``val_every_minutes`` of training it validates (a curve of the metric
    against minutes); the training minutes are logged beside each validation's metrics as
    ``train_minutes``, and the logged ETA is the training time left.

    With ``time_schedule`` it sets every parameter group's learning rate before each iteration from
    the elapsed fraction f of the budget: ``start_factor`` rising linearly to 1 over
    ``warmup_fraction``, then cosine down to ``eta_min_ratio`` at f = 1 (times the group's configured
    rate). Use it with ``param_scheduler = None``. After ``--resume`` the budget counts anew.
    """

    priority = "NORMAL"  # the iteration limit must change before the checkpoint hook checks it

    def __init__(
        self,
        budget_minutes: float,
        val_every_minutes: float | None = None,
        time_schedule: bool = True,
        warmup_fraction: float = 0.05,
        start_factor: float = 0.01,
        eta_min_ratio: float = 0.01,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if budget_minutes <= 0 or (val_every_minutes is not None and val_every_minutes <= 0):
            raise ValueError("TimeBudgetHook: budget_minutes and val_every_minutes must be positive")
        self.budget_s = 60.0 * budget_minutes
        self.val_every_s = None if val_every_minutes is None else 60.0 * val_every_minutes
        self.time_schedule = time_schedule
        self.warmup_fraction = warmup_fraction
        self.start_factor = start_factor
        self.eta_min_ratio = eta_min_ratio
        self.clock = clock
        self.start = 0.0
        self.paused_s = 0.0  # validation time, left out of the training clock
        self.next_val_s = float("inf")
        self.base_lrs: list[float] = []

    @property
    def elapsed_s(self) -> float:
        """Training seconds so far (validation excluded)."""
        return self.clock() - self.start - self.paused_s

    def lr_factor(self, fraction: float) -> float:
        """Multiplier of the configured learning rate at ``fraction`` of the budget."""
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction < self.warmup_fraction:
            return self.start_factor + (1 - self.start_factor) * fraction / self.warmup_fraction
        progress = (fraction - self.warmup_fraction) / (1 - self.warmup_fraction)
        return self.eta_min_ratio + (1 - self.eta_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def before_train(self, runner) -> None:
        self.base_lrs = [group["lr"] for group in runner.optim_wrapper.param_groups]
        self.start, self.paused_s = self.clock(), 0.0
        self.next_val_s = self.val_every_s or float("inf")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.time_schedule:
            factor = self.lr_factor(self.elapsed_s / self.budget_s)
            for group, base in zip(runner.optim_wrapper.param_groups, self.base_lrs):
                group["lr"] = base * factor

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        elapsed = self.elapsed_s
        if elapsed >= self.budget_s or elapsed >= self.next_val_s:
            runner.message_hub.update_scalar("val/train_minutes", elapsed / 60.0)
        if elapsed >= self.budget_s:
            # this iteration becomes the last: the loop's own end-of-training validation and the
            # checkpoint hook's last-iteration save then run as for an iteration-limited schedule
            set_max_iters(runner.train_loop, runner.iter + 1)
        elif elapsed >= self.next_val_s and runner.val_loop is not None:
            paused_at = self.clock()
            runner.val_loop.run()
            runner.model.train()
            self.paused_s += self.clock() - paused_at
            self.next_val_s += self.val_every_s
        # the logged ETA: training time left (IterTimerHook's counts towards max_iters)
        runner.message_hub.update_info("eta", max(self.budget_s - elapsed, 0.0))


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """A progress bar on stderr over the test images (count, rate, time left), then one summary line:
    images, seconds and the metrics. Added by ``visionllm test`` and ``tools/test.py``; rank 0 only."""

    priority = "LOW"

    def before_test_epoch(self, runner) -> None:
        self._bar = tqdm(
            total=len(runner.test_dataloader.dataset),
            desc="evaluating",
            unit="image",
            file=sys.stderr,
            leave=False,
            disable=runner.rank != 0,
        )
        self._start = time.perf_counter()

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._bar.update(len(outputs or ()))

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        images = self._bar.n
        self._bar.close()
        if runner.rank == 0:
            shown = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in (metrics or {}).items() if "mAP" in k)
            print(f"evaluated {images} images in {time.perf_counter() - self._start:.0f} s: {shown}")
