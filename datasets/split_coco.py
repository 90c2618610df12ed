"""Split a COCO annotation file into train and held-out val files by a committed split file.

Apply a split (writes OUT_DIR/instances_train.json and OUT_DIR/instances_val.json)::

    python datasets/split_coco.py ../shared/data/coco128/annotations/instances_train2017.json \
        data/coco128_heldout --split datasets/splits/coco128_val26.json

Draw a new split file (uniform, seeded) instead of reading one: add ``--new NUM_VAL [--seed S]``.
"""

import argparse
import sys
from pathlib import Path

# The repository root, so the script also runs from a checkout without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from visionllm.cli import add_debug_flag, run_command  # noqa: E402
from visionllm.data.coco import load_coco_json  # noqa: E402
from visionllm.data.split import draw_split, write_split  # noqa: E402
from visionllm.fileio import write_json_atomic  # noqa: E402


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ann_file", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--split", type=Path, required=True, help="JSON file with 'val_image_ids'")
    parser.add_argument("--new", type=int, metavar="NUM_VAL", help="draw a new split into --split first")
    parser.add_argument("--seed", type=int, default=0)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.new is not None and args.split.exists():
        parser.error(f"{args.split} exists: a committed split is never overwritten")
    data = load_coco_json(str(args.ann_file))
    if args.new is not None:
        val_ids = draw_split(data, args.new, args.seed)
        write_json_atomic(dict(source=args.ann_file.name, seed=args.seed, val_image_ids=val_ids), args.split)
    train, val = write_split(data, args.split, args.out_dir)
    for name, part in (("train", train), ("val", val)):
        print(
            f"{args.out_dir / f'instances_{name}.json'}: {len(part['images'])} images, "
            f"{len(part['annotations'])} annotations"
        )


if __name__ == "__main__":
    sys.exit(run_command(main, "datasets/split_coco.py"))
