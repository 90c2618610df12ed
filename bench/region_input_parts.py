"""How much of a region's LLM input says where its box is: over the annotated boxes of a dataset's val
images, the mean norm of each input's content term (``PromptEncoder.region_out`` of the pooled features)
against how far the rest of the input (the box's position and relation terms) moves from box to box (the
mean distance of that rest from its mean). A small ratio means the LLM reads the box's place against a
content term many times larger, as it did before the content was normalised (docs/benchmarks.md, run 7).

    python bench/region_input_parts.py configs/visionllm_effnet_generalist.py work_dirs/X/iter_N.pth \\
        --out bench/results/region_input_parts.json

Each box is asked about alone (``What is <region>?``), on the config's test pipeline, through
``Predictor``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import annotated_images, argument_parser, table, write_json

from visionllm.models.visionllm import VisionLLM


def input_parts(model: VisionLLM, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> dict[str, float]:
    """Per image (1,3,H,W) model inputs and their (K,4) xyxy model-input boxes: the mean norm of the
    region inputs' content term, the mean distance of the remaining term from its mean, and their ratio."""
    content, rest = [], []
    with torch.no_grad():
        for pixels, image_boxes in zip(images, boxes):
            tokens = model.image_tokenizer(pixels, ["What is <region>?"])
            encoder = model.prompt_encoder
            one_each = [box[None] for box in image_boxes]  # every box alone in its request
            maps = [level.expand(len(one_each), -1, -1, -1) for level in tokens.feature_maps]
            content.append(encoder.region_out(encoder.region_features(maps, one_each, tokens.canvas)))
            rest.append(encoder.region_geometry(one_each, tokens.canvas))
    content_term, rest_term = torch.cat(content), torch.cat(rest)
    content_norm = float(content_term.norm(dim=-1).mean())
    rest_spread = float((rest_term - rest_term.mean(0)).norm(dim=-1).mean())
    return dict(
        boxes=len(content_term),
        content_norm=content_norm,
        position_spread=rest_spread,
        ratio=content_norm / max(rest_spread, 1e-12),
    )


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=int, default=50, help="val images to read (first N)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from mmengine.config import Config

    from visionllm.apis.inference import Predictor

    predictor = Predictor.from_checkpoint(args.config, args.checkpoint)
    cfg = Config.fromfile(args.config)
    annotated = annotated_images(predictor, cfg.val_dataloader.dataset, args.images)
    images = [pixels for pixels, _ in annotated]
    boxes = [torch.as_tensor(annotations.boxes, dtype=torch.float32) for _, annotations in annotated]
    row = dict(checkpoint=args.checkpoint, **input_parts(predictor.model, images, boxes))
    print(
        table(
            "checkpoint | boxes | content norm | position spread | ratio",
            "{checkpoint} | {boxes} | {content_norm:.2f} | {position_spread:.2f} | {ratio:.1f}",
            [row],
            "lrrrr",
        )
    )
    if args.out:
        write_json(args.out, row)


if __name__ == "__main__":
    main()
