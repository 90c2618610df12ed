"""VisionLLM against the detector a practitioner would pick: Ultralytics YOLOv8n at equal minutes (issue #26).

Four runs (``--methods``), one after the other, each in a fresh subprocess for the same wall-clock budget
(``--budget-minutes``), on the same training images, with the same number of torch threads
(``--threads``; stock Ultralytics would set ``cpu_count - 1``) and dataloader workers (``--workers``):

- ``yolo``: YOLOv8n **from scratch** (``yolov8n.yaml``, no pretrained weights);
- ``deformable_detr``: mmdet's Deformable DETR of the tiny baseline
  (``configs/deformable_detr_tiny_synthetic.py``: 3 + 3 layers of width 128) on VisionLLM's backbone, data
  and schedule (``deformable_detr_config``);
- ``visionllm``: VisionLLM's recipe for the dataset (``--visionllm-model``);
- ``small``: the small model (pretrained EfficientNet-Lite0, MiniLM, SmolLM2-135M with LoRA) keeping
  ``--small-layers`` of SmolLM2's 30 layers.

All are then scored by the same function,
pycocotools through ``visionllm.evaluation.evaluate_coco``, on the same COCO validation file: YOLO's
predictions (Ultralytics' own validator: conf 0.001, IoU 0.7, at most 100 per image) exported as COCO
results, DETR's and VisionLLM's written by ``DumpCocoResults``, VisionLLM's for its two decoders of the
same checkpoint, the LLM's parallel decoding and the visual tokens alone (``--decode tokens``).

Datasets (``--dataset``):

- ``synthetic``: the embedded shapes (``configs/_base_/datasets/synthetic.py``: 160 train / 40 val, 128 px),
  VisionLLM from ``configs/visionllm_<model>_synthetic.py``, trained and asked to detect with parallel
  decoding (boxes, as YOLO is scored).
- ``bccd``: ``../shared/data/bccd`` (Pascal VOC, its own train / val lists, converted as ``visionllm train
  --data`` does), 256 px, VisionLLM from ``visionllm train --data``'s recipe (``own_data_config``).
- ``coco128``: ``../shared/data/coco128`` split by ``datasets/splits/coco128_val26.json`` (102 train / 26
  val), 128 px, the same recipe; the polygons train VisionLLM's segmentation too, as ``visionllm train
  --data`` does, and both are scored on boxes.

YOLO reads its data in its own format, converted here from the same COCO files (``coco_to_yolo``): one
label file per image, the boxes VisionLLM's dataset keeps (crowd and unusable boxes left out, clipped to
the image), and training images without a box left out, as VisionLLM's loader does.

The clocks: Ultralytics' ``time=`` (hours) stops after the first optimiser step past the budget, counted
from the start of its training loop; ``visionllm.engine.TimeBudgetHook`` after the first iteration past it,
from ``before_train``. Model building before and evaluation after are not counted. Minutes and images/s
below are each run's own: training images / training seconds up to its last batch. Peak RSS is each
training process's ``getrusage`` maximum (dataloader workers not included; the YOLO process does not import
VisionLLM, whose mmcv / mmengine imports would add about 0.4 GiB).

Ultralytics runs offline here: ``YOLO_OFFLINE`` (no online checks, no telemetry), ``YOLO_AUTOINSTALL=false``
(no pip), its settings in the work dir (``YOLO_CONFIG_DIR``), ``amp=False`` (no AMP check, which would fetch
weights on a GPU), no plots, and its dataset check's font download (Arial.ttf, only used to draw plots)
skipped. The PyPI torchvision wheel is a CUDA build whose compiled ops do not load on this CPU torch, and
Ultralytics' NMS calls ``torchvision.ops.nms``: ``patch_torchvision_nms`` declares the op schemas so
torchvision imports, and points ``torchvision.ops.nms`` at Ultralytics' own pure-torch ``TorchNMS.nms``
(what it runs when torchvision is not imported), in the YOLO process only.

Ultralytics is an optional peer: ``make peer`` installs ``bench/requirements-peer.txt``. Full runs (each about
four times the budget plus start-up and evaluation)::

    python bench/yolo_peer.py --dataset synthetic --budget-minutes 10
    python bench/yolo_peer.py --dataset bccd --budget-minutes 20

``--methods M [M ...]`` runs some of them and keeps the others' rows from the results file when those were
measured with the same settings (each run's date is in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import REPO, argument_parser, peak_rss_mib, table, write_json

DATASETS = ("synthetic", "bccd", "coco128")
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_DATA = {"bccd": SHARED_DATA / "bccd", "coco128": SHARED_DATA / "coco128"}
COCO128_SPLIT = REPO / "datasets" / "splits" / "coco128_val26.json"
IMAGE_SIZES = {"synthetic": 128, "bccd": 256, "coco128": 128}
DEFAULT_VISIONLLM = {"synthetic": "effnet", "bccd": "effnet", "coco128": "effnet"}
METHODS = ("yolo", "deformable_detr", "visionllm", "small")
YOLO_MODEL = "yolov8n.yaml"
#: YOLO's evaluation: Ultralytics' validation settings, COCO's 100 detections per image.
YOLO_EVAL = dict(conf=0.001, iou=0.7, max_det=100)
#: The settings a kept row (``--methods``) must share with this run.
SAME_RUN_KEYS = ("dataset", "budget_minutes", "threads", "workers", "image_size")
#: mmdet's Deformable DETR baseline whose model the ``deformable_detr`` run puts on the recipe's backbone.
DETR_CONFIG = REPO / "configs" / "deformable_detr_tiny_synthetic.py"

#: torchvision's operators that ``import torchvision`` registers fake kernels for (see visionllm/compat.py).
TORCHVISION_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_torchvision_library: torch.library.Library | None = None


# ------------------------------------------------------------------------------------------------ data
def prepare_dataset(dataset: str, data: Path | None, work_dir: Path) -> dict[str, Any]:
    """The COCO train and val files of ``dataset``, their image folder, classes and whether VisionLLM trains
    segmentation on them (VisionLLM's data; YOLO's is converted from it)."""
    from visionllm.data.coco import load_coco_json
    from visionllm.data.own_data import DataSplits, prepare_data
    from visionllm.data.split import write_split

    if dataset == "synthetic":
        from mmengine.config import Config

        from visionllm.engine.launch import prepare_synthetic_data

        cfg = Config.fromfile(REPO / "configs" / "visionllm_tiny_synthetic.py")
        root = REPO / cfg.synthetic["out_dir"]
        cfg.synthetic["out_dir"] = str(root)
        prepare_synthetic_data(cfg)
        files = dict(
            train=root / "annotations/instances_train.json", val=root / "annotations/instances_val.json"
        )
        splits = DataSplits(image_dir=root / "images", classes=[], has_polygons=True, **files)
    elif dataset == "bccd":
        splits = prepare_data(data, work_dir)  # Pascal VOC -> COCO (boxes only), BCCD's train / val lists
    else:
        write_split(
            load_coco_json(str(data / "annotations/instances_train2017.json")), COCO128_SPLIT, work_dir
        )
        files = dict(train=work_dir / "instances_train.json", val=work_dir / "instances_val.json")
        splits = DataSplits(image_dir=data / "train2017", classes=[], has_polygons=True, **files)
    coco = load_coco_json(str(splits.train))
    return dict(
        dataset=dataset,
        train=str(Path(splits.train).resolve()),
        val=str(Path(splits.val).resolve()),
        image_dir=str(Path(splits.image_dir).resolve()),
        classes=[category["name"] for category in coco["categories"]],
        has_polygons=splits.has_polygons,  # as `visionllm train --data` decides it (COCO128 has polygons)
    )


def coco_to_yolo(coco_json: Path, image_dir: Path, out_root: Path, split: str, skip_empty: bool) -> int:
    """Write one COCO split in Ultralytics' layout under ``out_root``: ``images/<split>/<image id><ext>``
    (links to the images) and ``labels/<split>/<image id>.txt`` (``class cx cy w h`` per box, normalised;
    class = the category's place in the file's category list). Kept are the boxes VisionLLM's dataset trains
    on: crowd boxes and those ``annotation_problem`` rejects are left out, the rest clipped to the image.
    With ``skip_empty``, images left without a box are left out (VisionLLM's training loader drops them).
    Returns the number of images written."""
    from visionllm.data.coco import annotation_problem, load_coco_json

    coco = load_coco_json(str(coco_json))
    index = {category["id"]: i for i, category in enumerate(coco["categories"])}
    images = {image["id"]: image for image in coco["images"]}
    lines: dict[Any, list[str]] = defaultdict(list)
    for ann in coco["annotations"]:
        image = images[ann["image_id"]]
        if ann.get("iscrowd") or annotation_problem(ann, image):
            continue
        width, height = image["width"], image["height"]
        x, y, w, h = ann["bbox"]
        x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        box = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
        lines[image["id"]].append(f"{index[ann['category_id']]} " + " ".join(f"{v:.6f}" for v in box))
    image_out, label_out = out_root / "images" / split, out_root / "labels" / split
    for folder in (image_out, label_out):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
    (out_root / "labels" / f"{split}.cache").unlink(missing_ok=True)  # Ultralytics' label cache
    written = 0
    for image in coco["images"]:
        if skip_empty and not lines[image["id"]]:
            continue
        source = (image_dir / image["file_name"]).resolve()
        (image_out / f"{image['id']}{source.suffix}").symlink_to(source)
        (label_out / f"{image['id']}.txt").write_text("".join(f"{line}\n" for line in lines[image["id"]]))
        written += 1
    return written


def write_yolo_data(spec: dict[str, Any], out_root: Path) -> Path:
    """Convert ``spec``'s train and val files (``coco_to_yolo``) and write Ultralytics' data YAML."""
    import yaml

    image_dir = Path(spec["image_dir"])
    coco_to_yolo(Path(spec["train"]), image_dir, out_root, "train", skip_empty=True)
    coco_to_yolo(Path(spec["val"]), image_dir, out_root, "val", skip_empty=False)
    names = dict(enumerate(spec["classes"]))
    data = dict(path=str(out_root.resolve()), train="images/train", val="images/val", names=names)
    path = out_root / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------------ YOLO
def patch_torchvision_nms() -> bool:
    """Let Ultralytics run NMS with this CPU torch and the PyPI torchvision (a CUDA build). Call before
    torchvision is imported; returns True when it patched.

    When torchvision's compiled ops do not load, its op schemas are declared (as ``visionllm.compat`` does,
    without importing VisionLLM) so ``import torchvision`` succeeds, and ``torchvision.ops.nms`` becomes
    Ultralytics' own pure-torch ``TorchNMS.nms``, the greedy NMS it runs when torchvision is absent.
    """
    global _torchvision_library
    spec = importlib.util.find_spec("torchvision")
    if _torchvision_library is None and "torchvision" not in sys.modules and spec and spec.origin:
        for library in Path(spec.origin).parent.glob("_C*.so"):
            with contextlib.suppress(OSError, RuntimeError):
                torch.ops.load_library(str(library))  # a matching build: the real ops
        missing = [name for name in TORCHVISION_SCHEMAS if not _has_torchvision_op(name)]
        if missing:
            _torchvision_library = torch.library.Library("torchvision", "FRAGMENT")  # noqa: TOR901
            for name in missing:
                _torchvision_library.define(TORCHVISION_SCHEMAS[name])
    import torchvision
    from ultralytics.utils.nms import TorchNMS

    try:
        torchvision.ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5)
        return False
    except (RuntimeError, NotImplementedError):  # "Couldn't load custom C++ ops"
        torchvision.ops.nms = torchvision.ops.boxes.nms = TorchNMS.nms
        return True


def _has_torchvision_op(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def run_yolo(spec: dict[str, Any], args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Train YOLOv8n from scratch for the budget, then export its val predictions as COCO results."""
    nms_patched = patch_torchvision_nms()
    import ultralytics
    import ultralytics.data.utils
    import ultralytics.utils.torch_utils
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionTrainer, DetectionValidator

    ultralytics.utils.torch_utils.NUM_THREADS = args.threads  # what select_device() sets torch to
    ultralytics.data.utils.check_font = lambda *_, **__: None  # a download, for plots only

    class CountingTrainer(DetectionTrainer):
        """Counts the images of every training batch."""

        images_trained = 0

        def preprocess_batch(self, batch: dict) -> dict:
            self.images_trained += len(batch["im_file"])
            return super().preprocess_batch(batch)

    class ResultsValidator(DetectionValidator):
        """Ultralytics' validation, keeping its COCO results (``jdict``) for this script to score."""

        def eval_json(self, stats: dict) -> dict:
            return stats  # no faster-coco-eval: pycocotools scores the results in the parent

    model = YOLO(YOLO_MODEL)
    model.add_callback("on_train_batch_end", lambda trainer: setattr(trainer, "last_batch_end", time.time()))
    common = dict(data=str(spec["yolo_data"]), imgsz=args.image_size, device="cpu", plots=False)
    model.train(
        trainer=CountingTrainer,
        **common,
        batch=args.yolo_batch,
        time=args.budget_minutes / 60,
        workers=args.workers,
        pretrained=False,
        amp=False,
        val=False,  # validates once, at the end, outside the clock
        save=False,
        seed=0,
        project=str(work_dir),
        name="train",
        exist_ok=True,
    )
    trainer = model.trainer
    train_s = trainer.last_batch_end - trainer.train_time_start
    peak = peak_rss_mib()
    threads = torch.get_num_threads()
    validator = ResultsValidator(
        args=dict(
            **common,
            **YOLO_EVAL,
            batch=16,
            save_json=True,
            split="val",
            project=str(work_dir),
            name="val",
            exist_ok=True,
        )
    )
    validator(model=trainer.ema.ema)  # the weights Ultralytics saves and validates
    category_ids = [category["id"] for category in json.loads(Path(spec["val"]).read_text())["categories"]]
    results = [
        dict(
            image_id=r["image_id"],
            category_id=category_ids[r["category_id"] - 1],
            bbox=r["bbox"],
            score=r["score"],
        )
        for r in validator.jdict  # image_id: the link's stem (the COCO id); category_id: class index + 1
    ]
    out = work_dir / "results.json"
    write_json(out, results)
    return dict(
        method="yolo",
        label="YOLOv8n, from scratch (Ultralytics)",
        ultralytics=ultralytics.__version__,
        model=YOLO_MODEL,
        batch_size=args.yolo_batch,
        epochs=trainer.epoch + 1,
        images=trainer.images_trained,
        train_s=train_s,
        images_per_s=trainer.images_trained / train_s,
        peak_rss_mib=peak,
        threads=threads,
        nms_patched=nms_patched,
        results={"yolo": str(out)},
    )


