"""Convert Pascal VOC XML annotations to one COCO JSON file; see ``visionllm.data.voc2coco``.

Example: ``python datasets/voc2coco.py data/VOCdevkit/VOC2007 data/voc07_trainval.json --split trainval``
"""

import argparse
import sys
from pathlib import Path

# The repository root, so the script also runs from a checkout without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from visionllm.cli import add_debug_flag, run_command  # noqa: E402
from visionllm.data.voc2coco import convert_voc  # noqa: E402


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "source", type=Path, help="VOC root (Annotations/, ImageSets/Main/) or a directory of XMLs"
    )
    parser.add_argument("out_json", type=Path)
    parser.add_argument("--classes", nargs="+", help="category order (default: sorted names found)")
    parser.add_argument("--split", help="ImageSets/Main/<split>.txt of a VOC root, e.g. trainval")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    coco = convert_voc(args.source, args.out_json, classes=args.classes, split=args.split, progress=True)
    print(
        f"{args.out_json}: {len(coco['images'])} images, {len(coco['annotations'])} annotations, "
        f"{len(coco['categories'])} categories"
    )


if __name__ == "__main__":
    sys.exit(run_command(main, "datasets/voc2coco.py"))
