"""Fine-tune on your own data: bbox mAP against training minutes, then the held-out test split's score.

Runs ``visionllm train --data DATA --time-budget MIN --val-every MIN`` (the same command a user runs),
evaluates the last checkpoint with ``visionllm test --data DATA`` (its test split, else val), and prints
the curve in the README's format::

    python bench/own_data_curve.py ../shared/data/bccd --model effnet --image-size 256 \\
        --minutes 20 --val-every 5 --out bench/results/bccd_effnet.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import argument_parser, write_json
from map_curve import format_table, read_curve

from visionllm.cli import main as visionllm


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("data", help="a COCO JSON, COCO folder or Pascal VOC folder")
    parser.add_argument("--model", default="effnet")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--val-every", type=float, default=5.0)
    parser.add_argument("--work-dir", type=Path, help="default: work_dirs/<data name>_<model>_curve")
    parser.add_argument("--skip-training", action="store_true", help="only read and test an existing run")
    parser.add_argument("--out", type=Path, help="also write the curve and the test score as JSON")
    args = parser.parse_args()
    work_dir = args.work_dir or Path("work_dirs") / f"{Path(args.data).stem}_{args.model}_curve"
    if not args.skip_training:
        command = ["train", "--data", args.data, "--model", args.model, "--work-dir", str(work_dir)]
        command += ["--time-budget", str(args.minutes), "--val-every", str(args.val_every)]
        command += ["--image-size", str(args.image_size)] if args.image_size else []
        if visionllm(command) != 0:
            sys.exit("training failed")
    checkpoint = work_dir / Path((work_dir / "last_checkpoint").read_text().strip()).name
    results = work_dir / "test_results.json"
    if visionllm(["test", "--checkpoint", str(checkpoint), "--data", args.data, "--out", str(results)]) != 0:
        sys.exit("testing failed")
    metrics = json.loads((work_dir / "test_metrics.json").read_text())["metrics"]
    test_scores = {key.split("/")[-1]: value for key, value in metrics.items() if "bbox_mAP" in key}
    curve = read_curve(work_dir, "coco/bbox_mAP")
    print(format_table({f"{Path(args.data).name} {args.model}": curve}, "coco/bbox_mAP"))
    print(f"\ntest split, {checkpoint.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in test_scores.items()))
    if args.out:
        write_json(
            args.out,
            dict(
                data=str(args.data),
                model=args.model,
                image_size=args.image_size,
                curve=[dict(train_minutes=m, bbox_mAP=v, iteration=s) for m, v, s in curve],
                test=test_scores,
                checkpoint=str(checkpoint),
            ),
        )


if __name__ == "__main__":
    main()