# ------------------------------------------------------------------------------------------- VisionLLM
def visionllm_config(spec: dict[str, Any], model: str, image_size: int):
    """The VisionLLM recipe for ``spec``'s data: the synthetic config, or ``visionllm train --data``'s."""
    from mmengine.config import Config

    from visionllm.data.own_data import DataSplits
    from visionllm.engine.launch import own_data_config

    if spec["dataset"] == "synthetic":
        cfg = Config.fromfile(REPO / "configs" / f"visionllm_{model}_synthetic.py")
        # scored on boxes, as YOLO is: trained and asked for the detection task with parallel decoding
        # only (the config also trains segmentation and autoregressive decoding, and evaluates
        # segmentation: 0.346 against 0.427 bbox AP in a side-by-side pair, docs/benchmarks.md), as on
        # BCCD, whose boxes-only data trains detection alone
        cfg.model.tasks = {"detect": cfg.model.tasks["detect"]}
        cfg.model.train_modes = ("parallel",)
        cfg.model.eval_task = "detect"
        return cfg
    splits = DataSplits(
        image_dir=Path(spec["image_dir"]),
        classes=spec["classes"],
        train=Path(spec["train"]),
        val=Path(spec["val"]),
        has_polygons=spec["has_polygons"],
    )
    return own_data_config(model, splits, task="detect", image_size=image_size)


