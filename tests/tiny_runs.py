"""Helpers for tests that train the tiny model through ``tools/train.py`` in subprocesses, and the
test-only components those runs import (``custom_imports``).

The config inherits ``configs/visionllm_tiny_overfit16.py`` shrunk to 4 synthetic images and 4 slots;
the data and work dirs land in the test's ``tmp_path`` (the subprocess's working directory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook

from tests.conftest import REPO
from visionllm.registry import HOOKS, METRICS

TRAIN = REPO / "tools" / "train.py"
TINY_CONFIG = f"""
_base_ = ["{REPO}/configs/visionllm_tiny_overfit16.py"]
synthetic = dict(num_images=4)
model = dict(num_slots=4)
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(vis_backends=vis_backends)
val_evaluator = dict(metric=["bbox"])
test_evaluator = val_evaluator
default_hooks = dict(logger=dict(interval=1))
"""


def write_config(directory: Path, extra: str, name: str = "tiny.py", test_components: bool = False) -> Path:
    """The tiny config plus ``extra`` (Python config lines) as ``directory/name``; ``test_components``
    adds this module to ``custom_imports`` (for the test-only hook and metric below)."""
    text = TINY_CONFIG + extra
    if test_components:
        runtime = Config.fromfile(REPO / "configs/_base_/default_runtime.py", import_custom_modules=False)
        imports = [*runtime.custom_imports["imports"], __name__]
        text += f"\ncustom_imports = dict(imports={imports!r}, allow_failed_imports=False)\n"
    path = directory / name
    path.write_text(text)
    return path


def subprocess_env() -> dict[str, str]:
    """One thread per process: runs compare bit-for-bit, and two ranks share the 2 cores without
    oversubscription."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run(args: list[str], cwd: Path, timeout: float = 240) -> str:
    """Run ``args`` (``sys.executable`` is prepended) in ``cwd``; fail with the output's tail unless it
    exits 0. Returns the combined output."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout[-6000:]}"
    return proc.stdout


def load(path: Path) -> dict:
    """A checkpoint, loaded the strict way (``weights_only``: tensors and allow-listed classes only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same(a, b, path: str = "") -> None:
    """Nested dicts/lists of tensors, arrays and plain values are equal (tensors to 1e-7)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=lambda m: f"{path}: {m}")
    else:
        assert (a == b).all() if hasattr(a, "all") else a == b, path


@HOOKS.register_module()
class ReseedEveryIterHook(Hook):
    """Test-only: seeds torch before every training iteration.

    The model draws each batch's tasks, instructions (and dropout masks) from the torch RNG, so two
    process layouts of one global batch draw differently; with one image per process and iteration and
    this hook, every image draws from the same state in any layout."""

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        torch.manual_seed(0)


@METRICS.register_module()
class RecordImageIds(BaseMetric):
    """Test-only: writes the image ids that evaluation scored (after mmengine gathers every rank's
    results) to ``out_file`` as a JSON list."""

    default_prefix = "ids"

    def __init__(self, out_file: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file

    def process(self, data_batch, data_samples) -> None:
        self.results.extend(sample["img_id"] for sample in data_samples)

    def compute_metrics(self, results: list) -> dict:
        Path(self.out_file).write_text(json.dumps(results))
        return {"images": len(results)}


@HOOKS.register_module()
class PauseAtIterHook(Hook):
    """Test-only: before training iteration ``at`` (0-based), creates ``ready`` and waits until ``go``
    exists (at most ``timeout`` seconds), so a test can act while the run is mid-training."""

    def __init__(self, at: int, ready: str, go: str, timeout: float = 300) -> None:
        self.at, self.ready, self.go, self.timeout = at, Path(ready), Path(go), timeout

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter != self.at:
            return
        self.ready.touch()
        deadline = time.monotonic() + self.timeout
        while not self.go.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
