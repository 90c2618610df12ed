"""TimeBudgetHook: training ends on the clock, validates every few minutes, leaves validation time out."""

from __future__ import annotations

import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from visionllm.engine.hooks import TimeBudgetHook

SECONDS_PER_ITER = 10.0
SECONDS_PER_VAL = 100.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class AdvanceClock(Hook):
    """Each training iteration takes 10 s and each validation 100 s of the fake clock; records the
    learning rate of each iteration and the training minutes logged with each validation."""

    priority = "VERY_LOW"  # after TimeBudgetHook has set the iteration's learning rate

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.lrs: list[float] = []
        self.val_minutes: list[float] = []
        self.etas: list[float] = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.lrs.append(runner.optim_wrapper.param_groups[0]["lr"])
        self.clock.now += SECONDS_PER_ITER

    def before_val(self, runner) -> None:
        self.clock.now += SECONDS_PER_VAL

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.etas.append(runner.message_hub.get_info("eta"))

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.val_minutes.append(runner.message_hub.get_scalar("val/train_minutes").current())


class Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, inputs, data_samples=None, mode="tensor"):
        out = self.linear(inputs.reshape(-1, 1))
        return {"loss": out.pow(2).mean()} if mode == "loss" else [out]


class CountingMetric(BaseMetric):
    def process(self, data_batch, data_samples) -> None:
        self.results.append(1)

    def compute_metrics(self, results) -> dict:
        return {"seen": float(len(results))}


def test_budget_ends_training_validates_on_the_minute_and_saves_the_last_checkpoint(tmp_path):
    clock = FakeClock()
    advance = AdvanceClock(clock)
    budget = TimeBudgetHook(budget_minutes=2, val_every_minutes=0.5, clock=clock)
    data = dict(dataset=[torch.ones(1)] * 4, sampler=dict(type="InfiniteSampler"), batch_size=2)
    runner = Runner(
        model=Toy(),
        work_dir=str(tmp_path),
        train_dataloader=data,
        val_dataloader=dict(data, sampler=dict(type="DefaultSampler", shuffle=False)),
        val_evaluator=[CountingMetric()],
        train_cfg=dict(by_epoch=False, max_iters=10**9, val_interval=10**9),
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=10**9)),
        custom_hooks=[advance, budget],
        default_scope="mmengine",
    )
    runner.train()

    # 12 iterations of 10 s reach the 2-minute budget; the 3 x 100 s of validation do not count
    assert runner.iter == 12
    assert advance.val_minutes == [0.5, 1.0, 1.5, 2.0]  # three on the way, the loop's own final validation
    assert advance.etas[:3] == [110.0, 100.0, 90.0]  # the training time left, in seconds
    assert (tmp_path / "iter_12.pth").is_file()  # the last-iteration checkpoint, as for max_iters=12
    # warm-up from 1 % of the rate, then cosine down over the budget
    assert advance.lrs[0] == 0.1 * budget.start_factor
    assert max(advance.lrs) <= 0.1 and advance.lrs[-1] < advance.lrs[len(advance.lrs) // 2]


def test_learning_rate_shape():
    hook = TimeBudgetHook(budget_minutes=1)
    assert hook.lr_factor(0.0) == hook.start_factor
    assert abs(hook.lr_factor(hook.warmup_fraction) - 1.0) < 1e-9
    assert abs(hook.lr_factor(1.0) - hook.eta_min_ratio) < 1e-9
    assert hook.lr_factor(2.0) == hook.lr_factor(1.0)
