"""The ``visionllm`` command.

visionllm predict IMAGES... --config C --checkpoint K [--instruction "find all cups and knives"]
                  [--task detect --classes cup knife] [--phrase "the man in the red shirt"]
                  [--decode parallel|autoregressive|tokens] [--out-dir D] [--score-thr 0.3]

IMAGES are files and/or folders (their image files). Writes ``D/predictions.json`` (a COCO-style list:
``file_name``, ``image_id`` (the image's position in the input), ``category_name``, ``bbox`` xywh,
``score``, and RLE ``segmentation`` for segmentation requests) and ``D/<image stem>.png`` drawings,
and prints one line per image. ``tools/predict.py`` is the same command.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from visionllm.apis import Prediction, Predictor, draw_predictions, list_images
from visionllm.evaluation.results import prediction_to_coco
from visionllm.fileio import write_json_atomic
from visionllm.models.visionllm import DECODE_MODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionllm", description="VisionLLM command-line tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict",
        help="predict on images with a checkpoint and draw the results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("images", nargs="+", help="image files and/or folders of images")
    predict.add_argument("--config", required=True, help="the model's mmengine config")
    predict.add_argument("--checkpoint", required=True, help="an mmengine checkpoint of that model")
    predict.add_argument("--instruction", help='free-form, e.g. "segment every dog"')
    predict.add_argument("--task", help="detect, segment or ground (overrides the instruction's)")
    predict.add_argument("--classes", nargs="+", help="class names (overrides the instruction's)")
    predict.add_argument("--phrase", help="the referring expression of a grounding request")
    predict.add_argument("--decode", choices=DECODE_MODES, help="default: the config's")
    predict.add_argument("--out-dir", default="predictions", help="where the JSON and drawings go")
    predict.add_argument("--score-thr", type=float, default=0.3, help="leave out objects scoring less")
    predict.add_argument("--batch-size", type=int, default=1)
    predict.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visionllm`` console script (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    predictor = Predictor.from_checkpoint(args.config, args.checkpoint, device=args.device)
    try:
        images = list_images(args.images)
        request = predictor.resolve(
            args.instruction, task=args.task, classes=args.classes, phrase=args.phrase
        )
    except ValueError as error:
        parser.exit(2, f"visionllm predict: error: {error}\n")
    predictions = predictor.predict(
        images, request, decode=args.decode, score_thr=args.score_thr, batch_size=args.batch_size
    )
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for image_id, (image, prediction, stem) in enumerate(zip(images, predictions, _unique_stems(images))):
        entries += [
            {"file_name": prediction.file_name, **entry} for entry in prediction_to_coco(prediction, image_id)
        ]
        draw_predictions(image, prediction, out_dir / f"{stem}.png")
        print(summary_line(prediction))
    write_json_atomic(entries, out_dir / "predictions.json")
    print(f"wrote {out_dir / 'predictions.json'} ({len(entries)} objects) and {len(images)} drawings")
    return 0


def summary_line(prediction: Prediction) -> str:
    """``kitchen.jpg: detect, 3 objects (2 cup, 1 knife); dropped tokens: truncated=1``."""
    counts = Counter(obj.class_name for obj in prediction.objects)
    found = ", ".join(f"{n} {name}" for name, n in counts.most_common())
    line = f"{prediction.file_name}: {prediction.request.task}, {len(prediction.objects)} objects"
    line += f" ({found})" if found else ""
    if prediction.dropped_tokens:
        line += "; dropped tokens: " + ", ".join(
            f"{k}={v}" for k, v in sorted(prediction.dropped_tokens.items())
        )
    return line


def _unique_stems(images: Sequence[str | os.PathLike]) -> list[str]:
    """File stems for the drawings; a stem that repeats (same name in two folders) gets ``-<index>``."""
    stems = [Path(image).stem for image in images]
    repeated = {stem for stem, n in Counter(stems).items() if n > 1}
    return [f"{stem}-{i}" if stem in repeated else stem for i, stem in enumerate(stems)]
