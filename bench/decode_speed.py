"""Per-image latency of parallel vs autoregressive decoding as the number of objects grows.

Builds a model from a config (default: the tiny one, random weights, eval mode) and times
``VisionLLM.predict`` on one synthetic image with a detection request over the synthetic classes.
For each object count K the model gets K parallel slots, and autoregressive decoding is forced to emit
exactly K objects (``<eoo>`` is illegal until the ``max_objects`` = K cap ends the answer), so both
decoders produce the same number of objects. Both timings include the image tokenizer, whose own time
is reported beside them. Prints a markdown table (medians over the repeats; ratio = autoregressive /
parallel within this run) and writes the numbers as JSON. CPU runs default to one thread, which gives
steady numbers on a shared machine::

    python bench/decode_speed.py --out bench/results/decode_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import visionllm  # noqa: F401  (its platform fixes must run before mmdet / mmcv are imported)

# isort: split
import torch
from mmengine.config import Config

from visionllm.data.synthetic import CLASSES
from visionllm.models.decoding import Grammar
from visionllm.models.visionllm import VisionLLM
from visionllm.registry import MODELS, register_all_modules
from visionllm.tasks.base import Request, Task

REPO = Path(__file__).resolve().parents[1]
MODES = ("parallel", "autoregressive")


class ExactCountGrammar(Grammar):
    """The task grammar with ``<eoo>`` never legal in autoregressive mode: decoding then runs on until
    ``decode_autoregressive``'s ``max_objects`` cap forces ``<eoo>``, i.e. exactly that many objects."""

    def __init__(self, vocab_size: int, eoo_local: int) -> None:
        super().__init__(vocab_size)
        self.eoo_local = eoo_local

    def _build(self, task: Task, position: int, num_classes: int, parallel: bool) -> torch.Tensor:
        mask = super()._build(task, position, num_classes, parallel)
        if not parallel:
            mask[self.eoo_local] = False
        return mask


def build_model(config: str, num_objects: int, device: torch.device) -> VisionLLM:
    """The config's model with ``num_objects`` parallel slots and autoregressive objects, and at least
    as many visual tokens (each slot starts from one, as each Deformable DETR query is one object)."""
    cfg = Config.fromfile(config).model
    cfg.update(class_names=list(CLASSES), num_slots=num_objects, max_objects=num_objects)
    cfg.image_tokenizer.num_queries = max(cfg.image_tokenizer.num_queries, num_objects)
    torch.manual_seed(0)
    model = MODELS.build(cfg).to(device).eval()
    model.grammar = ExactCountGrammar(model.vocab.num_tokens, model.vocab.to_local(model.vocab.eoo_id))
    return model


def detect_request(model: VisionLLM) -> Request:
    """A detection request over all the synthetic classes."""
    return model.tasks["detect"].request_for_eval(list(CLASSES))


def timed(
    functions: dict[str, Callable[[], Any]], repeats: int, device: torch.device
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Wall-clock milliseconds of each function over ``repeats`` rounds after a warm-up round, and each
    one's last result. Every round calls every function once, so drifts in machine load hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    results: dict[str, Any] = {}
    for round_index in range(repeats + 1):
        for name, function in functions.items():
            _synchronize(device)
            start = time.perf_counter()
            results[name] = function()
            _synchronize(device)
            if round_index > 0:
                times[name].append((time.perf_counter() - start) * 1000)
    return times, results


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predict(model: VisionLLM, image: torch.Tensor, mode: str) -> int:
    """Decode the detection request with ``mode``; returns how many objects the decoder produced
    (parsed objects plus those the parser dropped, e.g. degenerate boxes)."""
    size = tuple(image.shape[-2:])
    meta = dict(ori_shape=size, pad_shape=size, scale_factor=(1.0, 1.0))
    [result] = model.generate(image, [detect_request(model)], [meta], mode)
    return len(result) + sum(result.dropped_tokens.values())


def run(config: str, objects: list[int], repeats: list[int], image_size: int, device: torch.device) -> dict:
    """Time both decoders (and the image tokenizer alone) at every object count; raises if a decoder
    produced another number of objects than asked."""
    image = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for count, repeat in zip(objects, repeats):
        model = build_model(config, count, device)
        text = detect_request(model).plain_text
        functions = {mode: partial(predict, model, image, mode) for mode in MODES}
        functions["image_tokenizer"] = torch.no_grad()(partial(model.image_tokenizer, image, [text]))
        times, results = timed(functions, repeat, device)
        for mode in MODES:
            if results[mode] != count:
                raise RuntimeError(f"{mode} decoding produced {results[mode]} objects, expected {count}")
        row: dict[str, Any] = dict(objects=count, repeats=repeat)
        for name, measured in times.items():
            row[f"{name}_ms"] = statistics.median(measured)
            row[f"{name}_all_ms"] = measured
        row["ratio"] = row["autoregressive_ms"] / row["parallel_ms"]
        rows.append(row)
    return dict(
        config=os.path.relpath(config, REPO),
        device=str(device),
        threads=torch.get_num_threads(),
        image_size=image_size,
        task="detect",
        torch=torch.__version__,
        machine=platform.processor() or platform.machine(),
        results=rows,
    )


def markdown_table(report: dict) -> str:
    lines = [
        "| objects | parallel ms | autoregressive ms | AR / parallel | of which image tokenizer ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['objects']} | {row['parallel_ms']:.1f} | {row['autoregressive_ms']:.1f} "
            f"| {row['ratio']:.1f}x | {row['image_tokenizer_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / "configs/_base_/models/visionllm_tiny.py"))
    parser.add_argument("--objects", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument(
        "--repeats",
        type=int,
        nargs="+",
        default=[5, 5, 3],
        help="timed runs per object count (or one for all)",
    )
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/decode_speed.json")
    args = parser.parse_args(argv)
    repeats = args.repeats * len(args.objects) if len(args.repeats) == 1 else args.repeats
    if len(repeats) != len(args.objects):
        parser.error("give one --repeats value, or one per --objects value")
    torch.set_num_threads(args.threads)
    register_all_modules()
    report = run(args.config, args.objects, repeats, args.image_size, torch.device(args.device))
    print(markdown_table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
