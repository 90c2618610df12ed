"""The ``visionllm`` command: train, test and predict on your own data without editing a config.

visionllm train --data DATA [--val VAL_JSON] [--model tiny|effnet|small] [--task detect|segment]
                [--image-size PX] [--time-budget MIN [--val-every MIN]] [--work-dir W]
                [--cfg-options k=v ...]
visionllm test --checkpoint K [--data DATA] [--out results.json] [--decode MODE]
visionllm predict IMAGES... --checkpoint K [--instruction "find all cups and knives"]
                  [--task detect --classes cup knife] [--phrase "the man in the red shirt"]
                  [--decode parallel|autoregressive|tokens] [--out-dir D] [--score-thr 0.3]
visionllm serve [--checkpoint K] [--config C] [--host 127.0.0.1] [--port 7860]
visionllm chat IMAGE [--checkpoint K] [--planner rules|smollm2|openai] [--url URL]  (lines from stdin)

DATA is a COCO JSON, a folder with annotations/*.json, or a Pascal VOC folder (converted on the fly);
without a validation split, 20% of the training images are held out (seeded; split.json in the work
dir). ``train`` writes the full resolved config to ``W/config.py``; boxes-only data trains detection,
polygon data detection and segmentation. A checkpoint carries its config and class list, so ``test``
and ``predict`` need no config (``--config`` overrides it); ``test --data`` evaluates on that data's
test split (else val, else all of it), reading the checkpoint's classes by name.

IMAGES are files and/or folders (their image files). Writes ``D/predictions.json`` (a COCO-style list:
``file_name``, ``image_id`` (the image's position in the input), ``category_name``, ``bbox`` xywh,
``score``, and RLE ``segmentation`` for segmentation requests) and ``D/<image stem>.png`` drawings,
and prints one line per image. An unreadable image is skipped with a warning naming it; the others
are written, and the exit code is 1 when any was skipped. ``tools/predict.py`` is the same command.

``serve`` runs the web demo and the HTTP JSON API (``visionllm.serve``) over one checkpoint, by default
the one ``make demo`` trains, on 127.0.0.1 unless ``--host`` says otherwise.

Every command reports a user error (a bad file, field or argument) as one line naming it and exits
with 2; ``--debug`` (or ``VISIONLLM_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from mmengine.config import Config, DictAction
from tqdm import tqdm

from visionllm.agent.terminal import add_chat_parser, chat_command
from visionllm.apis import Prediction, Predictor, draw_predictions, list_images
from visionllm.apis.inference import UnreadableImageError
from visionllm.data.own_data import prepare_data, prepare_test_data
from visionllm.engine.launch import (
    MODEL_CONFIGS,
    apply_options,
    config_from_checkpoint,
    own_data_config,
    run_testing,
    run_training,
    use_test_data,
    use_time_budget,
)
from visionllm.evaluation.results import prediction_to_coco
from visionllm.fileio import checkpoint_classes, read_checkpoint, write_json_atomic
from visionllm.models.visionllm import DECODE_MODES

#: What a command-line user can cause and fix: a missing or malformed file, a bad field, argument or
#: instruction (the code raises these with a message that names the culprit), or a config with a typo.
USER_ERRORS = (ValueError, OSError, SyntaxError, pickle.UnpicklingError)
#: What ``visionllm serve`` serves without ``--checkpoint``: the checkpoint ``make demo`` trains.
DEMO_CHECKPOINT = "work_dirs/demo/iter_600.pth"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def coordinates(count: int) -> Callable[[str], tuple[float, ...]]:
    """An argparse type: ``"10,20,110,90"`` -> ``count`` floats, or a clear usage error."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count or not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
        return values

    return parse


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (also VISIONLLM_DEBUG=1)"
    )


