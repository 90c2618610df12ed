"""One run per work dir (visionllm/engine/workdir_lock.py) and a cleanup that spares live writers'
partial files (ResumableCheckpointHook.before_train)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.runner import Runner

from tests.conftest import ToyModel
from tests.tiny_runs import TRAIN, load, subprocess_env, write_config
from visionllm.engine.checkpoint import ResumableCheckpointHook
from visionllm.engine.workdir_lock import LOCK_NAME, lock_work_dir


def try_lock(work_dir: Path, result) -> None:
    """In a child process: take the lock, and send what happened through the ``result`` pipe."""
    try:
        with lock_work_dir(work_dir):
            result.send("acquired")
    except SystemExit as refusal:
        result.send(f"refused: {refusal}")


def lock_in_another_process(work_dir: Path) -> str:
    """What :func:`try_lock` reports from a forked process (no fresh interpreter: a few milliseconds)."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=try_lock, args=(work_dir, send))
    child.start()
    child.join(30)
    return receive.recv()


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    work = tmp_path / "work"
    with lock_work_dir(work) as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        refusal = lock_in_another_process(work)
        assert refusal.startswith(f"refused: work dir {work} is in use by pid {os.getpid()} on host ")
    assert not (work / LOCK_NAME).exists()  # released and removed on leaving the block
    assert lock_in_another_process(work) == "acquired"


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    pid = dead_pid()
    stale = dict(pid=pid, host=socket.gethostname(), started=time.time() - 60, command="tools/train.py x")
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    logger = MMLogger.get_current_instance()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        with lock_work_dir(tmp_path) as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"stale lock of pid {pid} on host" in warnings[0]


def test_a_lock_recorded_by_another_host_is_refused_with_how_to_remove_it(tmp_path):
    other = dict(pid=1234, host="other-node", started=time.time(), command="tools/train.py x")
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(SystemExit, match=f"pid 1234 on host other-node.*delete {tmp_path / LOCK_NAME}"):
        with lock_work_dir(tmp_path):
            pass


def test_cleanup_removes_only_partial_files_whose_writer_has_ended(tmp_path):
    """before_train deletes a killed run's partial checkpoint, keeps one a live process is writing."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live_partial = tmp_path / f".iter_4.pth.{live.pid}.partial"
        dead_partial = tmp_path / f".iter_2.pth.{dead_pid()}.partial"
        own_partial = tmp_path / f".iter_6.pth.{os.getpid()}.partial"  # a crashed run whose pid we reuse
        unrelated = tmp_path / ".notes.partial"  # not named by atomic_write
        for path in (live_partial, dead_partial, own_partial, unrelated):
            path.write_bytes(b"half a checkpoint")
        dataset = [dict(inputs=torch.ones(2), targets=torch.ones(1))] * 2
        runner = Runner(
            model=ToyModel(),
            work_dir=str(tmp_path),
            train_dataloader=dict(
                dataset=dataset,
                sampler=dict(type="DefaultSampler"),
                batch_size=2,
                collate_fn=dict(type="default_collate"),
            ),
            optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
            train_cfg=dict(by_epoch=False, max_iters=1),
            default_hooks=dict(checkpoint=ResumableCheckpointHook(by_epoch=False, interval=10)),
        )
        runner.call_hook("before_train")
        assert live_partial.exists() and unrelated.exists()
        assert not dead_partial.exists() and not own_partial.exists()
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow
def test_a_second_train_run_on_a_busy_work_dir_is_refused_and_the_first_finishes_intact(tmp_path):
    """The first run pauses before its second iteration (its first checkpoint saved); a second
    tools/train.py on its work dir stops at once, naming it; the first then finishes on its own."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    config = write_config(
        tmp_path,
        "train_cfg = dict(max_iters=2, val_interval=100)\n"
        "default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))\n"
        f"pause = dict(type='PauseAtIterHook', at=1, ready='{ready}', go='{go}')\n"
        "custom_hooks = [*_base_.custom_hooks, pause]\n",
        test_components=True,
    )
    work = tmp_path / "work"
    command = [sys.executable, str(TRAIN), str(config), "--work-dir", str(work)]
    with open(tmp_path / "first.txt", "w") as log:
        first = subprocess.Popen(
            command, cwd=tmp_path, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 240
            while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ready.exists(), (tmp_path / "first.txt").read_text()[-6000:]

            start = time.monotonic()
            second = subprocess.run(
                command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120
            )
            seconds = time.monotonic() - start
            go.touch()
            assert first.wait(timeout=240) == 0, (tmp_path / "first.txt").read_text()[-6000:]
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()

    assert second.returncode != 0
    assert f"work dir {work} is in use by pid {first.pid} on host {socket.gethostname()}" in second.stderr
    assert "Traceback" not in second.stderr
    assert seconds < 60  # the interpreter's imports, not a model build or any training

    # the first run's checkpoints and logs are its own: one log folder, one run's scalars
    assert [load(work / f"iter_{i}.pth")["meta"]["iter"] for i in (1, 2)] == [1, 2]
    assert Path((work / "last_checkpoint").read_text().strip()) == work / "iter_2.pth"
    (log_dir,) = [p for p in work.iterdir() if re.fullmatch(r"\d{8}_\d{6}", p.name)]
    scalars = [json.loads(line) for line in (log_dir / "vis_data" / "scalars.json").read_text().splitlines()]
    train_iters = [entry["iter"] for entry in scalars if "loss" in entry]
    assert train_iters and train_iters == sorted(set(train_iters))  # each iteration once: one run wrote it
    assert len([entry for entry in scalars if "coco/bbox_mAP" in entry]) == 1  # its one validation
    assert not (work / LOCK_NAME).exists()
