"""Evaluate a checkpoint on a config's test set; optionally write COCO results and drawn predictions.

python tools/test.py CONFIG CHECKPOINT [--out results.json] [--show-dir D]
                     [--decode parallel|autoregressive|tokens] [--cfg-options k=v ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import visionllm  # noqa: F401  (platform fixes first)
from visionllm.cli import add_debug_flag, run_command
from visionllm.engine.launch import DictAction, load_config, run_testing
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
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    if args.decode:
        cfg.model.decode_mode = args.decode
    if args.show_dir:
        cfg.default_hooks.visualization.update(draw=True, test_out_dir=args.show_dir)
    run_testing(cfg, args.checkpoint, args.launcher, args.out)


if __name__ == "__main__":
    sys.exit(run_command(main, "tools/test.py"))
