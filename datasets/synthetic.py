"""Generate VisionLLM's synthetic shapes dataset (COCO JSON + PNGs); see ``visionllm.data.synthetic``.

Example: ``python datasets/synthetic.py --out data/synthetic --num-images 200 --image-size 256 --seed 0``
"""

import argparse
import sys
from pathlib import Path

# The repository root, so the script also runs from a checkout without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from visionllm.data.synthetic import generate_synthetic  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("data/synthetic"), help="output directory")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--max-objects", type=int, default=6)
    parser.add_argument("--min-objects", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        paths = generate_synthetic(
            args.out,
            num_images=args.num_images,
            image_size=args.image_size,
            seed=args.seed,
            val_fraction=args.val_fraction,
            max_objects=args.max_objects,
            min_objects=args.min_objects,
        )
    except ValueError as error:
        parser.error(str(error))
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