def deformable_detr_config(recipe, num_classes: int):
    """mmdet's Deformable DETR of the tiny baseline (``DETR_CONFIG``: 3 + 3 layers of width 128, its loss
    and optimiser recipe) on ``recipe``'s backbone, input normalisation, data and schedule, with one query
    per detection VisionLLM may output (``max_objects``). A pretrained backbone trains at 0.1x the rate,
    as in mmdet's recipe."""
    from mmengine.config import Config

    from visionllm.registry import MODELS, register_all_modules

    register_all_modules()  # the backbone is built here, outside a Runner: VisionLLM's scope
    detr = Config.fromfile(DETR_CONFIG)
    model = detr.model
    model.backbone = dict(type="TimmBackbone", **recipe.model.image_tokenizer.backbone)
    model.data_preprocessor = recipe.model.data_preprocessor
    # the widths come from the architecture: built without loading its weights
    model.neck.in_channels = list(MODELS.build(dict(model.backbone, checkpoint=None)).out_channels)
    model.bbox_head.num_classes = num_classes
    model.num_queries = model.test_cfg.max_per_img = recipe.model.get("max_objects", model.num_queries)
    recipe.model = model
    recipe.optim_wrapper = detr.optim_wrapper
    if model.backbone.get("checkpoint"):
        recipe.optim_wrapper.paramwise_cfg.custom_keys["backbone"] = dict(lr_mult=0.1)
    return recipe


