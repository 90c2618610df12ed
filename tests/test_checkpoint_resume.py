"""Crash-safe checkpoints and exact ``--resume`` (ResumableCheckpointHook, the default runtime's hook)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.tiny_runs import TRAIN, assert_same, load, run, subprocess_env, write_config
from visionllm.apis import Predictor
from visionllm.engine.checkpoint import OMITTED_KEYS
from visionllm.models.text_encoder import TextEncoder

# tools/train.py with every binary file write wrapped: the second write of over 1 MB (the second
# checkpoint; the tiny model's is ~50 MB) writes half its bytes, fsyncs them, names the file it writes
# in STALL_MARKER and sleeps. Whatever writes the checkpoint goes through open(); nothing else is changed.
STALLING_TRAIN = f"""
import builtins, io, os, runpy, sys, time

real_open = io.open
big_writes = 0


class StallingFile:
    def __init__(self, file):
        self._file = file

    def write(self, data):
        global big_writes
        if len(data) > 1_000_000:
            big_writes += 1
            if big_writes == 2:
                self._file.write(data[: len(data) // 2])
                self._file.flush()
                os.fsync(self._file.fileno())
                with real_open(os.environ["STALL_MARKER"], "w") as marker:
                    marker.write(os.path.abspath(self._file.name))
                time.sleep(600)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)


def stalling_open(file, mode="r", *args, **kwargs):
    opened = real_open(file, mode, *args, **kwargs)
    return StallingFile(opened) if "w" in mode and "b" in mode else opened


builtins.open = io.open = stalling_open
sys.argv = ["{TRAIN}", *sys.argv[1:]]
runpy.run_path("{TRAIN}", run_name="__main__")
"""


@pytest.mark.slow
def test_sigkill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    config = write_config(
        tmp_path,
        "train_cfg = dict(max_iters=6, val_interval=100)\n"
        "default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=1))\n",
    )
    (tmp_path / "stalling_train.py").write_text(STALLING_TRAIN)
    work, marker = tmp_path / "work", tmp_path / "stalled"
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "stalling_train.py", str(config), "--work-dir", str(work)],
            cwd=tmp_path,
            env={**subprocess_env(), "STALL_MARKER": str(marker)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        stalled = marker.exists()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    log = (tmp_path / "log.txt").read_text()
    assert stalled, f"the run never reached its second checkpoint:\n{log[-6000:]}"
    half_written = Path(marker.read_text())
    assert half_written.stat().st_size > 1_000_000 // 2  # killed with a partial checkpoint on disk

    # the first checkpoint is intact under its name, nothing partial is, and the pointer names it
    assert sorted(p.name for p in work.glob("*.pth")) == ["iter_2.pth"]
    assert half_written.name.startswith(".iter_4.pth.") and half_written.suffix == ".partial"
    checkpoint = load(work / "iter_2.pth")
    assert checkpoint["meta"]["iter"] == 2 and "optimizer" in checkpoint
    assert Path((work / "last_checkpoint").read_text().strip()) == work / "iter_2.pth"

    # --resume (latest) carries on from iteration 2, finishes, and clears the partial file
    output = run([str(TRAIN), str(config), "--work-dir", str(work), "--resume"], cwd=tmp_path)
    assert "resumed epoch: 0, iter: 2" in output
    assert f"taking over the stale lock of pid {proc.pid} on host" in output  # the killed run's work-dir lock
    left = sorted(p.name for p in work.iterdir() if p.name.endswith((".pth", ".partial")))
    assert left == ["best_coco_bbox_mAP_iter_6.pth", "iter_6.pth"]  # the base config keeps the best too
    assert load(work / "iter_6.pth")["meta"]["iter"] == 6


@pytest.mark.slow
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    """6 iterations straight vs resumed from iteration 3: same weights, optimizer, scheduler and RNG.

    The model samples each image's task and instruction from the torch RNG, and a RandomFlip (with
    num_workers=0, so in the main process) draws from numpy's; validation runs at the checkpoint and
    finds a new best score, so mmengine saves iteration 3 again from inside validation."""
    config = write_config(
        tmp_path,
        """
