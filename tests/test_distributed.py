"""``torchrun --nproc_per_node 2 tools/train.py ... --launcher pytorch`` on CPU-only torch (gloo).

Data parallelism is checked against one process on the same global batch of 2 images per optimizer
step: 2 ranks x 1 image vs 1 process x 1 image x 2 accumulated micro-batches. Accumulation, not one
batch of 2, is the single-process equivalent of DDP's gradient averaging here: the losses are means over
the batch's slots and tokens (not per-image means) and the backbone has BatchNorm, so a batch of 2
computes other gradients than the average of two batches of 1. The model samples each batch's
instructions from the torch RNG; the test-only ``ReseedEveryIterHook`` makes every image draw from the
same RNG state in both layouts (see ``tests/tiny_runs.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.tiny_runs import TRAIN, load, subprocess_env, write_config

CONFIG = """
synthetic = dict(num_images=5)  # 5 validation images on 2 ranks: one rank's share is padded
train_cfg = dict(max_iters=3, val_interval=100)  # validates once, at the end
train_dataloader = dict(batch_size=1, sampler=dict(type="InfiniteSampler", shuffle=False))
param_scheduler = None  # constant LR: the accumulating run steps its schedulers every micro-batch
custom_hooks = [dict(type="ClassNamesHook"), dict(type="ReseedEveryIterHook")]
default_hooks = dict(checkpoint=dict(save_best=None))
val_evaluator = dict(_delete_=True, type="RecordImageIds", out_file="image_ids.json")
"""
BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _launch(args: list[str], cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, what: str) -> None:
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{output[-6000:]}"


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_and_evaluate_every_image_once(tmp_path):
    config = str(write_config(tmp_path, CONFIG, test_components=True))
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir(), single.mkdir()  # working dirs: each run generates its data there (rank 0 only in DDP)
    runs = [
        _launch(
            ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(TRAIN), config,
             "--launcher", "pytorch", "--work-dir", "work"],
            ddp,
        ),
        _launch(
            [str(TRAIN), config, "--work-dir", "work",
             "--cfg-options", "train_cfg.max_iters=6", "optim_wrapper.accumulative_counts=2",
             "default_hooks.checkpoint.interval=2", "default_hooks.checkpoint.max_keep_ckpts=3"],
            single,
        ),
    ]  # fmt: skip
    _finish(runs[0], "torchrun with 2 processes")
    _finish(runs[1], "the single process")

    after_ddp = load(ddp / "work/iter_3.pth")["state_dict"]  # 3 optimizer steps
    after_single = load(single / "work/iter_6.pth")["state_dict"]  # 6 micro-batches = 3 steps
    after_one_step = load(single / "work/iter_2.pth")["state_dict"]
    keys = [k for k in after_ddp if not k.endswith(BN_STATISTICS)]
    assert keys and set(after_ddp) == set(after_single)
    gap = max((after_ddp[k].float() - after_single[k].float()).abs().max().item() for k in keys)
    moved = max((after_single[k].float() - after_one_step[k].float()).abs().max().item() for k in keys)
    print(f"max |DDP - single| = {gap:.3g}; max change over the last 2 steps = {moved:.3g}")
    assert gap <= 1e-6, gap
    assert moved > 1e-4, moved  # the comparison is not between untrained weights

    # evaluation: every validation image scored exactly once after gathering both ranks' results
    annotations = json.loads((ddp / "data/overfit16/annotations/instances_train.json").read_text())
    image_ids = sorted(image["id"] for image in annotations["images"])
    assert len(image_ids) == 5
    assert sorted(json.loads((ddp / "image_ids.json").read_text())) == image_ids
    assert sorted(json.loads((single / "image_ids.json").read_text())) == image_ids
