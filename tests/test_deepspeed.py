"""DeepSpeed ZeRO-2 through ``tools/train.py --deepspeed zero2`` (FlexibleRunner + DeepSpeedStrategy) in
one CPU process: the process group is gloo, set up from RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT as a
launcher would. The first DeepSpeed run on a machine JIT-builds DeepSpeed's CPU shared-memory comm op
(about 2 minutes on 2 cores, cached in ~/.cache/torch_extensions afterwards)."""

from __future__ import annotations

import socket

import pytest
import torch

from tests.tiny_runs import TRAIN, assert_same, run, write_config

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
