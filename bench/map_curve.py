"""The metric-vs-training-minutes curves of time-budgeted runs, side by side, as a markdown table.

Reads each work dir's latest ``vis_data/scalars.json`` (written by mmengine's LocalVisBackend), where
``tools/train.py --time-budget MIN --val-every MIN`` logs every validation's metrics with the training
minutes before it (``train_minutes``; validation time excluded)::

    python tools/train.py configs/visionllm_tiny_coco128.py --work-dir work_dirs/coco128_tiny \\
        --time-budget 20 --val-every 5
    python bench/map_curve.py work_dirs/coco128_tiny work_dirs/coco128_small --out bench/results/coco128.json

(``step`` is the iteration with the runtime config's ``log_metric_by_epoch=False``.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import argument_parser, table, write_json


def validations(work_dir: Path) -> list[dict]:
    """Every validation record (with ``train_minutes``) of the run's latest scalars file."""
    logs = sorted(work_dir.glob("*/vis_data/scalars.json"))
    if not logs:
        raise FileNotFoundError(f"no */vis_data/scalars.json under {work_dir}: not a finished mmengine run?")
    records = [json.loads(line) for line in logs[-1].read_text().splitlines()]
    return [record for record in records if "train_minutes" in record]


def read_curve(work_dir: Path, metric: str) -> list[tuple[float, float, int]]:
    """(training minutes, metric, iteration) of every validation in the run's latest scalars file."""
    curve = [
        (float(record["train_minutes"]), float(record[metric]), int(record["step"]))
        for record in validations(work_dir)
        if metric in record
    ]
    if not curve:
        raise ValueError(
            f"{work_dir} has no validation with train_minutes and {metric}: run with --time-budget"
        )
    return curve


def format_table(curves: dict[str, list[tuple[float, float, int]]], metric: str) -> str:
    """One row per run; the i-th validation of every run in column i, as ``value (minutes, iteration)``."""
    width = max(len(curve) for curve in curves.values())
    rows = []
    for name, curve in curves.items():
        cells = [f"{value:.3f} ({minutes:.1f} min, it {step})" for minutes, value, step in curve]
        rows.append([name, *cells, *[""] * (width - len(cells))])
    header = " | ".join(["run", *(f"validation {i + 1}" for i in range(width))])
    return f"{metric} after N minutes of training:\n\n" + table(header, "", rows, align="l" + "r" * width)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("work_dirs", nargs="+", type=Path)
    parser.add_argument("--metric", default="coco/bbox_mAP")
    parser.add_argument("--out", type=Path, help="also write the curves as JSON")
    args = parser.parse_args()
    curves = {str(work_dir): read_curve(work_dir, args.metric) for work_dir in args.work_dirs}
    print(format_table(curves, args.metric))
    if args.out:
        rows = {
            name: [dict(train_minutes=m, value=v, iteration=s) for m, v, s in curve]
            for name, curve in curves.items()
        }
        write_json(args.out, dict(metric=args.metric, curves=rows))


if __name__ == "__main__":
    main()
