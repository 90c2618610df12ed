"""The decoders: two over the same LLM weights, and the image tokenizer's own detections.

parallel ("output format as query"): after the prompt come N object slots, each the task's output-format
    tokens (``<cls> <x1> <y1> <x2> <y2>`` for a box) plus a learned slot embedding. One forward pass;
    the hidden state at each format token predicts that token's value (a class reference or a bin).
autoregressive: greedy generation with a KV cache, constrained at every step to the tokens the task
    grammar allows (class reference or ``<eoo>`` at an object's start, then location bins).

tokens: no LLM; the best (visual token, class) pairs of the tokenizer's detection head, each written as
    task tokens (its class reference, then the bins its box implies), so the same parser reads them.
text: answers in words (``TextTask``): greedy generation over the tokenizer's own vocabulary with a KV
    cache, until the end token or ``max_tokens``.

All work on a batch of ``LLMQuery`` (one per image) whose prompts are left-padded, so every sample's
answer ends at the last position and position ids count only real tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DynamicCache

from visionllm.models.llm import LanguageModel
from visionllm.tasks.base import Request, Task, TaskBase
from visionllm.vocab import TaskVocab


@dataclass
class LLMQuery:
    """One image's input to the LLM: its task, request and prompt ids (with the image placeholders).

    ``class_positions[k]`` is where ``<ck>`` stands in the prompt, right after the k-th class name.
    ``prompt_inputs`` (K,D) fill the prompt's ``<region>``/``<point>`` placeholders, in their order.
    The class pointer (``LanguageModel.task_logits``) matches against a key made of the LLM's final
    state there plus the input embedding of the name's last token: the embedding is a crisp identity
    of the name from the first step, the state adds the context of multi-token names.
    """

    task: TaskBase
    request: Request
    prompt_ids: list[int]
    class_positions: list[int]
    prompt_inputs: Tensor | None = None

    def class_keys(self, hidden: Tensor, embeds: Tensor, offset: int) -> Tensor:
        """(n,D) keys of this query's class references, from its rows (T,D) of a left-padded batch."""
        positions = torch.as_tensor(self.class_positions, device=hidden.device) + offset
        # equal say for both parts: embeddings are ~50x smaller than normalised final states
        return F.rms_norm(hidden[positions], hidden.shape[-1:]) + F.rms_norm(
            embeds[positions - 1], embeds.shape[-1:]
        )


@dataclass
class DecodedSequence:
    """Generated task tokens (global ids) and, per token, the probability the decoder gave it; for a task
    with ``boxes_from_seed``, per object its seed's xyxy box in fractional bins (``Task.parse``)."""

    token_ids: list[int]
    token_scores: list[float]
    object_boxes: list[list[float]] | None = None


class Grammar:
    """Legal-token masks over the task vocabulary, cached per (task, position, #classes, mode)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self._mask = lru_cache(maxsize=None)(self._build)

    def _build(self, task: Task, position: int, num_classes: int, parallel: bool) -> Tensor:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[task.legal_local_ids(position, num_classes, parallel)] = True
        return mask

    def mask(self, task: Task, position: int, num_classes: int, parallel: bool) -> Tensor:
        return self._mask(task, position, num_classes, parallel)

    def slot_masks(self, query: LLMQuery) -> Tensor:
        """(L, V) legal tokens at each position of one parallel slot."""
        n = len(query.request.classes)
        return torch.stack([self.mask(query.task, p, n, True) for p in range(query.task.object_length)])


def embed_batch(
    llm: LanguageModel,
    visual_tokens: Tensor,
    sequences: list[list[int]],
    slot_embeddings: list[Tensor | None] | None = None,
    prompt_inputs: list[Tensor | None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Left-pad token sequences, embed them and splice in the visual tokens and region/point inputs.

    Args:
        visual_tokens: (B,M,D), written over the M ``<image>`` placeholders of each sequence.
        sequences: B lists of global token ids.
        slot_embeddings: per sequence, (T_slots,D) added to its last T_slots embeddings, or None.
        prompt_inputs: per sequence, (K,D) written over its ``<region>``/``<point>`` placeholders in
            order (``LLMQuery.prompt_inputs``), or None.
    Returns:
        embeddings (B,T,D), attention mask (B,T), position ids (B,T).
    """
    device = visual_tokens.device
    length = max(len(s) for s in sequences)
    pad_id = llm.vocab.tokenizer.pad_token_id or 0
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(sequences), length), dtype=torch.long, device=device)
    for i, seq in enumerate(sequences):
        ids[i, length - len(seq) :] = torch.as_tensor(seq, device=device)
        mask[i, length - len(seq) :] = 1
    embeds = llm.embed(ids)  # (B,T,D)
    image = (ids == llm.vocab.image_id) & mask.bool()
    embeds = embeds.masked_scatter(image.unsqueeze(-1), visual_tokens.to(embeds.dtype))
    inputs = [rows for rows in (prompt_inputs or []) if rows is not None and len(rows)]
    if inputs:
        placeholders = ((ids == llm.vocab.region_id) | (ids == llm.vocab.point_id)) & mask.bool()
        embeds = embeds.masked_scatter(placeholders.unsqueeze(-1), torch.cat(inputs).to(embeds.dtype))
    if slot_embeddings is not None:
        extra = torch.zeros_like(embeds)
        for i, slot in enumerate(slot_embeddings):
            if slot is not None:
                extra[i, length - slot.shape[0] :] = slot
        embeds = embeds + extra
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    return embeds, mask, position_ids


