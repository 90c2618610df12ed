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

import argparse
import json
from pathlib import Path


def read_curve(work_dir: Path, metric: str) -> list[tuple[float, float, int]]:
    """(training minutes, metric, iteration) of every validation in the run's latest scalars file."""
    logs = sorted(work_dir.glob("*/vis_data/scalars.json"))
    if not logs:
        raise FileNotFoundError(f"no */vis_data/scalars.json under {work_dir}: not a finished mmengine run?")
    curve = []
    for line in logs[-1].read_text().splitlines():
        record = json.loads(line)
        if "train_minutes" in record and metric in record:
            curve.append((float(record["train_minutes"]), float(record[metric]), int(record["step"])))
    if not curve:
        raise ValueError(
            f"{logs[-1]} has no validation with train_minutes and {metric}: run with --time-budget"
        )
    return curve


def format_table(curves: dict[str, list[tuple[float, float, int]]], metric: str) -> str:
    """One row per run; the i-th validation of every run in column i, as ``value (minutes, iteration)``."""
    width = max(len(curve) for curve in curves.values())
    lines = [
        "| run | " + " | ".join(f"validation {i + 1}" for i in range(width)) + " |",
        "|---|" + "---:|" * width,
    ]
    for name, curve in curves.items():
        cells = [f"{value:.3f} ({minutes:.1f} min, it {step})" for minutes, value, step in curve]
        lines.append(f"| {name} | " + " | ".join(cells + [""] * (width - len(cells))) + " |")
    return f"{metric} after N minutes of training:\n\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work_dirs", nargs="+", type=Path)
    parser.add_argument("--metric", default="coco/bbox_mAP")
    parser.add_argument("--out", type=Path, help="also write the curves as JSON")
    args = parser.parse_args()
    curves = {str(work_dir): read_curve(work_dir, args.metric) for work_dir in args.work_dirs}
    print(format_table(curves, args.metric))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rows = {
            name: [dict(train_minutes=m, value=v, iteration=s) for m, v, s in curve]
            for name, curve in curves.items()
        }
        args.out.write_text(json.dumps(dict(metric=args.metric, curves=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()
