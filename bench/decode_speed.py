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

import os
import platform
import sys
from functools import partial
from pathlib import Path

import visionllm  # noqa: F401  (its platform fixes must run before mmdet / mmcv are imported)

# isort: split
import torch
from mmengine.config import Config

from visionllm.data.synthetic import CLASSES
from visionllm.models.decoding import Grammar
from visionllm.models.visionllm import VisionLLM
from visionllm.registry import MODELS, register_all_modules
from visionllm.tasks.base import Request, Task

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import (
    REPO,
    add_device,
    add_object_counts,
    argument_parser,
    repeats_per_count,
    table,
    timed,
    timing_row,
    write_json,
)

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
        row = timing_row(count, repeat, times)
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
    return table(
        "objects | parallel ms | autoregressive ms | AR / parallel | of which image tokenizer ms",
        "{objects} | {parallel_ms:.1f} | {autoregressive_ms:.1f} | {ratio:.1f}x | {image_tokenizer_ms:.1f}",
        report["results"],
        align="rrrrr",
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser(__doc__)
    parser.add_argument("--config", default=str(REPO / "configs/_base_/models/visionllm_tiny.py"))
    add_object_counts(parser)
    parser.add_argument("--image-size", type=int, default=256)
    add_device(parser)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/decode_speed.json")
    args = parser.parse_args(argv)
    repeats = repeats_per_count(parser, args)
    torch.set_num_threads(args.threads)
    register_all_modules()
    report = run(args.config, args.objects, repeats, args.image_size, torch.device(args.device))
    print(markdown_table(report))
    write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