def parse_cfg_options(options: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> the dict ``Config.merge_from_dict`` takes, values parsed as mmengine's
    ``DictAction`` parses ``tools/train.py --cfg-options``."""
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser()
    parser.add_argument("--options", nargs="+", action=DictAction)
    return parser.parse_args(["--options", *options]).options


def run_with_runner(spec: dict[str, Any], args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Train VisionLLM (``visionllm`` / ``small``) or the Deformable DETR baseline (``deformable_detr``) for
    the budget on the recipe's data and schedule, then write its val predictions as COCO results: for
    VisionLLM its parallel decoding and its visual tokens alone, for DETR its detections."""
    import visionllm  # noqa: F401  (its platform fixes before mmengine / mmdet)

    # isort: split
    from mmengine.runner import Runner

    from visionllm.engine.launch import use_time_budget

    torch.set_num_threads(args.threads)
    from detr_vs_visionllm import Stopwatch

    method = args.worker
    is_detr = method == "deformable_detr"
    model_name = "small" if method == "small" else args.visionllm_model
    cfg = visionllm_config(spec, model_name, args.image_size)
    if method == "small":
        cfg.model.llm.num_layers = args.small_layers
    if args.cfg_options and not is_detr:
        cfg.merge_from_dict(parse_cfg_options(args.cfg_options))
    if is_detr:
        cfg = deformable_detr_config(cfg, len(spec["classes"]))
        decoders = ("detr",)
    else:
        cfg.model.decode_mode = "parallel"
        decoders = ("parallel", "tokens")
    cfg.work_dir = str(work_dir)
    use_time_budget(cfg, args.budget_minutes)
    cfg.default_hooks.checkpoint = None
    cfg.vis_backends = [dict(type="LocalVisBackend")]
    cfg.visualizer.vis_backends = cfg.vis_backends
    cfg.train_dataloader.num_workers = args.workers
    cfg.train_dataloader.persistent_workers = args.workers > 0
    results = {decoder: work_dir / f"results_{decoder}.json" for decoder in decoders}
    cfg.val_evaluator = dict(type="DumpCocoResults", out_file=str(results[decoders[0]]), ann_file=spec["val"])
    runner = Runner.from_cfg(cfg)
    watch = Stopwatch()
    runner.register_hook(watch)
    runner.train()  # ends with the loop's validation: the first decoder's results
    peak = peak_rss_mib()
    runner.save_checkpoint(str(work_dir), "final.pth")  # for bench/slot_ablation.py and tools/test.py
    model = runner.model
    if "tokens" in results and getattr(model, "token_loss", None) is not None:  # the same weights' tokens
        model.decode_mode = "tokens"
        runner.val_loop.evaluator.metrics[0].out_file = str(results["tokens"])
        runner.val_loop.run()
    else:
        results.pop("tokens", None)
    if is_detr:
        label = f"Deformable DETR, {model_name}'s backbone"
    elif method == "small":
        label = f"VisionLLM small ({args.small_layers} of SmolLM2's 30 layers)"
    else:
        label = f"VisionLLM {model_name}"
    if args.cfg_options and not is_detr:
        label += f" ({' '.join(args.cfg_options)})"
    batch_size = cfg.train_dataloader.batch_size
    iterations = len(watch.iter_times)
    train_s = watch.train_end - watch.train_start
    return dict(
        method=method,
        label=label,
        model=model_name,
        config=cfg.filename and os.path.relpath(cfg.filename, REPO),
        batch_size=batch_size,
        iterations=iterations,
        images=iterations * batch_size,
        train_s=train_s,
        images_per_s=iterations * batch_size / train_s,
        iter_times_s=watch.iter_times,
        peak_rss_mib=peak,
        threads=torch.get_num_threads(),
        results={decoder: str(path) for decoder, path in results.items()},
    )


WORKERS: dict[str, Callable[[dict, argparse.Namespace, Path], dict]] = {
    "yolo": run_yolo,
    "deformable_detr": run_with_runner,
    "visionllm": run_with_runner,
    "small": run_with_runner,
}


# ------------------------------------------------------------------------------------------------- main
def run_worker(method: str, args: argparse.Namespace, spec_file: Path) -> dict[str, Any]:
    """Run one method's training and prediction in a fresh subprocess (log: ``<work dir>/<method>.log``)."""
    work_dir = args.work_dir / method
    out = work_dir / "result.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--spec", str(spec_file)]
    command += ["--dataset", args.dataset, "--budget-minutes", str(args.budget_minutes)]
    command += ["--threads", str(args.threads), "--workers", str(args.workers)]
    command += ["--image-size", str(args.image_size), "--yolo-batch", str(args.yolo_batch)]
    command += ["--visionllm-model", args.visionllm_model, "--work-dir", str(args.work_dir)]
    command += ["--small-layers", str(args.small_layers)]
    if args.cfg_options:
        command += ["--cfg-options", *args.cfg_options]
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    if method == "yolo":
        env.update(
            YOLO_OFFLINE="1",
            YOLO_AUTOINSTALL="false",
            YOLO_CONFIG_DIR=str(work_dir / "config"),
        )
    log = args.work_dir / f"{method}.log"
    print(f"training {method} for {args.budget_minutes:g} min (log: {log})", flush=True)
    with open(log, "w") as handle:
        proc = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(
            f"{method} worker exited {proc.returncode} (log: {log}):\n{log.read_text()[-4000:]}"
        )
    return dict(json.loads(out.read_text()), log=str(log), measured=time.strftime("%Y-%m-%d %H:%M"))


