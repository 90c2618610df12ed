"""What the training and test commands share (``tools/train.py``, ``tools/test.py``, ``visionllm train``
and ``visionllm test``): config loading, data preparation, process setup, and the runs themselves."""

from __future__ import annotations

import copy
import os
from contextlib import nullcontext
from pathlib import Path

import torch
from mmengine.config import Config, DictAction  # noqa: F401  (DictAction re-exported for the tools)
from mmengine.dist import barrier, get_rank, init_dist
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from visionllm.data.own_data import DataSplits
from visionllm.engine.deepspeed import use_deepspeed
from visionllm.engine.workdir_lock import lock_work_dir
from visionllm.fileio import check_checkpoint_file
from visionllm.tasks import task_class


def load_config(
    path: str, cfg_options: dict | None = None, work_dir: str | None = None, deepspeed: str | None = None
) -> Config:
    """Read an mmengine config, switch it to a DeepSpeed preset if asked (``use_deepspeed``), apply
    ``--cfg-options`` and choose the work dir (default work_dirs/<name>)."""
    cfg = Config.fromfile(path)
    if deepspeed:
        use_deepspeed(cfg, deepspeed)
    apply_options(cfg, cfg_options)
    cfg.work_dir = work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(path).stem)
    return cfg


def apply_options(cfg: Config, cfg_options: dict | None) -> None:
    """``--cfg-options`` on ``cfg``. Where the config tests on its validation data (``test_dataloader =
    val_dataloader``, a copy made when the file was read), the test data and metric follow the
    overridden validation ones unless the options set test keys themselves."""
    test_follows_val = all(cfg.get(f"test_{k}") == cfg.get(f"val_{k}") for k in ("dataloader", "evaluator"))
    if not cfg_options:
        return
    cfg.merge_from_dict(cfg_options)
    if test_follows_val and not any(key.startswith("test_") for key in cfg_options):
        cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
        cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)


def config_from_checkpoint(checkpoint: dict, path: str | Path) -> Config:
    """The config a checkpoint was trained with (mmengine saves its text in ``meta.cfg``): a checkpoint
    carries its model, class list, tasks and input size, so testing and predicting need no config file."""
    text = checkpoint.get("meta", {}).get("cfg")
    if not text:
        raise ValueError(f"{path}: the checkpoint holds no config (meta.cfg); pass --config")
    return Config.fromstring(text, ".py")


def run_training(cfg: Config, launcher: str = "none") -> None:
    """Train ``cfg`` with mmengine's Runner (FlexibleRunner for DeepSpeed), holding its work dir.

    The lock comes before the Runner, which creates the log folder: a second run on this work dir stops
    here. One lock per job, taken by global rank 0 (RANK, set by torchrun and the deepspeed launcher).
    """
    main_rank = launcher == "none" or os.environ.get("RANK", "0") == "0"
    with lock_work_dir(cfg.work_dir) if main_rank else nullcontext():
        setup_distributed(cfg, launcher)
        runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
        prepare_synthetic_data(cfg)  # once the process group exists: rank 0 writes, the others wait
        runner.train()


def run_testing(cfg: Config, checkpoint: str, launcher: str = "none", out: str | None = None) -> dict:
    """Evaluate ``checkpoint`` on ``cfg``'s test data; with ``out``, also write the predictions as a COCO
    results file (``DumpCocoResults``). Returns the metrics."""
    return testing_runner(cfg, checkpoint, launcher, out).test()


def testing_runner(cfg: Config, checkpoint: str, launcher: str = "none", out: str | None = None) -> Runner:
    """The Runner ``run_testing`` evaluates with: ``cfg`` without its training parts, loading
    ``checkpoint`` when its ``test()`` is called (each call scores the model as it is decoding then)."""
    check_checkpoint_file(checkpoint)
    cfg.load_from = checkpoint
    if out:
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        # the COCO metric's annotation file gives the category ids (label indices without one)
        ann_file = next((e["ann_file"] for e in evaluators if e.get("ann_file")), None)
        cfg.test_evaluator = [*evaluators, dict(type="DumpCocoResults", out_file=out, ann_file=ann_file)]
    cfg.train_dataloader, cfg.train_cfg, cfg.optim_wrapper, cfg.param_scheduler = None, None, None, None
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="ProgressBarHook")]
    setup_distributed(cfg, launcher)
    prepare_synthetic_data(cfg)
    return Runner.from_cfg(cfg)


def prepare_synthetic_data(cfg: Config) -> None:
    """Generate the embedded synthetic dataset when the config asks for it and it is not on disk yet.

    In a distributed run rank 0 writes it while the other ranks wait (a barrier, when the process group
    exists already), so several nodes need it on a shared file system or generated beforehand.
    """
    spec = cfg.get("synthetic")
    if not spec:
        return
    out_dir = Path(spec["out_dir"])
    if get_rank() == 0 and not (out_dir / "annotations" / "instances_train.json").is_file():
        from visionllm.data.synthetic import generate_synthetic

        generate_synthetic(**spec)
    barrier()


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Select the launcher; on CPU-only torch start the gloo process group ourselves.

    mmengine's ``pytorch`` launcher calls ``torch.cuda.set_device``, which fails without CUDA; a process
    group that already exists is used as it is, so initialising gloo first sidesteps it.
    """
    cfg.launcher = launcher
    if launcher == "none":
        return
    if torch.cuda.is_available():
        cfg.env_cfg.setdefault("dist_cfg", {})["backend"] = "nccl"
        if not torch.distributed.is_initialized():  # now, so data preparation can wait on a barrier
            init_dist("pytorch", backend="nccl")
        return
    cfg.env_cfg.setdefault("dist_cfg", {})["backend"] = "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo")
    # DDP wraps CPU modules without device ids
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)


def use_time_budget(
    cfg: Config, minutes: float, val_every_minutes: float | None = None, time_schedule: bool = True
) -> None:
    """Make an iteration-based config train for ``minutes`` of wall-clock time (``TimeBudgetHook``):
    no iteration limit, no iteration-based validation, and (with ``time_schedule``) the learning-rate
    schedule stretched over the budget in place of the config's ``param_scheduler``."""
    cfg.train_cfg.max_iters = 10**9  # the hook ends training
    cfg.train_cfg.val_interval = 10**9
    if time_schedule:
        cfg.param_scheduler = None
    hook = dict(
        type="TimeBudgetHook",
        budget_minutes=minutes,
        val_every_minutes=val_every_minutes,
        time_schedule=time_schedule,
    )
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), hook]