def per_token(slot_inputs: Tensor, length: int) -> Tensor:
    """(N,D) one input per slot -> (N,L,D) the same on each of its ``length`` format tokens (a view)."""
    return slot_inputs.unsqueeze(1).expand(-1, length, -1)


def parallel_slot_logits(
    llm: LanguageModel,
    visual_tokens: Tensor,
    queries: list[LLMQuery],
    slot_inputs: Sequence[Tensor],
    slot_priors: list[Tensor] | None = None,
    location_offsets: Callable[[int, Tensor], Tensor | None] | None = None,
) -> list[Tensor]:
    """Prompt + N format-token slots through the LLM; returns per image (N, L, V) task logits.

    ``slot_inputs`` are added to the slots' format tokens: per image (N,L,D), one per token
    (``per_token`` repeats one input over a slot's L tokens). ``slot_priors`` (per image (N, L, V),
    optional) are logits added to the slots' outputs: what each slot's seed token already says about its
    object, which the LLM refines. ``location_offsets`` (optional) maps an image's index and its slots'
    location-token states (N, L-1, D) to logits (N, L-1, num_bins) added on the bins, or None
    (``SlotRefiner.offset_logits``).

    Images are batched by task, one forward pass per task: slot lengths differ by task (5 tokens for a
    box, 33 for a 16-point polygon), and padding a box request to a polygon request's N x 33 slot
    positions would multiply its attention cost (measured in ``bench/profile_train_step.py``).
    """
    num_slots = slot_inputs[0].shape[0]
    bins = llm.vocab.bin_local_ids()
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q.task.name, []).append(i)
    logits: list[Tensor | None] = [None] * len(queries)
    for indices in groups.values():
        length = queries[indices[0]].task.object_length
        sequences, extras = [], []
        for i in indices:
            sequences.append(queries[i].prompt_ids + queries[i].task.format_token_ids.tolist() * num_slots)
            extras.append(slot_inputs[i].flatten(0, 1))
        embeds, mask, positions = embed_batch(
            llm, visual_tokens[indices], sequences, extras, [queries[i].prompt_inputs for i in indices]
        )
        hidden, _ = llm(embeds, mask, positions)
        slots = hidden[:, hidden.shape[1] - num_slots * length :]  # (B_task, N*L, D)
        keys = [
            queries[i].class_keys(hidden[row], embeds[row], hidden.shape[1] - len(seq))
            for row, (i, seq) in enumerate(zip(indices, sequences))
        ]
        for row, (i, slot_logits) in enumerate(zip(indices, llm.task_logits(list(slots), keys))):
            slot_logits = slot_logits.view(num_slots, length, -1)
            if slot_priors is not None:
                slot_logits = slot_logits + slot_priors[i]
            offsets = (
                None
                if location_offsets is None
                else location_offsets(i, slots[row].view(num_slots, length, -1)[:, 1:])
            )
            if offsets is not None:
                slot_logits = slot_logits.index_add(2, bins.to(offsets.device), F.pad(offsets, (0, 0, 1, 0)))
            logits[i] = slot_logits
    return logits


