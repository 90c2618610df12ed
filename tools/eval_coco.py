"""Evaluate a COCO results file against its ground truth with pycocotools; print a markdown table.

python tools/eval_coco.py GT_JSON RESULTS_JSON [--iou-type bbox segm]
"""

from __future__ import annotations

import argparse
import sys

from visionllm.cli import add_debug_flag, run_command
from visionllm.evaluation import evaluate_coco, format_stats_table
from visionllm.evaluation.coco_eval import IOU_TYPES


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("gt_json", help="COCO annotation file (ground truth)")
    parser.add_argument("results_json", help="COCO results file: a list of detections")
    parser.add_argument(
        "--iou-type", nargs="+", choices=IOU_TYPES, default=list(IOU_TYPES), help="default: both"
    )
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    print(format_stats_table(evaluate_coco(args.gt_json, args.results_json, tuple(args.iou_type))))


if __name__ == "__main__":
    sys.exit(run_command(main, "tools/eval_coco.py"))
