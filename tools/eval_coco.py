"""Evaluate a COCO results file against its ground truth with pycocotools; print a markdown table.

python tools/eval_coco.py GT_JSON RESULTS_JSON [--iou-type bbox segm]
"""

from __future__ import annotations

import argparse
import sys

from visionllm.evaluation import evaluate_coco, format_stats_table
from visionllm.evaluation.coco_eval import IOU_TYPES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("gt_json", help="COCO annotation file (ground truth)")
    parser.add_argument("results_json", help="COCO results file: a list of detections")
    parser.add_argument(
        "--iou-type", nargs="+", choices=IOU_TYPES, default=list(IOU_TYPES), help="default: both"
    )
    args = parser.parse_args(argv)
    try:
        stats = evaluate_coco(args.gt_json, args.results_json, tuple(args.iou_type))
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    print(format_stats_table(stats))


if __name__ == "__main__":
    main()