def run_command(
    main: Callable[[Sequence[str]], int | None], prog: str, argv: Sequence[str] | None = None
) -> int:
    """Run a command-line entry point and return its exit code: a user error (``USER_ERRORS``) prints
    ``prog: error: <message>`` on stderr and returns 2, without a traceback unless ``--debug`` is among
    the arguments or ``VISIONLLM_DEBUG`` is set (then it propagates)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("VISIONLLM_DEBUG", "") not in ("", "0")
    try:
        return main(argv) or 0
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionllm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train on a COCO or VOC folder (or a COCO file)")
    train.add_argument("--data", required=True, help="a COCO JSON, a COCO folder or a Pascal VOC folder")
    train.add_argument("--val", help="a COCO JSON to validate on (default: the data's val split, else 20%%)")
    train.add_argument("--model", choices=sorted(MODEL_CONFIGS), default="effnet", help="default: effnet")
    train.add_argument(
        "--task", choices=("detect", "segment"), help="what to evaluate (default: by the data)"
    )
    train.add_argument(
        "--image-size", type=positive_int, help="square input side (default: the recipe's, 128)"
    )
    train.add_argument(
        "--time-budget",
        type=float,
        metavar="MIN",
        help="train MIN minutes (default: the recipe's iterations)",
    )
    train.add_argument(
        "--val-every", type=float, metavar="MIN", help="with --time-budget: validate every MIN minutes"
    )
    train.add_argument("--work-dir", help="default: work_dirs/<data folder name>_<model>")
    train.add_argument("--seed", type=int, default=0, help="the validation split's seed")
    train.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v ...")
    add_debug_flag(train)

    test = commands.add_parser("test", help="evaluate a checkpoint on its validation data or on --data")
    test.add_argument("--checkpoint", required=True, help="a checkpoint written by training")
    test.add_argument(
        "--data", help="a COCO JSON, COCO folder or VOC folder (its test split, else val, else all)"
    )
    test.add_argument("--config", help="default: the config saved in the checkpoint")
    test.add_argument("--out", help="also write the predictions as a COCO results JSON")
    test.add_argument("--decode", choices=DECODE_MODES, help="default: the config's")
    test.add_argument(
        "--work-dir", help="logs and test_metrics.json go here (default: the checkpoint's folder)"
    )
    test.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v ...")
    add_debug_flag(test)

    predict = commands.add_parser("predict", help="predict on images with a checkpoint and draw the results")
    predict.add_argument("images", nargs="+", help="image files and/or folders of images")
    predict.add_argument("--checkpoint", required=True, help="a checkpoint written by training")
    predict.add_argument("--config", help="default: the config saved in the checkpoint")
    predict.add_argument("--instruction", help='free-form, e.g. "segment every dog"')
    predict.add_argument("--task", help="a task name, e.g. detect, segment, ground, region_classify, caption "
                         "(overrides the instruction's)")  # fmt: skip
    predict.add_argument("--classes", nargs="+", help="class names (overrides the instruction's)")
    predict.add_argument("--phrase", help="the referring expression of a grounding request")
    predict.add_argument(
        "--region",
        dest="regions",
        action="append",
        default=[],
        type=coordinates(4),
        metavar="X1,Y1,X2,Y2",
        help="a box in image pixels for a region question (repeatable, in the <region> order)",
    )
    predict.add_argument(
        "--point",
        dest="points",
        action="append",
        default=[],
        type=coordinates(2),
        metavar="X,Y",
        help="a click in image pixels for a point question (repeatable)",
    )
    predict.add_argument("--decode", choices=DECODE_MODES, help="default: the config's")
    predict.add_argument("--out-dir", default="predictions", help="where the JSON and drawings go")
    predict.add_argument("--score-thr", type=float, default=0.3, help="leave out objects scoring less")
    predict.add_argument("--batch-size", type=positive_int, default=1)
    predict.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    predict.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v ...")
    add_debug_flag(predict)

    serve = commands.add_parser("serve", help="a web demo and an HTTP JSON API over one checkpoint")
    serve.add_argument("--checkpoint", default=DEMO_CHECKPOINT, help=f"default: {DEMO_CHECKPOINT}")
    serve.add_argument("--config", help="default: the config saved in the checkpoint")
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    serve.add_argument("--port", type=positive_int, default=7860)
    serve.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload (default: 20)")
    serve.add_argument(
        "--max-pixels", type=positive_int, default=40_000_000, help="largest image (default: 40 MP)"
    )
    serve.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v ...")
    add_debug_flag(serve)
    add_debug_flag(add_chat_parser(commands, DEMO_CHECKPOINT))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visionllm`` console script (``argv`` defaults to ``sys.argv[1:]``)."""
    return run_command(_main, "visionllm", argv)