def score(val_json: str, results: str) -> dict[str, float]:
    """pycocotools' 12 bbox numbers of a COCO results file, by name."""
    from visionllm.evaluation import evaluate_coco
    from visionllm.evaluation.coco_eval import STAT_NAMES

    return dict(zip(STAT_NAMES, evaluate_coco(val_json, results, ("bbox",))["bbox"]))


def result_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scored result file: YOLO, DETR, VisionLLM's LLM decoding and its visual tokens alone."""
    runs = report["runs"]
    names = {
        "yolo": "",
        "detr": "",
        "parallel": ", LLM parallel decoding",
        "tokens": ", visual tokens alone (--decode tokens)",
    }
    yolo_ap = runs["yolo"]["scores"]["yolo"]["AP"] if "yolo" in runs else None
    rows = []
    for method in METHODS:
        run = runs.get(method)
        for decoder, stats in (run or {}).get("scores", {}).items():
            ratio = stats["AP"] / yolo_ap if yolo_ap and yolo_ap >= 0.0005 else None  # not over 0.000
            rows.append(
                dict(
                    method=run["label"] + names[decoder],
                    minutes=run["train_s"] / 60,
                    images=run["images"],
                    ap=stats["AP"],
                    ap50=stats["AP50"],
                    ratio="-" if ratio is None else f"{ratio:.2f}x",
                    images_per_s=run["images_per_s"],
                    peak_rss_mib=run["peak_rss_mib"],
                )
            )
    return rows


