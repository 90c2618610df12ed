"""Can the LLM read a region comparison from its inputs? Per comparison kind (is the first larger, which is
further left, the same colour), from a trained checkpoint:

    probe      a logistic regression on the request's two region inputs, fitted on train pairs and
               scored on val pairs: is the answer in what the LLM is given?
    LLM        the checkpoint's LLM on the val pairs (the kind's two answers' first tokens compared)
    LLM tuned  the same after ``--steps`` AdamW steps on that kind's train pairs with everything but
               the LLM frozen (its inputs computed once): can the LLM learn to read the answer there?

A kind whose probe is high but whose tuned LLM stays at chance has its answer in the inputs in a form
the LLM cannot pick up (docs/benchmarks.md, run 8: "further left" before the geometry term had a fixed
scale).

    python bench/region_readout.py configs/visionllm_effnet_generalist.py work_dirs/X/iter_N.pth \\
        --out bench/results/region_readout.json

Pairs: up to ``--pairs`` clear pairs per image (``RegionComparisonTask.clear_pairs``), asked with each
kind's first template, on the first ``--train-images`` train and ``--val-images`` val images.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import annotated_images, argument_parser, table, write_json

from visionllm.models.decoding import embed_batch
from visionllm.models.visionllm import VisionLLM
from visionllm.tasks.base import ImageAnnotations
from visionllm.tasks.regions import COMPARISONS, RegionComparisonTask

#: each kind's two answers: the one a probe labels 1, then the other
ANSWERS = {"larger": ("yes", "no"), "left": ("first", "second"), "color": ("yes", "no")}


def comparison_inputs(
    model: VisionLLM,
    images: list[tuple[torch.Tensor, ImageAnnotations]],
    kind: str,
    pairs_per_image: int,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The LLM's inputs for up to ``pairs_per_image`` clear ``kind`` pairs of every image: ``embeds`` /
    ``mask`` / ``positions`` (as ``embed_batch`` returns them), ``regions`` (N, 2 * D_llm) the two region
    inputs, and ``labels`` (N,) whether the answer is the kind's first answer."""
    task: RegionComparisonTask = model.tasks["region_compare"]
    template = task.templates.index(COMPARISONS[kind][0])
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = dict(embeds=[], mask=[], positions=[], regions=[], labels=[])
    with torch.no_grad():
        for pixels, annotations in images:
            pairs = task.clear_pairs(annotations, kind)
            if not pairs:
                continue
            chosen = [pairs[i] for i in rng.permutation(len(pairs))[:pairs_per_image]]
            requests = [task.request_about(list(pair), annotations, template) for pair in chosen]
            queries = [model._query(task, request) for request in requests]
            tokens = model.image_tokenizer(
                pixels.expand(len(requests), -1, -1, -1), [r.plain_text for r in requests]
            )
            model._fill_prompt_inputs(tokens, queries)
            embeds, mask, positions = embed_batch(
                model.llm,
                tokens.embeds,
                [q.prompt_ids for q in queries],
                prompt_inputs=[q.prompt_inputs for q in queries],
            )
            # every sequence of one image has the same length: the batch is padded per image only
            parts["embeds"].append(embeds)
            parts["mask"].append(mask)
            parts["positions"].append(positions)
            parts["regions"].append(torch.stack([q.prompt_inputs.flatten() for q in queries]))
            parts["labels"] += [
                task.answer(r, annotations, model._class_names()) == ANSWERS[kind][0] for r in requests
            ]
    lengths = {e.shape[1] for e in parts["embeds"]}
    if len(lengths) > 1:
        raise ValueError(
            f"{kind} requests differ in length ({sorted(lengths)}): one template per kind expected"
        )
    return dict(
        embeds=torch.cat(parts["embeds"]),
        mask=torch.cat(parts["mask"]),
        positions=torch.cat(parts["positions"]),
        regions=torch.cat(parts["regions"]),
        labels=torch.tensor(parts["labels"]),
    )


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor
) -> float:
    """Val accuracy of a logistic regression (standardised features, light L2) fitted by L-BFGS."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    weight = torch.zeros(train_x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")
    targets = train_y.float()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (
            F.binary_cross_entropy_with_logits(train_x @ weight + bias, targets)
            + 1e-3 * weight.square().sum()
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((val_x @ weight + bias > 0) == val_y).float().mean())


def llm_accuracy(llm: torch.nn.Module, inputs: dict[str, torch.Tensor], answer_ids: tuple[int, int]) -> float:
    """How often the LLM's first answer token prefers the right one of the kind's two answers."""
    with torch.no_grad():
        hidden, _ = llm(inputs["embeds"], inputs["mask"], inputs["positions"])
        logits = llm.text_logits(hidden[:, -1])
    prefers_first = logits[:, answer_ids[0]] > logits[:, answer_ids[1]]
    return float((prefers_first == inputs["labels"]).float().mean())


def tune_llm(
    llm: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    answer_ids: tuple[int, int],
    steps: int,
    lr: float,
    batch_size: int = 16,
    seed: int = 0,
) -> torch.nn.Module:
    """A copy of ``llm`` trained ``steps`` AdamW steps on the first answer token of ``inputs``' pairs
    (the LM loss over its whole vocabulary, as in training)."""
    tuned = copy.deepcopy(llm).train()
    optimizer = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    targets = torch.where(inputs["labels"], answer_ids[0], answer_ids[1])
    for _ in range(steps):
        rows = torch.randint(len(targets), (batch_size,), generator=generator)
        hidden, _ = tuned(inputs["embeds"][rows], inputs["mask"][rows], inputs["positions"][rows])
        loss = F.cross_entropy(tuned.text_logits(hidden[:, -1]), targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return tuned.eval()


def readout(
    model: VisionLLM,
    train_images: list[tuple[torch.Tensor, ImageAnnotations]],
    val_images: list[tuple[torch.Tensor, ImageAnnotations]],
    kinds: list[str],
    pairs_per_image: int,
    steps: int,
    lr: float,
) -> list[dict]:
    """One row per comparison kind: its pair counts, the probe's, the LLM's and the tuned LLM's accuracy."""
    tokenizer = model.vocab.tokenizer
    rows = []
    for kind in kinds:
        answer_ids = tuple(tokenizer(word, add_special_tokens=False).input_ids[0] for word in ANSWERS[kind])
        train = comparison_inputs(model, train_images, kind, pairs_per_image)
        val = comparison_inputs(model, val_images, kind, pairs_per_image)
        tuned = tune_llm(model.llm, train, answer_ids, steps, lr)
        rows.append(
            dict(
                kind=kind,
                train_pairs=len(train["labels"]),
                val_pairs=len(val["labels"]),
                val_share_first_answer=float(val["labels"].float().mean()),
                probe=linear_probe(train["regions"], train["labels"], val["regions"], val["labels"]),
                llm=llm_accuracy(model.llm, val, answer_ids),
                llm_tuned=llm_accuracy(tuned, val, answer_ids),
            )
        )
    return rows


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--kinds", nargs="+", default=list(COMPARISONS), choices=list(COMPARISONS))
    parser.add_argument("--train-images", type=int, default=300)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=4, help="clear pairs per image and kind, at most")
    parser.add_argument("--steps", type=int, default=300, help="AdamW steps of the LLM alone")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from mmengine.config import Config

    from visionllm.apis.inference import Predictor

    torch.manual_seed(0)
    predictor = Predictor.from_checkpoint(args.config, args.checkpoint)
    cfg = Config.fromfile(args.config)
    train_images = annotated_images(predictor, cfg.train_dataloader.dataset, args.train_images)
    val_images = annotated_images(predictor, cfg.val_dataloader.dataset, args.val_images)
    rows = readout(predictor.model, train_images, val_images, args.kinds, args.pairs, args.steps, args.lr)
    print(
        table(
            "comparison | train / val pairs | probe on the inputs | LLM | LLM tuned alone",
            "{kind} | {train_pairs} / {val_pairs} | {probe:.3f} | {llm:.3f} | {llm_tuned:.3f}",
            rows,
            "lrrrr",
        )
    )
    if args.out:
        write_json(args.out, dict(checkpoint=args.checkpoint, steps=args.steps, lr=args.lr, rows=rows))


if __name__ == "__main__":
    main()
