"""Train a VisionLLM config with mmengine's Runner.

python tools/train.py configs/visionllm_tiny_synthetic.py [--work-dir D] [--resume [CKPT]]
                      [--cfg-options train_cfg.max_iters=100 ...] [--launcher pytorch]
                      [--deepspeed zero2|zero3|zero3_offload|PRESET.py]
                      [--time-budget MIN [--val-every MIN]]
Several processes: torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch (docs/training.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import visionllm  # noqa: F401  (platform fixes first)
from visionllm.cli import add_debug_flag, run_command
from visionllm.engine.launch import DictAction, load_config, run_training, use_time_budget


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="mmengine Python config")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default work_dirs/<config name>)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="resume from CKPT, or from the latest checkpoint in the work dir when no CKPT is given",
    )
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v ...")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    parser.add_argument(
        "--deepspeed",
        metavar="PRESET",
        help="train with DeepSpeed ZeRO (FlexibleRunner): a preset name from configs/_base_/deepspeed/ or a "
        "config path; implies --launcher pytorch (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set by "
        "torchrun or the deepspeed launcher); --cfg-options apply after it",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="MIN",
        help="train for MIN minutes of wall-clock time (validation excluded) instead of max_iters; "
        "the learning rate warms up and decays over the budget",
    )
    parser.add_argument(
        "--val-every",
        type=float,
        metavar="MIN",
        help="with --time-budget: also validate every MIN minutes of training (a metric-vs-minutes curve)",
    )
    # the deepspeed launcher passes --local_rank (LOCAL_RANK in the environment says the same)
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    if args.val_every and not args.time_budget:
        raise ValueError("--val-every needs --time-budget")
    cfg = load_config(args.config, args.cfg_options, args.work_dir, deepspeed=args.deepspeed)
    if args.time_budget:
        use_time_budget(cfg, args.time_budget, args.val_every)
    if args.deepspeed:
        args.launcher = "pytorch"  # DeepSpeed always runs in a process group, of one process at least
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    run_training(cfg, args.launcher)


if __name__ == "__main__":
    sys.exit(run_command(main, "tools/train.py"))