def decode_parallel(
    llm: LanguageModel,
    grammar: Grammar,
    visual_tokens: Tensor,
    queries: list[LLMQuery],
    slot_inputs: Sequence[Tensor],
    max_objects: int,
    slot_priors: list[Tensor] | None = None,
    seed_locations: list[Tensor] | None = None,
    location_offsets: Callable[[int, Tensor], Tensor | None] | None = None,
) -> list[DecodedSequence]:
    """All objects in one pass: the ``max_objects`` most probable (slot, class) pairs, best first.

    A pair's score is the sigmoid of the slot's logit for that class reference at its class position
    (each class on its own, as ``SlotLoss`` trains it), so empty slots come out with low scores (kept,
    ranked, for mAP); a slot may answer with several classes for its one shape, as Deformable DETR's
    head ranks queries x classes. Each location token is the slot's most probable legal bin, or, for a
    task that takes its locations from the seeds (``Task.locations_from_seed``) when ``seed_locations``
    (per image (N, L-1) fractional bins of each slot's seed) are given, the seed's nearest bin.
    A task with ``boxes_from_seed`` also gets each object's seed box (the extent of its seed locations).
    ``slot_inputs``, ``slot_priors`` and ``location_offsets`` are ``parallel_slot_logits``'.
    """
    vocab = llm.vocab
    out = []
    slot_logits = parallel_slot_logits(
        llm, visual_tokens, queries, slot_inputs, slot_priors, location_offsets
    )
    for i, (q, logits) in enumerate(zip(queries, slot_logits)):
        class_probs = logits[:, 0, vocab.class_local_ids(len(q.request.classes))].sigmoid()  # (N,n)
        if seed_locations is not None and q.task.locations_from_seed:
            geometry_ids = _nearest_bin_ids(vocab, seed_locations[i].cpu().numpy())
        else:
            legal = grammar.slot_masks(q).to(logits.device)  # (L,V)
            locations = logits[:, 1:].masked_fill(~legal[1:], float("-inf")).argmax(-1)  # (N,L-1)
            geometry_ids = vocab.to_global(locations).tolist()
        seed_boxes = None
        if seed_locations is not None and q.task.boxes_from_seed:
            points = seed_locations[i].view(seed_locations[i].shape[0], -1, 2)  # (N, pairs, 2)
            seed_boxes = torch.cat([points.min(1).values, points.max(1).values], 1).tolist()
        out.append(_best_pairs(vocab, class_probs, geometry_ids, max_objects, seed_boxes))
    return out


def _nearest_bin_ids(vocab: TaskVocab, coords: np.ndarray) -> list[list[int]]:
    """(K, L-1) fractional bin coordinates -> each candidate's location tokens (global ids), nearest bins."""
    bins = np.clip(np.rint(coords), 0, vocab.num_bins - 1).astype(np.int64)
    return [[vocab.bin_id(int(b)) for b in row] for row in bins]


def _best_pairs(
    vocab: TaskVocab,
    class_probs: Tensor,
    geometry_ids: list[list[int]],
    max_objects: int,
    candidate_boxes: list[list[float]] | None = None,
) -> DecodedSequence:
    """The ``max_objects`` most probable (candidate, class) pairs of ``class_probs`` (K, n), best first,
    each written as its class reference and its candidate's geometry tokens (global ids); with
    ``candidate_boxes`` (K boxes), each pair's candidate's box as its ``object_boxes``."""
    best = class_probs.flatten().topk(min(max_objects, class_probs.numel()))
    token_ids, token_scores, boxes = [], [], []
    for score, flat in zip(best.values.tolist(), best.indices.tolist()):
        candidate, class_index = divmod(flat, class_probs.shape[1])
        token_ids += [vocab.class_id(class_index), *geometry_ids[candidate]]
        token_scores += [score] + [1.0] * len(geometry_ids[candidate])
        if candidate_boxes is not None:
            boxes.append(candidate_boxes[candidate])
    return DecodedSequence(
        token_ids + [vocab.eoo_id], token_scores + [1.0], None if candidate_boxes is None else boxes
    )


