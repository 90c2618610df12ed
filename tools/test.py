"""Evaluate a checkpoint on a config's test set; optionally write COCO results and drawn predictions.

python tools/test.py CONFIG CHECKPOINT [--out results.json] [--show-dir D]
                     [--decode parallel|autoregressive|tokens] [--cfg-options k=v ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mmengine.runner import Runner

import visionllm  # noqa: F401  (platform fixes first)
from visionllm.cli import add_debug_flag, run_command
from visionllm.engine.launch import DictAction, load_config, prepare_synthetic_data, setup_distributed
from visionllm.fileio import check_checkpoint_file
from visionllm.models.visionllm import DECODE_MODES


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--work-dir")
    parser.add_argument("--out", help="write the predictions as a COCO results JSON (bbox, and segm if any)")
    parser.add_argument("--show-dir", help="draw predictions into this folder (inside the work dir)")
    parser.add_argument("--decode", choices=DECODE_MODES, help="decoder (default: config's)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v ...")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    check_checkpoint_file(args.checkpoint)
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    cfg.load_from = args.checkpoint
    if args.decode:
        cfg.model.decode_mode = args.decode
    if args.out:
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        # the COCO metric's annotation file gives the category ids (label indices without one)
        ann_file = next((e["ann_file"] for e in evaluators if e.get("ann_file")), None)
        cfg.test_evaluator = [*evaluators, dict(type="DumpCocoResults", out_file=args.out, ann_file=ann_file)]
    if args.show_dir:
        cfg.default_hooks.visualization.update(draw=True, test_out_dir=args.show_dir)
    cfg.train_dataloader, cfg.train_cfg, cfg.optim_wrapper, cfg.param_scheduler = None, None, None, None
    setup_distributed(cfg, args.launcher)
    prepare_synthetic_data(cfg)
    Runner.from_cfg(cfg).test()


if __name__ == "__main__":
    sys.exit(run_command(main, "tools/test.py"))
