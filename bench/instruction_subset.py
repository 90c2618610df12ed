"""Instruction-customised detection: does asking for a subset of classes beat asking for all of them?

For a trained checkpoint and a COCO ground truth, runs detection on every image with several requests
and scores each against the ground truth restricted to the asked classes, at IoU 0.5 and a score
threshold (greedy matching per class, highest score first):

* ``all classes, filtered``: the model's full class list, then only the asked classes are kept — the
  baseline a closed-set detector gives;
* ``subset``: the user's instruction naming only the asked classes (``--classes``, default person, dog);
* ``subset, reordered``: the same classes in reverse order;
* ``subset, paraphrased``: the same classes read through a random training template per image (the
  wording the model sees changes; ``<ck>`` bindings stay);
* ``absent class``: per image, the most frequent dataset class *not* in that image, asked alone —
  every detection is false;
* ``absent class, all classes filtered``: the same class's detections when all classes are asked.

Precision counts a detection of an asked class that matches no ground-truth object of that class as
false (a cat labelled "dog" because only "dog" was asked counts against it). A score threshold favours
whichever request spreads its scores less (a slot asked for two classes puts all its probability on
them, one asked for 80 spreads it), so each row also gives AP50 over the asked classes: pycocotools'
average precision at IoU 0.5 over every detection, whatever its score, which compares the requests
without a threshold. Prints a markdown table and writes JSON::

    python bench/instruction_subset.py configs/visionllm_small_coco128.py work_dirs/small/iter_N.pth \\
        --data-root ../shared/data/coco128 --out bench/results/instruction_subset.json
"""

from __future__ import annotations

import platform
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import visionllm  # noqa: F401  (its platform fixes must run before mmdet / mmcv are imported)

# isort: split
import numpy as np
from mmengine.config import Config, DictAction
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionllm.apis import Prediction, Predictor
from visionllm.evaluation.results import coco_result
from visionllm.instructions import resolve_instruction
from visionllm.tasks.base import Request

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import argument_parser, dash, table, write_json

IOU_THRESHOLD = 0.5


def box_iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with an (N, 4) array of xyxy boxes."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def match_counts(
    detections: list[tuple[str, float, Sequence[float]]], truths: list[tuple[str, Sequence[float]]]
) -> tuple[int, int, int]:
    """(true positives, false positives, ground-truth objects) for one image: each detection, highest
    score first, takes the best unmatched ground-truth box of its class with IoU >= 0.5."""
    taken = [False] * len(truths)
    true_positives = 0
    for name, _, box in sorted(detections, key=lambda d: -d[1]):
        candidates = [i for i, (truth_name, _) in enumerate(truths) if truth_name == name and not taken[i]]
        if candidates:
            ious = box_iou(box, np.array([truths[i][1] for i in candidates], dtype=np.float64))
            best = int(ious.argmax())
            if ious[best] >= IOU_THRESHOLD:
                taken[candidates[best]] = True
                true_positives += 1
    return true_positives, len(detections) - true_positives, len(truths)


class GroundTruth:
    """A COCO annotation file as per-image lists of (class name, xyxy box), crowd regions left out."""

    def __init__(self, ann_file: Path, max_images: int | None = None) -> None:
        self.coco = COCO(str(ann_file))
        self.names = {c["id"]: c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}
        self.category_ids = {name: cat for cat, name in self.names.items()}
        self.image_ids = sorted(self.coco.getImgIds())[:max_images]
        self.counts = Counter(
            self.names[a["category_id"]] for a in self.coco.loadAnns(self.coco.getAnnIds(iscrowd=False))
        )

    def objects(self, image_id: int) -> list[tuple[str, list[float]]]:
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id], iscrowd=False))
        return [(self.names[a["category_id"]], _xyxy(a["bbox"])) for a in anns]

    def file_name(self, image_id: int) -> str:
        return self.coco.loadImgs([image_id])[0]["file_name"]

    def most_frequent_absent(self, image_id: int) -> str:
        """The image's absent class with the most annotations elsewhere (classes without any come last)."""
        present = {name for name, _ in self.objects(image_id)}
        absent = [name for name in self.names.values() if name not in present]
        if not absent:
            raise ValueError(f"image {image_id} shows every category: it has no absent class to ask for")
        return max(absent, key=lambda name: self.counts[name])


def asked_ap50(truth: GroundTruth, results: list[dict], asked: Sequence[str]) -> float | None:
    """pycocotools' AP at IoU 0.5 over the asked classes (mean over those with ground truth), from
    COCO-format ``results`` of any score; None when no asked class has ground truth."""
    evaluator = COCOeval(truth.coco, truth.coco.loadRes(results) if results else COCO(), "bbox")
    evaluator.params.catIds = [truth.category_ids[name] for name in asked]
    evaluator.params.imgIds = truth.image_ids
    evaluator.evaluate()
    evaluator.accumulate()
    # precision: (IoU thresholds, recall points, classes, area ranges, max detections); IoU 0.5, all
    # areas, 100 detections; -1 marks a class without ground truth
    precision = evaluator.eval["precision"][0, :, :, 0, -1]
    valid = precision[:, (precision > -1).all(0)]
    return float(valid.mean()) if valid.size else None


