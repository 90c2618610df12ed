"""Every task's validation metric of time-budgeted runs, one column per run: COCO bbox / segm mAP and the
question tasks' own metrics (``TaskExamplesMetric``), at each validation (``train_minutes``)::

    python tools/train.py configs/visionllm_effnet_generalist.py --work-dir work_dirs/egen20 \\
        --time-budget 20 --val-every 10
    python tools/train.py configs/visionllm_effnet_detseg_1k.py --work-dir work_dirs/edetseg20 \\
        --time-budget 20 --val-every 10
    python bench/task_table.py work_dirs/egen20 work_dirs/edetseg20 --out bench/results/generalist.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import argument_parser, table, write_json
from map_curve import validations

#: (metric key in scalars.json, label), in the table's order
METRICS = (
    ("coco/bbox_mAP", "detection bbox mAP"),
    ("coco/segm_mAP", "segmentation mAP"),
    ("tasks/region_classify/accuracy", "region classification accuracy"),
    ("tasks/region_describe/accuracy", "region description (attribute phrase) exact match"),
    ("tasks/region_compare/accuracy", "region comparison accuracy"),
    ("tasks/region_compare/accuracy_larger", "- is the first larger (yes / no)"),
    ("tasks/region_compare/accuracy_left", "- which is further left (first / second)"),
    ("tasks/region_compare/accuracy_color", "- the same colour (yes / no)"),
    ("tasks/point_classify/accuracy", "point classification accuracy"),
    ("tasks/point_segment/mask_iou", "point segmentation mask IoU"),
    ("tasks/detect_like/AP", "visual-prompt detection AP"),
    ("tasks/detect_like/named_AP", "the same classes asked by name, AP"),
    ("tasks/detect_like/ratio", "visual prompt / name AP"),
    ("tasks/caption/CIDEr", "caption CIDEr"),
    ("tasks/count/accuracy", "counting accuracy"),
    ("tasks/color_question/accuracy", "colour question accuracy"),
)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("work_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = {str(work_dir): validations(work_dir) for work_dir in args.work_dirs}
    columns = [(name, record) for name, records in runs.items() for record in records]
    header = " | ".join(
        ["metric", *(f"{Path(n).name}, {r['train_minutes']:.0f} min (it {r['step']})" for n, r in columns)]
    )
    rows = [
        [label, *(f"{record[key]:.3f}" if key in record else "-" for _, record in columns)]
        for key, label in METRICS
        if any(key in record for _, record in columns)
    ]
    print(table(header, "", rows, align="l" + "r" * len(columns)))
    if args.out:
        write_json(args.out, runs)


if __name__ == "__main__":
    main()