train_cfg = dict(max_iters=6, val_interval=3)
default_hooks = dict(checkpoint=dict(interval=3, max_keep_ckpts=2))
train_dataloader = dict(
    batch_size=2,
    dataset=dict(
        pipeline=[
            dict(type="LoadImageRGB"),
            dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=False),
            dict(type="LoadInstanceAttributes"),
            dict(type="RandomFlip", prob=0.5),
            dict(type="Pad", size=(128, 128), pad_val=dict(img=(114, 114, 114))),
            dict(
                type="PackDetInputs",
                meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "pad_shape", "scale_factor",
                           "flip", "flip_direction", "instance_attributes"),
            ),
        ]
    ),
)
""",
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run([str(TRAIN), str(config), "--work-dir", str(straight)], cwd=tmp_path)
    output = run(
        [str(TRAIN), str(config), "--work-dir", str(resumed), "--resume", str(straight / "iter_3.pth")],
        cwd=tmp_path,
    )
    assert "resumed epoch: 0, iter: 3" in output
    assert (straight / "best_coco_bbox_mAP_iter_3.pth").is_file()  # iter_3.pth was saved again in validation
    a, b = load(straight / "iter_6.pth"), load(resumed / "iter_6.pth")
    assert a["meta"]["iter"] == b["meta"]["iter"] == 6
    start = load(straight / "iter_3.pth")["state_dict"]
    assert any(not torch.equal(start[k], a["state_dict"][k]) for k in start)  # iterations 4-6 trained
    for key in ("state_dict", "optimizer", "param_schedulers"):
        assert_same(a[key], b[key], key)
    assert_same(a["meta"]["rng_states"], b["meta"]["rng_states"], "rng_states")


@pytest.mark.slow
def test_checkpoints_leave_out_frozen_pretrained_weights(tmp_path):
    """A frozen packaged text encoder (MiniLM) is not saved: resume and prediction reload it from its
    files, and resuming still matches the uninterrupted run; a model that would not reload it refuses."""
    config = write_config(
        tmp_path,
        """
model = dict(image_tokenizer=dict(text_encoder=dict(_delete_=True, path="minilm", frozen=True)))
train_cfg = dict(max_iters=4, val_interval=100)
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=-1, save_pretrained_frozen=False))
""",
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run([str(TRAIN), str(config), "--work-dir", str(straight)], cwd=tmp_path)
    run(
        [str(TRAIN), str(config), "--work-dir", str(resumed), "--resume", str(straight / "iter_2.pth")],
        tmp_path,
    )
    a, b = load(straight / "iter_4.pth"), load(resumed / "iter_4.pth")
    omitted = a["meta"][OMITTED_KEYS]
    assert omitted and all(key.startswith("image_tokenizer.text_encoder.model.") for key in omitted)
    assert not set(omitted) & a["state_dict"].keys()
    assert any(key.startswith("image_tokenizer.llm_proj") for key in a["state_dict"])  # trained parts kept
    for key in ("state_dict", "optimizer"):
        assert_same(a[key], b[key], key)

    predictor = Predictor.from_checkpoint(config, straight / "iter_4.pth")
    state = predictor.model.state_dict()
    assert_same({key: state[key] for key in a["state_dict"]}, a["state_dict"])
    reference = TextEncoder(path="minilm").state_dict()
    assert torch.equal(state[omitted[0]], reference[omitted[0].removeprefix("image_tokenizer.text_encoder.")])

    random_text = write_config(tmp_path, "", name="random_text.py")  # the tiny config's random encoder
    with pytest.raises(KeyError, match="does not load from pretrained files"):
        Predictor.from_checkpoint(random_text, straight / "iter_4.pth")