def _main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "train": train_command,
        "test": test_command,
        "predict": predict_command,
        "serve": serve_command,
        "chat": chat_command,
    }
    return commands[args.command](args)


def train_command(args: argparse.Namespace) -> int:
    """``visionllm train``: find the data, build the recipe's config on it, write it, train."""
    if args.val_every and not args.time_budget:
        raise ValueError("--val-every needs --time-budget")
    data = Path(args.data)
    work_dir = Path(args.work_dir or Path("work_dirs") / f"{data.stem}_{args.model}")
    splits = prepare_data(data, work_dir, val=args.val, seed=args.seed)
    print(f"data: {splits.summary()}")
    cfg = own_data_config(args.model, splits, args.task, args.image_size)
    apply_options(cfg, args.cfg_options)
    cfg.work_dir = str(work_dir)
    if args.time_budget:
        use_time_budget(cfg, args.time_budget, args.val_every)
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(work_dir / "config.py")
    print(f"config: {work_dir / 'config.py'} (the full resolved config: tools/train.py runs it as is)")
    run_training(cfg)
    return 0


def test_command(args: argparse.Namespace) -> int:
    """``visionllm test``: the checkpoint's own config and classes, on ``--data`` or its validation set."""
    checkpoint = read_checkpoint(args.checkpoint, lazy=True)  # config and classes; the Runner loads weights
    cfg = Config.fromfile(args.config) if args.config else config_from_checkpoint(checkpoint, args.checkpoint)
    cfg.work_dir = args.work_dir or str(Path(args.checkpoint).resolve().parent)
    apply_options(cfg, args.cfg_options)
    if args.data:
        classes = checkpoint_classes(checkpoint)
        if not classes:
            raise ValueError(
                f"{args.checkpoint}: the checkpoint does not name its classes (meta.dataset_meta)"
            )
        ann_file, image_dir = prepare_test_data(args.data, Path(cfg.work_dir) / "test_data", classes)
        use_test_data(cfg, ann_file, image_dir, classes)
        print(f"test data: {ann_file} (images in {image_dir})")
    if args.decode:
        cfg.model.decode_mode = args.decode
    metrics = run_testing(cfg, args.checkpoint, out=args.out)
    write_json_atomic(
        dict(checkpoint=str(args.checkpoint), metrics=metrics), Path(cfg.work_dir) / "test_metrics.json"
    )
    print(
        f"metrics: {Path(cfg.work_dir) / 'test_metrics.json'}"
        + (f", predictions: {args.out}" if args.out else "")
    )
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """``visionllm predict``: predictions.json and a drawing per readable image; 1 if any was skipped."""
    images = list_images(args.images)
    predictor = Predictor.from_checkpoint(
        args.config, args.checkpoint, device=args.device, cfg_options=args.cfg_options
    )
    request = predictor.resolve(
        args.instruction,
        task=args.task,
        classes=args.classes,
        phrase=args.phrase,
        regions=args.regions,
        points=args.points,
    )
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = _unique_stems(images)
    entries, skipped, drawn = [], [], 0
    with tqdm(total=len(images), desc="predicting", unit="image", file=sys.stderr, leave=False) as bar:
        for start in range(0, len(images), args.batch_size):
            batch = images[start : start + args.batch_size]
            predicted, failed = _predict_readable(predictor, batch, request, args)
            skipped += failed
            for position, prediction in predicted:
                image_id, image = start + position, batch[position]
                entries += [
                    {"file_name": prediction.file_name, **entry}
                    for entry in prediction_to_coco(prediction, image_id)
                ]
                if prediction.text is not None:  # an answer in words
                    entries.append(
                        {"file_name": prediction.file_name, "image_id": image_id, "task": request.task,
                         "text": prediction.text, "score": prediction.text_score}
                    )  # fmt: skip
                draw_predictions(image, prediction, out_dir / f"{stems[image_id]}.png")
                drawn += 1
                bar.write(summary_line(prediction), file=sys.stdout)
            bar.update(len(batch))
    write_json_atomic(entries, out_dir / "predictions.json")
    print(
        f"{drawn} images, {len(entries)} objects, {len(skipped)} skipped: wrote "
        f"{out_dir / 'predictions.json'} and {drawn} drawings in {out_dir}"
    )
    if skipped:
        print(f"skipped {len(skipped)} of {len(images)} images:", *skipped, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def _predict_readable(
    predictor: Predictor, batch: list, request, args: argparse.Namespace
) -> tuple[list[tuple[int, Prediction]], list[str]]:
    """Predict a batch: (position in the batch, prediction) per readable image. When an image in it
    cannot be read, the others are predicted one by one and each unreadable one's message (it names the
    file) is returned instead of failing the run."""
    try:
        predictions = predictor.predict(
            batch, request, decode=args.decode, score_thr=args.score_thr, batch_size=len(batch)
        )
        return list(enumerate(predictions)), []
    except UnreadableImageError as error:
        if len(batch) == 1:
            tqdm.write(f"warning: skipping {error}", file=sys.stderr)
            return [], [str(error)]
    predicted, failed = [], []
    for position, image in enumerate(batch):
        done, messages = _predict_readable(predictor, [image], request, args)
        predicted += [(position, prediction) for _, prediction in done]
        failed += messages
    return predicted, failed


def summary_line(prediction: Prediction) -> str:
    """``kitchen.jpg: detect, 3 objects (2 cup, 1 knife); dropped tokens: truncated=1``."""
    counts = Counter(obj.class_name for obj in prediction.objects)
    found = ", ".join(f"{n} {name}" for name, n in counts.most_common())
    if prediction.text is not None:
        return f"{prediction.file_name}: {prediction.request.task}: {prediction.text}"
    line = f"{prediction.file_name}: {prediction.request.task}, {len(prediction.objects)} objects"
    line += f" ({found})" if found else ""
    if prediction.dropped_tokens:
        line += "; dropped tokens: " + ", ".join(
            f"{k}={v}" for k, v in sorted(prediction.dropped_tokens.items())
        )
    return line


def serve_command(args: argparse.Namespace) -> int:
    """``visionllm serve``: the Gradio demo and the HTTP API (``visionllm.serve``) until interrupted."""
    from visionllm.serve import Limits, serve  # gradio is slow to import: only for this command

    if args.checkpoint == DEMO_CHECKPOINT and not Path(DEMO_CHECKPOINT).is_file():
        raise ValueError(
            f"no checkpoint: {DEMO_CHECKPOINT} is missing; `make demo` trains it, or pass --checkpoint"
        )
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels)
    serve(
        args.checkpoint,
        args.config,
        host=args.host,
        port=args.port,
        device=args.device,
        limits=limits,
        cfg_options=args.cfg_options,
    )
    return 0


def _unique_stems(images: Sequence[str | os.PathLike]) -> list[str]:
    """File stems for the drawings; a stem that repeats (same name in two folders) gets ``-<index>``."""
    stems = [Path(image).stem for image in images]
    repeated = {stem for stem, n in Counter(stems).items() if n > 1}
    return [f"{stem}-{i}" if stem in repeated else stem for i, stem in enumerate(stems)]
