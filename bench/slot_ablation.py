"""What the LLM adds to its seed tokens: a checkpoint's parallel decoding with each part of a slot's answer
(class logits, location logits) taken from the LLM (its logits on top of the seed prior, as trained) or
from the seed prior alone (the visual token the slot starts from), beside the visual tokens' own decoding::

    python bench/slot_ablation.py configs/visionllm_tiny_synthetic.py work_dirs/x/iter_1000.pth \\
        --out bench/results/slot_ablation.json

A slot's logits are ``LLM + prior`` (``VisionLLM._slot_inputs``; plus the ``SlotRefiner``'s offsets from
the seed on location tokens, when the model has one): the prior puts the seed token's class
logits on the class position and a Laplace log-density around the seed box's coordinate on each location
token. "seed" classes replace the class logits by the prior alone; "seed" locations write the seed's box
(``Task.locations_from_seed``, the default of box tasks), so each row shows whether the LLM's classes or
its locations help or hurt. The last row decodes all visual tokens (``--decode tokens``), not only the N
slots' seeds. Scored on the config's test set with its evaluators (``model.eval_task=detect
test_evaluator.metric=bbox`` scores the box task of a detection + segmentation model).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import argument_parser, dash, table, write_json

import visionllm  # noqa: F401  (platform fixes first)

# isort: split
import visionllm.models.decoding as decoding
from visionllm.engine.launch import DictAction, load_config, testing_runner
from visionllm.models.visionllm import VisionLLM
from visionllm.tasks.base import Task

#: (label, decode mode, classes from, locations from)
ROWS = (
    ("LLM classes, LLM locations (parallel decoding of polygons)", "parallel", "llm", "llm"),
    ("seed classes, LLM locations", "parallel", "seed", "llm"),
    ("LLM classes, seed locations (parallel decoding of boxes)", "parallel", "llm", "seed"),
    ("seed classes, seed locations (the N seeds alone)", "parallel", "seed", "seed"),
    ("all visual tokens (--decode tokens)", "tokens", "-", "-"),
)
METRICS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "segm_mAP")


@contextmanager
def slot_answers_from(model: VisionLLM, classes: str, locations: str) -> Iterator[None]:
    """Within the block, parallel decoding takes a slot's class logits from ``"llm"`` (as trained: the
    LLM's logits plus the seed prior) or ``"seed"`` (the prior alone), and every object task's location
    tokens from the LLM's logits (plus prior) or the seed's box (``Task.locations_from_seed``), and the box
    reported beside them from their extent or the seed's (``Task.boxes_from_seed``)."""
    original = decoding.parallel_slot_logits

    def seed_classes(llm, visual_tokens, queries, slot_inputs, slot_priors=None, location_offsets=None):
        if slot_priors is None:
            raise ValueError("the checkpoint has no token detections (token_loss off), so no slot seeds")
        logits = original(llm, visual_tokens, queries, slot_inputs, slot_priors, location_offsets)
        for answer, prior in zip(logits, slot_priors):
            answer[:, 0] = prior[:, 0]
        return logits

    object_tasks = [task for task in model.tasks.values() if isinstance(task, Task)]
    for task in object_tasks:
        task.locations_from_seed = task.boxes_from_seed = locations == "seed"
    if classes == "seed":
        decoding.parallel_slot_logits = seed_classes
    try:
        yield
    finally:
        decoding.parallel_slot_logits = original
        for task in object_tasks:
            del task.locations_from_seed, task.boxes_from_seed  # the class's own choices again


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--work-dir", default="work_dirs/slot_ablation")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v ...")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runner = testing_runner(load_config(args.config, args.cfg_options, args.work_dir), args.checkpoint)
    rows = []
    for label, mode, classes, locations in ROWS:
        runner.model.decode_mode = mode
        with slot_answers_from(runner.model, classes, locations):
            metrics = runner.test()
        scores = {name: metrics.get(f"coco/{name}") for name in METRICS}
        rows.append(dict(decoder=label, **scores))
    cells = [[row["decoder"], *(dash(row[m], ".3f") for m in METRICS)] for row in rows]
    print(table(" | ".join(["decoder", *METRICS]), "", cells, align="l" + "r" * len(METRICS)))
    if args.out:
        write_json(args.out, dict(config=args.config, checkpoint=args.checkpoint, rows=rows))


if __name__ == "__main__":
    main()
