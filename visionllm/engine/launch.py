"""What tools/train.py and tools/test.py share: config loading, data preparation, process setup."""

from __future__ import annotations

from pathlib import Path

import torch
from mmengine.config import Config, DictAction  # noqa: F401  (DictAction re-exported for the tools)
from mmengine.dist import barrier, get_rank, init_dist

from visionllm.engine.deepspeed import use_deepspeed


def load_config(
    path: str, cfg_options: dict | None = None, work_dir: str | None = None, deepspeed: str | None = None
) -> Config:
    """Read an mmengine config, switch it to a DeepSpeed preset if asked (``use_deepspeed``), apply
    ``--cfg-options`` and choose the work dir (default work_dirs/<name>)."""
    cfg = Config.fromfile(path)
    if deepspeed:
        use_deepspeed(cfg, deepspeed)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(path).stem)
    return cfg


def prepare_synthetic_data(cfg: Config) -> None:
    """Generate the embedded synthetic dataset when the config asks for it and it is not on disk yet.

    In a distributed run rank 0 writes it while the other ranks wait (a barrier, when the process group
    exists already), so several nodes need it on a shared file system or generated beforehand.
    """
    spec = cfg.get("synthetic")
    if not spec:
        return
    out_dir = Path(spec["out_dir"])
    if get_rank() == 0 and not (out_dir / "annotations" / "instances_train.json").is_file():
        from visionllm.data.synthetic import generate_synthetic

        generate_synthetic(**spec)
    barrier()


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Select the launcher; on CPU-only torch start the gloo process group ourselves.

    mmengine's ``pytorch`` launcher calls ``torch.cuda.set_device``, which fails without CUDA; a process
    group that already exists is used as it is, so initialising gloo first sidesteps it.
    """
    cfg.launcher = launcher
    if launcher == "none":
        return
    if torch.cuda.is_available():
        cfg.env_cfg.setdefault("dist_cfg", {})["backend"] = "nccl"
        if not torch.distributed.is_initialized():  # now, so data preparation can wait on a barrier
            init_dist("pytorch", backend="nccl")
        return
    cfg.env_cfg.setdefault("dist_cfg", {})["backend"] = "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo")
    # DDP wraps CPU modules without device ids
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)


def use_time_budget(
    cfg: Config, minutes: float, val_every_minutes: float | None = None, time_schedule: bool = True
) -> None:
    """Make an iteration-based config train for ``minutes`` of wall-clock time (``TimeBudgetHook``):
    no iteration limit, no iteration-based validation, and (with ``time_schedule``) the learning-rate
    schedule stretched over the budget in place of the config's ``param_scheduler``."""
    cfg.train_cfg.max_iters = 10**9  # the hook ends training
    cfg.train_cfg.val_interval = 10**9
    if time_schedule:
        cfg.param_scheduler = None
    hook = dict(
        type="TimeBudgetHook",
        budget_minutes=minutes,
        val_every_minutes=val_every_minutes,
        time_schedule=time_schedule,
    )
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), hook]
