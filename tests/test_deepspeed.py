"""DeepSpeed ZeRO-2 through ``tools/train.py --deepspeed zero2`` (FlexibleRunner + DeepSpeedStrategy) in
one CPU process: the process group is gloo, set up from RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT as a
launcher would. The first DeepSpeed run on a machine JIT-builds DeepSpeed's CPU shared-memory comm op
(about 2 minutes on 2 cores, cached in ~/.cache/torch_extensions afterwards)."""

from __future__ import annotations

import socket

import pytest
import torch

from tests.tiny_runs import TRAIN, assert_same, run, write_config
from visionllm.engine.deepspeed import cast_norm_statistics

CONFIG = """
train_cfg = dict(max_iters=4, val_interval=100)
train_dataloader = dict(batch_size=2)
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=2, save_best=None))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load(path) -> dict:
    """A DeepSpeed checkpoint file, loaded weights-only: besides tensors and mmengine's allow-listed
    classes (``visionllm.compat``) these files pickle DeepSpeed's config and bookkeeping objects."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    from mmengine.config import ConfigDict

    with torch.serialization.safe_globals([ConfigDict, LossScaler, ZeroStageEnum, fragment_address]):
        return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_zero2_in_one_cpu_process_trains_saves_and_resumes_exactly(tmp_path, monkeypatch):
    for key, value in dict(RANK=0, LOCAL_RANK=0, WORLD_SIZE=1, MASTER_ADDR="127.0.0.1").items():
        monkeypatch.setenv(key, str(value))
    config = str(write_config(tmp_path, CONFIG))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    run([str(TRAIN), config, "--work-dir", str(straight), "--deepspeed", "zero2"], cwd=tmp_path, timeout=400)
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    output = run(
        [str(TRAIN), config, "--work-dir", str(resumed), "--deepspeed", "zero2",
         "--resume", str(straight / "iter_2.pth")],
        cwd=tmp_path,
    )  # fmt: skip
    assert "resumed epoch: 0, iter: 2" in output

    # DeepSpeed checkpoints are directories: model states (with mmengine's meta) and ZeRO optimizer shards
    assert sorted(p.name for p in (straight / "iter_4.pth").iterdir()) == [
        "mp_rank_00_model_states.pt",
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ]
    at_2, a, b = (_load(d / "mp_rank_00_model_states.pt") for d in (straight / "iter_2.pth",
                  straight / "iter_4.pth", resumed / "iter_4.pth"))  # fmt: skip
    assert a["meta"]["iter"] == b["meta"]["iter"] == 4
    assert any(not torch.equal(at_2["module"][k], a["module"][k]) for k in a["module"])  # it trained
    assert_same(a["module"], b["module"], "module")
    assert_same(a["meta"]["rng_states"], b["meta"]["rng_states"], "rng_states")
    optimizer_a, optimizer_b = (
        _load(d / "iter_4.pth/zero_pp_rank_0_mp_rank_00_optim_states.pt")["optimizer_state_dict"]
        for d in (straight, resumed)
    )
    for key in ("base_optimizer_state", "single_partition_of_fp32_groups"):  # Adam moments, fp32 master
        assert_same(optimizer_a[key], optimizer_b[key], key)


def test_norm_statistics_follow_their_layer_and_other_buffers_keep_their_dtype():
    """What DeepSpeed leaves after its bf16 cast (parameters bf16, buffers fp32) is made trainable: a
    BatchNorm's statistics become bf16, an unrelated fp32 buffer (LLaMA's rotary frequencies) stays."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    model.register_buffer("inv_freq", torch.rand(4))
    for parameter in model.parameters():  # DeepSpeed 0.19's cast: parameters only
        parameter.data = parameter.data.to(torch.bfloat16)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 5, 5, dtype=torch.bfloat16))
    cast_norm_statistics(model)
    assert model[1].running_mean.dtype == model[1].running_var.dtype == torch.bfloat16
    assert model[1].num_batches_tracked.dtype == torch.long and model.inv_freq.dtype == torch.float32
    model(torch.randn(2, 3, 5, 5, dtype=torch.bfloat16))
    assert model[1].running_mean.abs().sum() > 0  # the statistics were updated in bf16


@pytest.mark.slow
def test_zero2_bf16_trains_a_batchnorm_backbone_on_cpu(tmp_path, monkeypatch):
    """ZeRO-2 with bf16 through ``--cfg-options strategy.bf16.enabled=True``: the slim ResNet's BatchNorm
    trains in bf16 and the optimizer keeps fp32 master weights."""
    for key, value in dict(RANK=0, LOCAL_RANK=0, WORLD_SIZE=1, MASTER_ADDR="127.0.0.1").items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    config = str(write_config(tmp_path, CONFIG))
    work_dir = tmp_path / "bf16"
    run(
        [str(TRAIN), config, "--work-dir", str(work_dir), "--deepspeed", "zero2",
         "--cfg-options", "train_cfg.max_iters=2", "strategy.bf16.enabled=True"],
        cwd=tmp_path,
        timeout=400,
    )  # fmt: skip
    module = _load(work_dir / "iter_2.pth/mp_rank_00_model_states.pt")["module"]
    statistics = [key for key in module if key.endswith("running_mean")]
    assert statistics and all(module[key].dtype == torch.bfloat16 for key in statistics)
    assert any(module[key].abs().sum() > 0 for key in statistics)  # BatchNorm ran in training mode
    weights = [value for key, value in module.items() if key.endswith(".weight")]
    assert weights and all(value.dtype == torch.bfloat16 for value in weights)
    optimizer = _load(work_dir / "iter_2.pth/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")[
        "optimizer_state_dict"
    ]
    master = optimizer["single_partition_of_fp32_groups"]
    assert master and all(group.dtype == torch.float32 for group in master)
