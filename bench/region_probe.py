"""Region classification on COCO128 from ground-truth boxes: VisionLLM answering "What is <region>?" in
words against a linear probe on the same RoI-pooled features, for the same minutes, side by side.

* VisionLLM: ``tools/train.py configs/visionllm_effnet_coco128_regions.py --time-budget MIN`` (the
  ImageNet EfficientNet-Lite0 config; region classification and detection), scored by its
  ``TaskExamplesMetric`` on every instance of the 26 held-out images.
* Probe: the same frozen ImageNet backbone and input pipeline, each box RoIAligned (``roi_align``, the same
  op and size as the model's ``PromptEncoder``) on the same three levels, then one linear layer over the 71
  classes (AdamW, cross-entropy, full batches) on the 102 training images' boxes, for the same minutes or
  until its training loss stops falling (reported: its steps and seconds).

Both run at once, one torch thread each (same conditions; the machine's 2 cores), then one table::

    python datasets/split_coco.py ../shared/data/coco128/annotations/instances_train2017.json \\
        data/coco128_heldout --split datasets/splits/coco128_val26.json
    python bench/region_probe.py --minutes 20 --out bench/results/region_probe_coco128.json

``--cfg-options k=v ...`` changes the config for both (the model's options reach only the VisionLLM run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.dataset import Compose

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import argument_parser, table, write_json
from map_curve import read_curve

from visionllm.models.backbones import build_backbone
from visionllm.models.prompt_encoder import roi_align
from visionllm.registry import TRANSFORMS, register_all_modules

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "visionllm_effnet_coco128_regions.py"
METRIC = "tasks/region_classify/accuracy"


def region_features(cfg: Config, ann_file: str, roi_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, levels*C*S*S) RoI features of every non-crowd box of ``ann_file`` on the frozen backbone, and
    their labels (index into the file's categories), through the config's test pipeline."""
    register_all_modules()
    backbone = build_backbone(cfg.model.image_tokenizer.backbone).eval()
    mean = torch.tensor(cfg.model.data_preprocessor.mean).view(3, 1, 1)
    std = torch.tensor(cfg.model.data_preprocessor.std).view(3, 1, 1)
    pipeline = Compose([TRANSFORMS.build(step) for step in cfg.test_pipeline])
    coco = json.loads(Path(ann_file).read_text())
    label_of = {c["id"]: k for k, c in enumerate(coco["categories"])}
    boxes_of: dict[int, list] = {}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd", 0):
            boxes_of.setdefault(ann["image_id"], []).append(ann)
    features, labels = [], []
    prefix = Path(cfg.data_root) / "train2017"
    with torch.no_grad():
        for image in coco["images"]:
            anns = boxes_of.get(image["id"], [])
            if not anns:
                continue
            packed = pipeline(dict(img_path=str(prefix / image["file_name"]), img_id=image["id"]))
            pixels = packed["inputs"].float()  # RGB (LoadImageRGB), the config's channel order
            sx, sy = packed["data_samples"].metainfo["scale_factor"]
            maps = backbone(((pixels - mean) / std)[None])
            rois = torch.tensor(
                [[0, x * sx, y * sy, (x + w) * sx, (y + h) * sy] for x, y, w, h in (a["bbox"] for a in anns)]
            )
            width = pixels.shape[-1]
            pooled = [roi_align(level, rois, roi_size, level.shape[-1] / width) for level in maps]
            features.append(torch.cat([p.flatten(1) for p in pooled], 1))
            labels += [label_of[a["category_id"]] for a in anns]
    return torch.cat(features), torch.tensor(labels)


def train_probe(cfg: Config, split_dir: Path, minutes: float, roi_size: int) -> dict:
    """The linear probe: features once (frozen backbone), then AdamW on full batches until ``minutes``."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    train_x, train_y = region_features(cfg, str(split_dir / "instances_train.json"), roi_size)
    val_x, val_y = region_features(cfg, str(split_dir / "instances_val.json"), roi_size)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    probe = torch.nn.Linear(train_x.shape[1], num_classes)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=0.05)
    steps, curve, last_loss = 0, [], float("inf")
    while time.perf_counter() - start < 60 * minutes:
        loss = F.cross_entropy(probe(train_x), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % 200 == 0:
            with torch.no_grad():
                curve.append((steps, float((probe(val_x).argmax(1) == val_y).float().mean())))
            if last_loss - loss.item() < 1e-4:  # converged: the rest of the budget would change nothing
                break
            last_loss = loss.item()
    with torch.no_grad():
        accuracy = float((probe(val_x).argmax(1) == val_y).float().mean())
    seconds = time.perf_counter() - start
    return dict(
        accuracy=accuracy,
        steps=steps,
        seconds=seconds,
        train_boxes=len(train_y),
        val_boxes=len(val_y),
        curve=curve,
    )


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--split-dir", type=Path, default=REPO / "data" / "coco128_heldout")
    parser.add_argument("--work-dir", type=Path, default=REPO / "work_dirs" / "coco128_regions")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="K=V",
        help="override config keys (both runs read them)",
    )
    args = parser.parse_args()
    cfg = Config.fromfile(str(CONFIG))
    if args.cfg_options:
        parsed = argparse.Namespace()
        DictAction(option_strings=[], dest="options")(parser, parsed, args.cfg_options)
        cfg.merge_from_dict(parsed.options)
    cfg.data_root = str(REPO / cfg.data_root)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        str(REPO / "tools" / "train.py"),
        str(CONFIG),
        "--work-dir",
        str(args.work_dir),
    ]
    command += ["--time-budget", str(args.minutes), "--val-every", str(args.minutes / 2)]
    if args.cfg_options:
        command += ["--cfg-options", *args.cfg_options]
    model_run = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    probe = train_probe(cfg, args.split_dir, args.minutes, cfg.model.get("roi_size", 4))
    if model_run.wait() != 0:
        sys.exit(f"training failed:\n{model_run.stderr.read().decode()[-3000:]}")
    curve = read_curve(args.work_dir, METRIC)
    rows = [
        ["VisionLLM (EfficientNet-Lite0, answers in words)", f"{curve[-1][0]:.1f}", f"{curve[-1][1]:.3f}"],
        [
            "linear probe, same RoI features (frozen backbone)",
            f"{args.minutes:.1f}",
            f"{probe['accuracy']:.3f}",
        ],
    ]
    print(
        f"Region classification on COCO128's 26 held-out images ({probe['val_boxes']} ground-truth boxes):\n"
    )
    print(table("method | train minutes | accuracy", "", rows, align="lrr"))
    if args.out:
        write_json(
            args.out, dict(visionllm_curve=curve, probe=probe, minutes=args.minutes, config=str(CONFIG))
        )


if __name__ == "__main__":
    main()
