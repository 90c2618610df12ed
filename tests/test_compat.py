"""visionllm.compat: what breaks without it, and that each fix does exactly its job."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from tests.conftest import ToyModel, toy_train_dataloader
from visionllm.compat import mmcv_has_compiled_ops

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter from the repository root."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=240, check=False
    )


def test_stack_imports_after_visionllm():
    result = run_python("import visionllm, torchvision, timm, transformers, mmengine, mmdet.models")
    assert result.returncode == 0, result.stderr[-3000:]


def test_torchvision_import_fails_without_the_fix():
    """Proves the fix is needed: a bare ``import torchvision`` dies on this machine's CUDA wheel."""
    result = run_python("import torchvision")
    if result.returncode == 0:
        pytest.skip("this torchvision's compiled ops load into this torch; nothing to fix")
    assert "torchvision::nms does not exist" in result.stderr, result.stderr[-3000:]


@pytest.mark.skipif(mmcv_has_compiled_ops(), reason="the stand-in exists only under mmcv-lite")
def test_mmcv_lite_op_without_pure_version_raises_clearly():
    from mmcv.ops import box_iou_rotated

    with pytest.raises(RuntimeError, match="mmcv op 'box_iou_rotated' needs the compiled mmcv"):
        box_iou_rotated(torch.rand(2, 5), torch.rand(3, 5))


# ---------------------------------------------------------------- checkpoints with weights_only=True


class Custom:
    """A class outside the allow-list."""


class GetattrOnAnotherAttribute:
    """Pickles as ``getattr(HistoryBuffer, '__init__')``: getattr beyond statistics methods."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, "__init__")


def test_mmengine_style_checkpoint_loads_with_weights_only(tmp_path):
    losses = HistoryBuffer()
    for value in (0.5, 0.25, 0.75):
        losses.update(value)
    checkpoint = {
        "meta": {"epoch": 1, "iter": 3, "seed": np.int64(42), "lr": np.float32(0.1), "flag": np.bool_(True)},
        "state_dict": {"weight": torch.arange(4.0)},
        "message_hub": {
            "log_scalars": {"train/loss": losses},
            "runtime_info": {"anchors": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.arange(3)},
        },
    }
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    loaded = torch.load(tmp_path / "ckpt.pth", weights_only=True)

    history = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(history, HistoryBuffer)
    assert history.mean() == pytest.approx(0.5) and history.current() == 0.75 and history.max() == 0.75
    assert loaded["meta"]["seed"] == 42 and isinstance(loaded["meta"]["seed"], np.int64)
    assert isinstance(loaded["meta"]["lr"], np.float32) and bool(loaded["meta"]["flag"]) is True
    np.testing.assert_array_equal(
        loaded["message_hub"]["runtime_info"]["anchors"], np.arange(6).reshape(2, 3)
    )
    assert torch.equal(loaded["state_dict"]["weight"], torch.arange(4.0))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(Custom(), "Unsupported global: GLOBAL .*Custom"), (GetattrOnAnotherAttribute(), "__init__")],
    ids=["custom-class", "getattr"],
)
def test_objects_outside_the_allow_list_are_refused(tmp_path, payload, reason):
    torch.save({"meta": {"x": payload}}, tmp_path / "evil.pth")
    with pytest.raises(pickle.UnpicklingError, match=reason):
        torch.load(tmp_path / "evil.pth", weights_only=True)


def test_runner_checkpoint_resumes(tmp_path):
    """A real mmengine Runner saves after 2 iterations; a new Runner resumes from it (weights_only load)."""
    from mmengine.runner import Runner

    def make_runner(work_dir: Path, max_iters: int, **kwargs) -> Runner:
        return Runner(
            model=ToyModel(),
            work_dir=str(work_dir),
            train_dataloader=toy_train_dataloader(8),
            optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9)),
            param_scheduler=dict(type="MultiStepLR", milestones=[1], by_epoch=False),
            train_cfg=dict(by_epoch=False, max_iters=max_iters),
            default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False)),
            randomness=dict(seed=0),
            **kwargs,
        )

    first = make_runner(tmp_path / "first", max_iters=2)
    first.train()
    checkpoint = tmp_path / "first" / "iter_2.pth"
    saved_weight = first.model.linear.weight.detach().clone()
    saved_momentum = first.optim_wrapper.optimizer.state_dict()["state"][0]["momentum_buffer"].clone()

    second = make_runner(tmp_path / "second", max_iters=2, resume=True, load_from=str(checkpoint))
    second.load_or_resume()
    assert second.iter == 2
    assert torch.equal(second.model.linear.weight, saved_weight)
    assert torch.equal(
        second.optim_wrapper.optimizer.state_dict()["state"][0]["momentum_buffer"], saved_momentum
    )
    assert len(second.message_hub.get_scalar("train/loss").data[0]) == 2  # both iterations' losses restored
    assert second.load_checkpoint(str(checkpoint))["meta"]["iter"] == 2