#: ``visionllm train --model`` names -> the recipe configs they start from (data paths replaced).
MODEL_CONFIGS = {
    "tiny": "visionllm_tiny_coco128.py",
    "effnet": "visionllm_effnet_coco128.py",
    "small": "visionllm_small_coco128.py",
}
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def own_data_config(
    model: str, splits: DataSplits, task: str | None = None, image_size: int | None = None
) -> Config:
    """The ``model`` recipe (``MODEL_CONFIGS``) on the user's data: its train and val files and image
    folder in every dataloader and the metric. Boxes-only data trains and evaluates detection; data
    with polygons trains detection and segmentation and evaluates ``task`` (default: segment).
    ``image_size`` replaces the recipe's square input side (its Resize and Pad steps)."""
    if model not in MODEL_CONFIGS:
        raise ValueError(f"--model must be one of {sorted(MODEL_CONFIGS)}, got {model!r}")
    task = task or ("segment" if splits.has_polygons else "detect")
    if task == "segment" and not splits.has_polygons:
        raise ValueError(
            f"{splits.train}: --task segment needs polygon annotations, and this data has boxes only"
        )
    cfg = Config.fromfile(CONFIG_DIR / MODEL_CONFIGS[model])
    tasks = ("detect", "segment") if splits.has_polygons else ("detect",)
    cfg.model.tasks = {name: cfg.model.tasks.get(name, dict(weight=1.0)) for name in tasks}
    cfg.model.eval_task = task
    cfg.model.llm.max_classes = max(cfg.model.llm.get("max_classes", 0), len(splits.classes))
    _fit_context(cfg, len(splits.classes))
    for step in cfg.train_pipeline:
        if step["type"] == "LoadAnnotations":
            step["with_mask"] = splits.has_polygons
    if image_size:
        for step in (*cfg.train_pipeline, *cfg.test_pipeline):
            if step["type"] == "Resize":
                step["scale"] = (image_size, image_size)
            elif step["type"] == "Pad":
                step["size"] = (image_size, image_size)
    for split, ann_file in (("train", splits.train), ("val", splits.val), ("test", splits.val)):
        dataset = cfg[f"{split}_dataloader"]["dataset"]
        dataset.update(data_root="", ann_file=str(Path(ann_file).resolve()))
        dataset["data_prefix"] = dict(img=f"{Path(splits.image_dir).resolve()}/")
        dataset["pipeline"] = cfg.train_pipeline if split == "train" else cfg.test_pipeline
    metric = list(task_class(task).iou_types)  # the task module says how it is scored
    cfg.val_evaluator = dict(
        type="VisionLLMCocoMetric", ann_file=str(Path(splits.val).resolve()), metric=metric
    )
    cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)
    return cfg


def use_test_data(cfg: Config, ann_file: Path, image_dir: Path, classes: list[str]) -> None:
    """Point ``cfg``'s test set and metric at ``ann_file`` (images in ``image_dir``), reading only the
    checkpoint's ``classes`` (by name) in their order, so labels mean what they meant in training."""
    dataset = cfg.test_dataloader["dataset"]
    dataset.update(
        data_root="", ann_file=str(Path(ann_file).resolve()), metainfo=dict(classes=tuple(classes))
    )
    dataset["data_prefix"] = dict(img=f"{Path(image_dir).resolve()}/")
    evaluator = cfg.test_evaluator[0] if isinstance(cfg.test_evaluator, list) else cfg.test_evaluator
    cfg.test_evaluator = dict(evaluator, ann_file=str(Path(ann_file).resolve()))


def _fit_context(cfg: Config, num_classes: int) -> None:
    """Give a randomly initialised LLM (built from ``llm.config``) the positions its longest answer needs:
    visual tokens + an instruction listing every class + every parallel slot of the longest task (a
    16-point polygon is 33 tokens). Its rotary positions have no weights, so this costs nothing; a
    pretrained LLM keeps its own context."""
    llm_config = cfg.model.llm.get("config")
    if llm_config is None:
        return
    longest_object = max(1 + 2 * options.get("num_points", 2) for options in cfg.model.tasks.values())
    prompt = cfg.model.image_tokenizer.get("num_queries", 0) + 64 + 8 * num_classes  # words + <ck> per class
    needed = prompt + cfg.model.get("num_slots", 0) * longest_object
    if needed > llm_config.get("max_position_embeddings", 0):
        llm_config["max_position_embeddings"] = 1 << (needed - 1).bit_length()
