"""VisionLLM vs mmdet's Deformable DETR at equal budget on the synthetic shapes (issue #6).

Two parts, both by default (``--parts``):

``train``: the tiny VisionLLM (``configs/visionllm_tiny_synthetic.py``) and a Deformable DETR of the same
tiny scale (``configs/deformable_detr_tiny_synthetic.py``: the same timm backbone, image size 128, batch 8
and dataloaders) each train for the same wall-clock budget, ``--budget-minutes``, from random weights,
then are evaluated on the synthetic val split with mmdet's CocoMetric. Each model runs in its own
subprocess (one after the other, so they never share the cores), which reports its own peak RSS
(``getrusage`` max RSS of that process: model, optimiser, activations; the dataloader worker process is
not included, and its pipeline is the same for both). ``visionllm.engine.TimeBudgetHook`` (what
``tools/train.py --time-budget`` uses) ends training after the first iteration that ends past the
budget; the clock starts at ``before_train`` (after the model is built), evaluation is not counted.
With ``--schedule time`` (default) the same hook drives both learning rates by elapsed time: linear
warm-up over the first 5 % of the budget from 1 % of the configured rate, then cosine to 1 % at the end
of the budget (the configs' own iteration-based warm-up/cosine shape, stretched over whatever iterations
fit); ``--schedule config`` keeps each config's iteration schedule instead. Training images/s is
iterations x batch / training seconds; "steady" leaves out the first iterations (``--steady-skip``).

``speed``: per-image inference latency at 10/50/100 objects, random weights, one 128 px image, CPU with
one thread, median over repeats, every round timing every model once: VisionLLM parallel (K slots) and
autoregressive (forced to emit exactly K objects; both from ``bench/decode_speed.py``) and the Deformable
DETR config with ``num_queries`` = K (and K detections kept per image).

Prints markdown tables (ratios within this run) and writes JSON. Full run (about 25 minutes: two 10-minute
budgets, evaluation, start-up and the speed part)::

    python bench/detr_vs_visionllm.py --budget-minutes 10 --out bench/results/detr_vs_visionllm.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import visionllm  # noqa: F401  (its platform fixes must run before mmdet / mmcv are imported)

# isort: split
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from visionllm.engine.launch import prepare_synthetic_data, use_time_budget
from visionllm.registry import MODELS, register_all_modules

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
import decode_speed
from common import (
    REPO,
    add_object_counts,
    argument_parser,
    dash,
    peak_rss_mib,
    repeats_per_count,
    table,
    timed,
    timing_row,
    write_json,
)

MODELS_UNDER_TEST = {
    "visionllm": REPO / "configs/visionllm_tiny_synthetic.py",
    "deformable_detr": REPO / "configs/deformable_detr_tiny_synthetic.py",
}
LABELS = {"visionllm": "VisionLLM (tiny)", "deformable_detr": "Deformable DETR (tiny)"}
SPEED_COLUMNS = ("parallel", "autoregressive", "deformable_detr")


# ---------------------------------------------------------------------------------------------- train
class Stopwatch(Hook):
    """Records each training iteration's wall-clock time, when training ended, how long the final
    validation took and its metrics."""

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self.iter_times: list[float] = []
        self.train_start = self.train_end = self.val_start = self.val_end = 0.0
        self.metrics: dict[str, float] = {}

    def before_train(self, runner) -> None:
        self.train_start = time.perf_counter()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.iter_start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.iter_times.append(time.perf_counter() - self.iter_start)

    def before_val(self, runner) -> None:
        self.val_start = self.train_end = time.perf_counter()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.val_end = time.perf_counter()
        self.metrics = {key: float(value) for key, value in (metrics or {}).items()}


def train_config(config: Path, work_dir: Path, budget_minutes: float, schedule: str) -> Config:
    """The config made into a budget run (``TimeBudgetHook``: validation once, at the end), without
    checkpoints, with only the local visualisation backend, and under ``config`` with the config's
    own iteration-based parameter schedulers instead of the time-based schedule."""
    cfg = Config.fromfile(config)
    cfg.work_dir = str(work_dir)
    use_time_budget(cfg, budget_minutes, time_schedule=schedule == "time")
    cfg.default_hooks.checkpoint = None
    cfg.vis_backends = [dict(type="LocalVisBackend")]
    cfg.visualizer.vis_backends = cfg.vis_backends
    return cfg


def train_and_evaluate(name: str, budget_s: float, work_dir: Path, schedule: str) -> dict[str, Any]:
    """Train ``name`` for ``budget_s`` seconds, evaluate it on the val split; runs in the worker process
    (working directory: the repository, which the configs' data paths are relative to)."""
    cfg = train_config(MODELS_UNDER_TEST[name], work_dir, budget_s / 60.0, schedule)
    prepare_synthetic_data(cfg)
    runner = Runner.from_cfg(cfg)
    watch = Stopwatch()
    runner.register_hook(watch)
    runner.train()  # ends with the loop's own validation
    model = runner.model
    batch_size = cfg.train_dataloader.batch_size
    metrics = dict(watch.metrics)
    # CocoMetric returns no numbers when the model predicted no object at all (an untrained VisionLLM
    # can answer <noobj> for every slot): that scores 0
    no_predictions = not metrics
    for kind in cfg.val_evaluator.metric:
        for suffix in ("", "_50", "_75", "_s", "_m", "_l"):
            metrics.setdefault(f"coco/{kind}_mAP{suffix}", 0.0)
    iterations = len(watch.iter_times)
    train_s = watch.train_end - watch.train_start
    eval_s = watch.val_end - watch.val_start
    tokens_metrics = None
    if getattr(model, "token_loss", None) is not None:  # VisionLLM: also its tokenizer's own detections
        model.decode_mode = "tokens"
        tokens_metrics = runner.val_loop.run()
    return dict(
        model=name,
        config=os.path.relpath(MODELS_UNDER_TEST[name], REPO),
        params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        batch_size=batch_size,
        iterations=iterations,
        train_s=train_s,
        images_per_s=iterations * batch_size / train_s,
        iter_times_s=watch.iter_times,
        peak_rss_mib=peak_rss_mib(),
        eval_s=eval_s,
        threads=torch.get_num_threads(),
        metrics=metrics,
        tokens_metrics=tokens_metrics,
        no_predictions=no_predictions,
    )


def steady_images_per_s(result: dict, skip: int) -> float | None:
    """Images/s over the iterations after the first ``skip`` (start-up, allocator warm-up)."""
    times = result["iter_times_s"][skip:]
    return len(times) * result["batch_size"] / sum(times) if times else None


def run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one model's budget training in a fresh subprocess; its log goes to ``work_dir/name.log``."""
    work_dir = args.work_dir / name
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / "result.json"
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--budget-minutes",
        str(args.budget_minutes),
        "--schedule",
        args.schedule,
        "--work-dir",
        str(args.work_dir),
    ]
    env = dict(os.environ)
    if args.train_threads:
        env["OMP_NUM_THREADS"] = str(args.train_threads)
    log = args.work_dir / f"{name}.log"
    with open(log, "w") as handle:
        proc = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.is_file():
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"{name} worker exited {proc.returncode} (log: {log}):\n{tail}")
    result = json.loads(out.read_text())
    result["log"] = str(log)
    result["steady_images_per_s"] = steady_images_per_s(result, args.steady_skip)
    return result