def format_report(report: dict[str, Any]) -> str:
    """The markdown table and a line saying what was measured."""
    lines = [
        table(
            "method | minutes | images trained | bbox AP | AP50 | ratio to YOLO | train images/s "
            "| peak RSS (MiB)",
            "{method} | {minutes:.1f} | {images} | {ap:.3f} | {ap50:.3f} | {ratio} | {images_per_s:.1f} "
            "| {peak_rss_mib:.0f}",
            result_rows(report),
            align="lrrrrrrr",
        ),
        "",
        f"{report['dataset']}: {report['train_images']} training / {report['val_images']} val images at "
        f"{report['image_size']} px, {report['budget_minutes']:g} min budget each, {report['threads']} torch "
        f"threads and {report['workers']} dataloader worker(s) each; pycocotools on the same val file.",
        "Measured: "
        + ", ".join(f"{run['label']} {run['measured']}" for run in report["runs"].values())
        + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argument_parser(__doc__)
    parser.add_argument("--dataset", choices=DATASETS, default="synthetic")
    parser.add_argument(
        "--data", type=Path, help="bccd / coco128: the dataset folder (default: ../shared/data)"
    )
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="training wall clock per method")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each training process")
    parser.add_argument("--workers", type=int, default=0, help="training dataloader workers of each")
    parser.add_argument("--image-size", type=int, help="square input side (default: 128, bccd 256)")
    parser.add_argument("--yolo-batch", type=int, default=16)
    parser.add_argument("--visionllm-model", choices=["tiny", "effnet", "small"])
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="what to train (default: all); the others' rows stay from --out when measured alike",
    )
    parser.add_argument(
        "--small-layers", type=int, default=8, help="SmolLM2 layers the small model keeps (of 30)"
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="VisionLLM config overrides (visionllm and small runs), as tools/train.py takes them",
    )
    parser.add_argument("--work-dir", type=Path, help="default: work_dirs/yolo_peer_<dataset>")
    parser.add_argument("--out", type=Path, help="default: bench/results/yolo_peer_<dataset>.json")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")
    if args.dataset == "synthetic" and args.image_size not in (None, IMAGE_SIZES["synthetic"]):
        parser.error("the synthetic images are 128 px: --image-size must be 128")
    args.image_size = args.image_size or IMAGE_SIZES[args.dataset]
    args.visionllm_model = args.visionllm_model or DEFAULT_VISIONLLM[args.dataset]
    args.work_dir = (args.work_dir or REPO / "work_dirs" / f"yolo_peer_{args.dataset}").resolve()
    out = args.out or REPO / "bench" / "results" / f"yolo_peer_{args.dataset}.json"

    if args.worker:  # one method, in its own process
        spec = json.loads(args.spec.read_text())
        result = WORKERS[args.worker](spec, args, args.work_dir / args.worker)
        write_json(args.work_dir / args.worker / "result.json", result)
        return result

    data = args.data or DEFAULT_DATA.get(args.dataset)
    if data is not None and not data.exists():
        parser.error(f"{data}: no such folder")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    spec = prepare_dataset(args.dataset, data, args.work_dir)
    spec["yolo_data"] = str(write_yolo_data(spec, args.work_dir / "yolo_data"))
    spec_file = args.work_dir / "data.json"
    write_json(spec_file, spec)

    if "yolo" in args.methods and importlib.util.find_spec("ultralytics") is None:
        parser.error("Ultralytics is not installed: `make peer` installs bench/requirements-peer.txt")
    report: dict[str, Any] = dict(
        dataset=args.dataset,
        budget_minutes=args.budget_minutes,
        threads=args.threads,
        workers=args.workers,
        image_size=args.image_size,
        train_images=len(json.loads(Path(spec["train"]).read_text())["images"]),
        val_images=len(json.loads(Path(spec["val"]).read_text())["images"]),
        val_file=spec["val"],
        torch=torch.__version__,
        machine=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        runs={},
    )
    previous = json.loads(out.read_text()) if out.is_file() else {}
    if all(previous.get(key) == report[key] for key in SAME_RUN_KEYS):
        report["runs"] = {m: run for m, run in previous.get("runs", {}).items() if m not in args.methods}
    for method in args.methods:
        run = run_worker(method, args, spec_file)
        run["scores"] = {name: score(spec["val"], path) for name, path in run["results"].items()}
        report["runs"][method] = run
    print(format_report(report))
    write_json(out, report)
    return report


if __name__ == "__main__":
    main()