def _xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def detections(prediction: Prediction, asked: Sequence[str], score_thr: float) -> list:
    """The prediction's objects of the asked classes above the threshold, as (name, score, box)."""
    return [
        (o.class_name, o.score, o.box)
        for o in prediction.objects
        if o.class_name in asked and o.score >= score_thr
    ]


def run(
    predictor: Predictor,
    truth: GroundTruth,
    image_dir: Path,
    classes: Sequence[str],
    score_thr: float,
    seed: int,
) -> list[dict]:
    """Scores every scenario of the module docstring over all images; one row per scenario."""
    rng = np.random.default_rng(seed)
    all_classes = predictor.resolve(task="detect")
    asked_text = "Find all " + " and ".join(classes) + " in the image; give class and box"
    subset = predictor.resolve(asked_text)
    if subset.classes != list(classes):
        raise ValueError(f"the instruction {asked_text!r} resolved to {subset.classes}, not {list(classes)}")
    reordered = predictor.resolve(task="detect", classes=list(reversed(classes)))

    def paraphrased(_: int) -> Request:
        return resolve_instruction(
            task="detect", classes=list(classes), known_classes=predictor.model.class_names, rng=rng
        )

    absent = {image_id: [truth.most_frequent_absent(image_id)] for image_id in truth.image_ids}
    scenarios: list[tuple[str, Callable[[int], Request], Callable[[int], Sequence[str]]]] = [
        ("all classes, filtered", lambda _: all_classes, lambda _: classes),
        ("subset", lambda _: subset, lambda _: classes),
        ("subset, reordered", lambda _: reordered, lambda _: classes),
        ("subset, paraphrased", paraphrased, lambda _: classes),
        ("absent class", lambda i: predictor.resolve(task="detect", classes=absent[i]), lambda i: absent[i]),
        ("absent class, all classes filtered", lambda _: all_classes, lambda i: absent[i]),
    ]  # fmt: skip
    rows = []
    for name, request_of, asked_of in scenarios:
        totals = np.zeros(3, dtype=np.int64)
        results = []  # every detection of an asked class, for AP50
        for image_id in truth.image_ids:
            asked = asked_of(image_id)
            [prediction] = predictor.predict(str(image_dir / truth.file_name(image_id)), request_of(image_id))
            every_score = detections(prediction, asked, 0.0)
            found = [d for d in every_score if d[1] >= score_thr]
            totals += match_counts(found, [t for t in truth.objects(image_id) if t[0] in asked])
            results += [
                coco_result(image_id, box, score, category_id=truth.category_ids[name])
                for name, score, box in every_score
            ]
        true_positives, false_positives, num_truths = (int(v) for v in totals)
        num_found = true_positives + false_positives
        rows.append(
            dict(
                scenario=name,
                images=len(truth.image_ids),
                ground_truth=num_truths,
                detections=num_found,
                precision=true_positives / num_found if num_found else None,  # undefined: JSON null
                recall=true_positives / num_truths if num_truths else None,
                false_per_image=false_positives / len(truth.image_ids),
                # the absent-class rows ask a different class per image and have no ground truth
                ap50=asked_ap50(truth, results, classes) if not name.startswith("absent class") else None,
            )
        )
    return rows


def format_table(rows: list[dict]) -> str:
    undefined = ("precision", "recall", "ap50")  # None where nothing was asked, found or scored
    return table(
        "request | GT objects | detections | precision | recall | false detections / image | AP50",
        "{scenario} | {ground_truth} | {detections} | {precision} | {recall} | {false_per_image:.2f} "
        "| {ap50}",
        [{**r, **{key: dash(r.get(key), ".3f") for key in undefined}} for r in rows],
        align="lrrrrrr",
    )


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/coco128"))
    parser.add_argument("--ann-file", default="annotations/instances_train2017.json")
    parser.add_argument("--img-dir", default="train2017")
    parser.add_argument("--classes", nargs="+", default=["person", "dog"])
    parser.add_argument("--score-thr", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-images", type=int, help="only the first N images (by id)")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v ... (as tools/test.py)"
    )
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options or {})
    predictor = Predictor.from_checkpoint(cfg, args.checkpoint)
    truth = GroundTruth(args.data_root / args.ann_file, args.max_images)
    rows = run(predictor, truth, args.data_root / args.img_dir, args.classes, args.score_thr, args.seed)
    print(
        f"\nasked classes: {', '.join(args.classes)}; IoU {IOU_THRESHOLD}, score >= {args.score_thr} "
        "(AP50: every score)\n"
    )
    print(format_table(rows))
    if args.out:
        meta = dict(config=args.config, checkpoint=str(args.checkpoint), classes=args.classes,
                    score_thr=args.score_thr, max_images=args.max_images,
                    machine=platform.platform())  # fmt: skip
        write_json(args.out, dict(meta=meta, rows=rows))


if __name__ == "__main__":
    main()