def bbox_ratio(results: dict[str, dict]) -> float | None:
    """VisionLLM bbox mAP / Deformable DETR bbox mAP (None when DETR's is 0)."""
    detr = results["deformable_detr"]["metrics"]["coco/bbox_mAP"]
    vllm = results["visionllm"]["metrics"]["coco/bbox_mAP"]
    return vllm / detr if detr > 0 else None


def train_table(report: dict) -> str:
    rows = [
        dict(
            row,
            label=LABELS[name],
            params_m=row["params"] / 1e6,
            steady=dash(row["steady_images_per_s"], ".1f"),
            segm=dash(row["metrics"].get("coco/segm_mAP"), ".3f"),
        )
        for name, row in report["models"].items()
    ]
    lines = [
        table(
            "model | params (M) | iterations | images/s | steady images/s | peak RSS (MiB) | bbox mAP | AP50 "
            "| segm mAP",
            "{label} | {params_m:.2f} | {iterations} | {images_per_s:.1f} | {steady} | {peak_rss_mib:.0f} "
            "| {metrics[coco/bbox_mAP]:.3f} | {metrics[coco/bbox_mAP_50]:.3f} | {segm}",
            rows,
            align="lrrrrrrrr",
        )
    ]
    ratio = report["bbox_mAP_ratio"]
    lines.append("")
    tokens = report["models"]["visionllm"].get("tokens_metrics")
    if tokens:
        detr = report["models"]["deformable_detr"]["metrics"]["coco/bbox_mAP"]
        lines.append(
            f"VisionLLM's visual tokens alone (`decode_mode='tokens'`, no LLM, same weights): bbox mAP "
            f"{tokens['coco/bbox_mAP']:.3f}, AP50 {tokens['coco/bbox_mAP_50']:.3f}, segm mAP "
            f"{tokens.get('coco/segm_mAP', 0.0):.3f}"
            + (f"; {tokens['coco/bbox_mAP'] / detr:.2f}x Deformable DETR." if detr > 0 else ".")
        )
    for name, row in report["models"].items():
        if row["no_predictions"]:
            lines.append(f"{LABELS[name]} predicted no object on the val split (CocoMetric: empty results).")
    lines.append(
        "VisionLLM / Deformable DETR bbox mAP: "
        + ("n/a (Deformable DETR bbox mAP is 0)" if ratio is None else f"{ratio:.2f}x")
        + f" (budget {report['budget_minutes']:g} min per model, schedule: {report['schedule']})"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- speed
def build_detr(config: Path, num_queries: int, device: torch.device) -> torch.nn.Module:
    """The Deformable DETR config's model with ``num_queries`` queries, keeping that many detections."""
    cfg = Config.fromfile(config).model
    cfg.num_queries = num_queries
    cfg.test_cfg.max_per_img = num_queries
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    return model.to(device).eval()


@torch.no_grad()
def detr_predict(model: torch.nn.Module, image: torch.Tensor) -> int:
    """Deformable DETR's ``predict`` on one image; returns how many detections it produced."""
    size = tuple(image.shape[-2:])
    metainfo = dict(img_shape=size, ori_shape=size, batch_input_shape=size, scale_factor=(1.0, 1.0))
    [result] = model.predict(image, [DetDataSample(metainfo=metainfo)])
    return len(result.pred_instances)


def run_speed(objects: list[int], repeats: list[int], image_size: int, device: torch.device) -> dict:
    """Time VisionLLM's two decoders and Deformable DETR at every object count; raises if a model
    produced another number of objects than asked."""
    image = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for count, repeat in zip(objects, repeats):
        vllm = decode_speed.build_model(str(MODELS_UNDER_TEST["visionllm"]), count, device)
        detr = build_detr(MODELS_UNDER_TEST["deformable_detr"], count, device)
        functions = {mode: partial(decode_speed.predict, vllm, image, mode) for mode in decode_speed.MODES}
        functions["deformable_detr"] = partial(detr_predict, detr, image)
        times, results = timed(functions, repeat, device)
        for name, produced in results.items():
            if produced != count:
                raise RuntimeError(f"{name} produced {produced} objects, expected {count}")
        row = timing_row(count, repeat, times)
        row["parallel_over_detr"] = row["parallel_ms"] / row["deformable_detr_ms"]
        row["autoregressive_over_detr"] = row["autoregressive_ms"] / row["deformable_detr_ms"]
        row["autoregressive_over_parallel"] = row["autoregressive_ms"] / row["parallel_ms"]
        rows.append(row)
    return dict(device=str(device), threads=torch.get_num_threads(), image_size=image_size, results=rows)


def speed_table(speed: dict) -> str:
    return table(
        "objects | VisionLLM parallel ms | VisionLLM autoregressive ms | Deformable DETR ms "
        "| parallel / DETR | AR / DETR | AR / parallel",
        "{objects} | {parallel_ms:.1f} | {autoregressive_ms:.1f} | {deformable_detr_ms:.1f} "
        "| {parallel_over_detr:.2f}x | {autoregressive_over_detr:.2f}x | {autoregressive_over_parallel:.2f}x",
        speed["results"],
        align="rrrrrrr",
    )


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser(__doc__)
    parser.add_argument("--parts", nargs="+", choices=["train", "speed"], default=["train", "speed"])
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="training wall clock per model")
    parser.add_argument("--schedule", choices=["time", "config"], default="time")
    parser.add_argument(
        "--train-threads", type=int, help="OMP/torch threads of each training process (default: torch's)"
    )
    parser.add_argument(
        "--steady-skip", type=int, default=5, help="first iterations left out of the steady images/s"
    )
    add_object_counts(parser)
    parser.add_argument("--image-size", type=int, default=128, help="speed part: image side in pixels")
    parser.add_argument("--speed-threads", type=int, default=1, help="speed part: torch CPU threads")
    parser.add_argument("--work-dir", type=Path, default=REPO / "work_dirs/bench_detr_vs_visionllm")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/detr_vs_visionllm.json")
    parser.add_argument("--worker", choices=list(MODELS_UNDER_TEST), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir.resolve()
    if args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")

    if args.worker:  # one model's training, in its own process
        result = train_and_evaluate(
            args.worker, args.budget_minutes * 60, args.work_dir / args.worker, args.schedule
        )
        write_json(args.work_dir / args.worker / "result.json", result)
        return result

    repeats = repeats_per_count(parser, args)
    report: dict[str, Any] = dict(
        torch=torch.__version__,
        machine=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        configs={name: os.path.relpath(path, REPO) for name, path in MODELS_UNDER_TEST.items()},
    )
    if "train" in args.parts:
        models = {name: run_worker(name, args) for name in MODELS_UNDER_TEST}
        report["train"] = dict(
            budget_minutes=args.budget_minutes,
            schedule=args.schedule,
            models=models,
            bbox_mAP_ratio=bbox_ratio(models),
        )
        print(train_table(report["train"]))
    if "speed" in args.parts:
        torch.set_num_threads(args.speed_threads)
        register_all_modules()
        report["speed"] = run_speed(args.objects, repeats, args.image_size, torch.device("cpu"))
        print()
        print(speed_table(report["speed"]))
    write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
