"""The main job on the embedded default, end to end (the README's first command runs it):

1. generate the synthetic shapes dataset (data/synthetic, deterministic);
2. train the tiny VisionLLM on it (configs/visionllm_tiny_synthetic.py; about 7 minutes on 2 CPU cores);
3. evaluate on the validation split and print the COCO tables (bbox and segm);
4. predict with a custom instruction on a validation image and draw it (work_dirs/.../demo_prediction.png).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmengine.runner import Runner

import visionllm  # noqa: F401  (platform fixes first)
from visionllm.engine.launch import DictAction, load_config, prepare_synthetic_data

METRIC_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")


def metrics_table(metrics: dict[str, float]) -> str:
    """COCO metrics of the Runner (``coco/bbox_mAP`` …) as a markdown table, one row per IoU type."""
    header = "| type | AP | AP50 | AP75 | APs | APm | APl |\n|---|---|---|---|---|---|---|"
    rows = []
    for iou_type in ("bbox", "segm"):
        values = [metrics.get(f"coco/{iou_type}_{name}") for name in METRIC_NAMES]
        if values[0] is not None:
            rows.append(f"| {iou_type} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join([header, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/visionllm_tiny_synthetic.py")
    parser.add_argument("--work-dir", default="work_dirs/demo")
    parser.add_argument("--instruction", default="Find all the stars and circles; give class and box")
    parser.add_argument(
        "--score-thr", type=float, default=0.3, help="draw objects scoring at least this (as predict)"
    )
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v ...")
    args = parser.parse_args()

    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    prepare_synthetic_data(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    table = metrics_table(metrics)
    print("\nCOCO evaluation on the synthetic validation split:\n" + table)
    Path(cfg.work_dir, "demo_metrics.json").write_text(json.dumps(metrics, indent=2))

    from visionllm.apis import Predictor, draw_predictions

    predictor = Predictor(runner.model, cfg)
    image = sorted(Path(cfg.data_root, "images").glob("*.png"))[-1]
    prediction = predictor.predict(str(image), args.instruction, score_thr=args.score_thr)[0]
    out_png = Path(cfg.work_dir, "demo_prediction.png")
    draw_predictions(str(image), prediction, out_png)
    print(
        f"\n'{args.instruction}' on {image}: {len(prediction.objects)} objects scoring >= {args.score_thr}"
        f" -> {out_png}"
    )


if __name__ == "__main__":
    main()