@torch.no_grad()
def decode_autoregressive(
    llm: LanguageModel,
    grammar: Grammar,
    visual_tokens: Tensor,
    queries: list[LLMQuery],
    max_objects: int,
) -> list[DecodedSequence]:
    """Greedy, grammar-constrained generation with a KV cache, all images of the batch in step."""
    vocab = llm.vocab
    device = visual_tokens.device
    batch = len(queries)
    eoo_local = vocab.to_local(vocab.eoo_id)
    embeds, mask, positions = embed_batch(
        llm, visual_tokens, [q.prompt_ids for q in queries], prompt_inputs=[q.prompt_inputs for q in queries]
    )
    hidden, cache = llm(embeds, mask, positions, cache=DynamicCache(config=llm.decoder.config))
    keys = [
        q.class_keys(hidden[i], embeds[i], hidden.shape[1] - len(q.prompt_ids)) for i, q in enumerate(queries)
    ]
    last = hidden[:, -1]  # (B,D)
    position = positions[:, -1]
    step_in_object = [0] * batch
    num_objects = [0] * batch
    done = [False] * batch
    generated = [DecodedSequence([], []) for _ in range(batch)]
    max_steps = max_objects * max(q.task.object_length for q in queries) + 1
    for _ in range(max_steps):
        legal = torch.stack(
            [
                grammar.mask(q.task, step_in_object[i], len(q.request.classes), False)
                for i, q in enumerate(queries)
            ]
        ).to(device)  # (B,V)
        for i in range(batch):
            if step_in_object[i] == 0 and num_objects[i] >= max_objects:
                legal[i] = False
                legal[i, eoo_local] = True
        logits = torch.cat(llm.task_logits(list(last.unsqueeze(1)), keys))
        probs = logits.masked_fill(~legal, float("-inf")).softmax(-1)
        score, token = probs.max(-1)
        for i, q in enumerate(queries):
            if done[i]:
                continue
            generated[i].token_ids.append(vocab.to_global(token[i].item()))
            generated[i].token_scores.append(score[i].item())
            if step_in_object[i] == 0 and token[i].item() == eoo_local:
                done[i] = True
                continue
            step_in_object[i] = (step_in_object[i] + 1) % q.task.object_length
            num_objects[i] += step_in_object[i] == 0
        if all(done):
            break
        mask = torch.cat([mask, mask.new_ones(batch, 1)], 1)
        position = position + 1
        step_embeds = llm.embed(torch.as_tensor(vocab.to_global(token.tolist()), device=device)[:, None])
        hidden, cache = llm(step_embeds, mask, position[:, None], cache=cache)
        last = hidden[:, -1]
    return generated


def decode_tokens(
    vocab: TaskVocab,
    queries: list[LLMQuery],
    class_logits: list[Tensor],
    boxes: Tensor,
    canvas_sizes: list[int],
    max_objects: int,
) -> list[DecodedSequence]:
    """The tokenizer's detections as answers: per image the ``max_objects`` most probable (token,
    class) pairs, each token's box (B,M,4 xyxy pixels) written as its task's bins."""
    out = []
    for q, logits, image_boxes, canvas in zip(queries, class_logits, boxes, canvas_sizes):
        geometry_ids = _nearest_bin_ids(vocab, q.task.geometry_from_boxes(image_boxes.cpu().numpy(), canvas))
        out.append(_best_pairs(vocab, logits.sigmoid(), geometry_ids, max_objects))
    return out


@torch.no_grad()
def decode_text(
    llm: LanguageModel, visual_tokens: Tensor, queries: list[LLMQuery], max_tokens: int
) -> list[DecodedSequence]:
    """Answers in words: greedy generation over the tokenizer's vocabulary (task tokens ruled out) with a
    KV cache, all images of the batch in step; each stops at the tokenizer's end token (kept last) or
    after ``max_tokens``. A token's score is the probability it was chosen with."""
    end = llm.vocab.text_end_id
    device = visual_tokens.device
    embeds, mask, positions = embed_batch(
        llm, visual_tokens, [q.prompt_ids for q in queries], prompt_inputs=[q.prompt_inputs for q in queries]
    )
    hidden, cache = llm(embeds, mask, positions, cache=DynamicCache(config=llm.decoder.config))
    position = positions[:, -1]
    generated = [DecodedSequence([], []) for _ in queries]
    done = [False] * len(queries)
    for _ in range(max_tokens):
        probs = llm.text_logits(hidden[:, -1]).softmax(-1)
        score, token = probs.max(-1)
        for i in range(len(queries)):
            if not done[i]:
                generated[i].token_ids.append(int(token[i]))
                generated[i].token_scores.append(float(score[i]))
                done[i] = int(token[i]) == end
        if all(done):
            break
        mask = torch.cat([mask, mask.new_ones(len(queries), 1)], 1)
        position = position + 1
        hidden, cache = llm(llm.embed(token[:, None].to(device)), mask, position[:, None], cache=cache)
    return generated
