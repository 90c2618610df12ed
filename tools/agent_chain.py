"""The README's chained example: a conversation with the agent about a synthetic image, drawn as one
picture (the first turn's drawing, the last turn's crop, every turn's request, plan steps and answer).

    python tools/agent_chain.py --checkpoint work_dirs/demo/iter_600.pth --out docs/images/agent_chain.png

By default turn 1 finds the stars and circles (the model's detect task, drawn), and turn 2, "crop the
largest star and describe it", works on what turn 1 found through the conversation's memory. The image
is the first synthetic one (seed 24, 256 px) holding at least two stars and a circle; the script prints
its ground truth beside what the model found, so a poor checkpoint shows as such.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from visionllm.agent import Agent, Reply
from visionllm.data.synthetic import generate_synthetic

REQUESTS = ("find the stars and circles", "crop the largest star and describe it")
WIDTH, MARGIN, TEXT_WIDTH = 1040, 16, 500
INK, MUTED, BACKGROUND = (20, 20, 20), (90, 90, 110), (250, 250, 248)


def pick_image(folder: Path, seed: int = 24) -> tuple[Path, Counter]:
    """The first synthetic image with at least two stars and a circle, and its classes' counts."""
    paths = generate_synthetic(folder, num_images=40, image_size=256, seed=seed, min_objects=4, max_objects=6)
    coco = json.loads(paths["train"].read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for image in coco["images"]:
        counts = Counter(names[a["category_id"]] for a in coco["annotations"] if a["image_id"] == image["id"])
        if counts["star"] >= 2 and counts["circle"] >= 1:
            return folder / "images" / image["file_name"], counts
    raise RuntimeError("no synthetic image with two stars and a circle")


def load_font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans where it is installed (it has the arrows and the ²), else Pillow's own font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def step_line(entry) -> str:
    """``s1 detect(image=$input, classes=['star'])``: a trace entry as the plan wrote it."""
    args = ", ".join(
        f"{k}={v}" if isinstance(v, str) and v.startswith("$") else f"{k}={v!r}"
        for k, v in entry.args.items()
    )
    return f"{entry.step} {entry.tool}({args})" + (f"  failed: {entry.error}" if entry.error else "")


def compose(turns: list[tuple[str, Reply]]) -> Image.Image:
    """One picture: on the left the first image a turn answered (turn 1's drawing); on the right each
    turn's request, plan steps and answer, then the last turn's images (its crops, enlarged)."""
    font, bold = load_font(14), load_font(16)
    lines: list[tuple[str, tuple[int, int, int], ImageFont.FreeTypeFont]] = []
    for k, (text, reply) in enumerate(turns, 1):
        lines.append((f"Turn {k}: \u201c{text}\u201d", INK, bold))
        lines += [(f"  {step_line(entry)}", MUTED, font) for entry in reply.trace]
        answer = textwrap.wrap(reply.text, 58, max_lines=6, placeholder=" ...")
        lines += [(("  \u2192 " if n == 0 else "     ") + part, INK, font) for n, part in enumerate(answer)]
        lines.append(("", INK, font))
    first_paths = [path for _, reply in turns for path in reply.image_paths][:1]
    left_width = WIDTH - TEXT_WIDTH - 3 * MARGIN
    left = None
    if first_paths:
        left = Image.open(first_paths[0]).convert("RGB")
        left = left.resize(
            (left_width, round(left.height * left_width / left.width)), Image.Resampling.LANCZOS
        )
    crops = [Image.open(path).convert("RGB") for path in turns[-1][1].image_paths if path not in first_paths]
    crops = [c.resize((round(c.width * 150 / c.height), 150), Image.Resampling.NEAREST) for c in crops[:3]]
    text_height = 22 * len(lines) + (180 if crops else 0)
    canvas = Image.new("RGB", (WIDTH, max(text_height, left.height if left else 0) + 2 * MARGIN), BACKGROUND)
    if left is not None:
        canvas.paste(left, (MARGIN, MARGIN))
    draw = ImageDraw.Draw(canvas)
    x, y = left_width + 2 * MARGIN, MARGIN
    for text, colour, face in lines:
        draw.text((x, y), text, fill=colour, font=face)
        y += 22
    for crop in crops:
        canvas.paste(crop, (x, y))
        draw.text((x, y + 156), f"turn {len(turns)}: crop, enlarged", fill=MUTED, font=font)
        x += crop.width + MARGIN
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="work_dirs/demo/iter_600.pth")
    parser.add_argument("--config", help="default: the config saved in the checkpoint")
    parser.add_argument("--out", type=Path, default=Path("docs/images/agent_chain.png"))
    parser.add_argument("--request", action="append", help=f"a turn (repeatable; default: {REQUESTS})")
    parser.add_argument("--score-thr", type=float, default=0.3)
    args = parser.parse_args()
    if not Path(args.checkpoint).is_file():
        parser.error(f"no checkpoint at {args.checkpoint}: `make demo` trains one, or pass --checkpoint")

    from visionllm.apis import Predictor

    predictor = Predictor.from_checkpoint(args.config, args.checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        image, truth = pick_image(Path(folder) / "synthetic")
        agent = Agent(predictor, memory_dir=Path(folder) / "memory", score_thr=args.score_thr)
        turns = []
        for k, text in enumerate(args.request or REQUESTS):
            reply = agent.chat(image if k == 0 else None, text)
            turns.append((text, reply))
            print(f"> {text}\n  " + "\n  ".join(step_line(e) for e in reply.trace) + f"\n  {reply.text}")
        picture = compose(turns)
    print(f"ground truth of {image.name}: " + ", ".join(f"{n} {c}" for c, n in truth.most_common()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.quantize(colors=128).save(args.out, optimize=True)  # a palette keeps it small
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
