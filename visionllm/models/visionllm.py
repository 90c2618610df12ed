"""VisionLLM: image + instruction -> language-guided visual tokens -> LLM -> task tokens -> objects.

    images (B,3,H,W), requests (task, class list, instruction text)
      image_tokenizer(images, plain instruction text)   -> visual tokens (B,M,D) + their boxes
      training: a DETR-style loss on the tokens' boxes and classes (``token_loss``), so they localise
      prompt ids: <image>*M + instruction tokens        -> (B,T) with the visual tokens spliced in
      training: parallel slots (Hungarian-matched set loss) and/or teacher-forced autoregressive loss
      predict:  parallel (one pass) or autoregressive (grammar-constrained greedy) decoding
      task.parse(tokens) -> objects -> Prediction in original-image pixels (``generate``); the Runner's
      ``predict`` hands them to mmdet metrics as ``pred_instances``

The model knows no task by name: tasks are built from the config and looked up by their name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.model import BaseModel
from mmengine.structures import InstanceData
from torch import Tensor, nn

from visionllm.models.decoding import (
    Grammar,
    LLMQuery,
    decode_autoregressive,
    decode_parallel,
    decode_tokens,
    embed_batch,
    parallel_slot_logits,
)
from visionllm.models.image_tokenizer import LanguageGuidedImageTokenizer, VisualTokens
from visionllm.models.llm import LanguageModel
from visionllm.models.loss import SlotLoss, TokenDetectionLoss, expected_bins, sequence_loss
from visionllm.models.matcher import HungarianMatcher
from visionllm.models.serialization import PretrainedMixin, init_kwargs
from visionllm.registry import MODELS
from visionllm.structures import Prediction
from visionllm.tasks import build_task
from visionllm.tasks.base import ImageAnnotations, Request, Task
from visionllm.tasks.grounding import NoReferentError

TRAIN_MODES = ("parallel", "autoregressive")
DECODE_MODES = (*TRAIN_MODES, "tokens")  # tokens: the image tokenizer's detections, no LLM


def check_decode_mode(mode: str, has_token_loss: bool) -> None:
    """Raise unless ``mode`` is a decoder this model can run (``tokens`` needs trained token detections)."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode '{mode}' is not one of {DECODE_MODES}")
    if mode == "tokens" and not has_token_loss:
        raise ValueError("decode mode 'tokens' needs token_loss: untrained tokens detect nothing")


@MODELS.register_module()
class VisionLLM(PretrainedMixin, BaseModel):
    """The generalist model. See the module docstring for the data flow.

    Args:
        image_tokenizer: kwargs of ``LanguageGuidedImageTokenizer`` (``llm_dims`` is filled in).
        llm: kwargs of ``LanguageModel``.
        tasks: task name -> options; ``weight`` (training sampling weight) is popped, the rest goes to
            the task, e.g. ``dict(detect=dict(weight=1.0), segment=dict(weight=1.0, num_points=16))``.
        eval_task: the task whose request is made for images that come without one (COCO evaluation).
        num_slots: N, the object slots of parallel decoding (an upper bound on objects per image).
        train_modes: decoders trained each step, from ``TRAIN_MODES``.
        decode_mode: the decoder ``predict`` (the Runner's evaluation) and ``generate`` use unless told
            another, from ``DECODE_MODES`` (``tokens`` reads the tokenizer's detections and needs
            ``token_loss``).
        max_objects: cap on objects per image (parallel and tokens decoding rank (slot, class) pairs
            and keep this many; autoregressive decoding stops there).
        token_loss: kwargs of ``TokenDetectionLoss`` on the visual tokens; None turns it off. When on,
            the parallel slots start from the most confident tokens (see ``_slot_inputs``), so
            ``num_slots`` must not exceed ``image_tokenizer.num_queries``.
        class_names: the dataset's classes (set from the dataset by ``ClassNamesHook`` when None).
    """

    def __init__(
        self,
        image_tokenizer: dict,
        llm: dict,
        tasks: dict[str, dict],
        eval_task: str = "detect",
        num_slots: int = 16,
        train_modes: Sequence[str] = TRAIN_MODES,
        decode_mode: str = "parallel",
        max_objects: int = 100,
        matcher: dict | None = None,
        slot_loss: dict | None = None,
        token_loss: dict | None = None,
        sequence_loss_weight: float = 1.0,
        class_names: Sequence[str] | None = None,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.init_config = init_kwargs(locals())  # saved by save_pretrained (config.json)
        for mode in train_modes:
            if mode not in TRAIN_MODES:
                raise ValueError(f"train mode '{mode}' is not one of {TRAIN_MODES}")
        check_decode_mode(decode_mode, token_loss is not None)
        self.llm = LanguageModel(**llm)
        self.image_tokenizer = LanguageGuidedImageTokenizer(**image_tokenizer, llm_dims=self.llm.hidden_size)
        self.slot_embed = nn.Parameter(torch.randn(num_slots, self.llm.hidden_size) * 0.02)
        # a slot's seed token enters through this map, zero at first: visual tokens are ~10x larger than
        # the format-token embeddings and would otherwise drown which coordinate a position predicts
        self.slot_seed_proj = nn.Linear(self.llm.hidden_size, self.llm.hidden_size)
        nn.init.zeros_(self.slot_seed_proj.weight)
        nn.init.zeros_(self.slot_seed_proj.bias)
        # log of the Laplace prior's slope in logits per bin: exp(-1.5) ~ 0.22, 10 bins off = -2.2
        self.bin_prior_scale = nn.Parameter(torch.tensor(-1.5))
        self.tasks: dict[str, Task] = {}
        self.task_weights: dict[str, float] = {}
        for name, options in tasks.items():
            options = dict(options)
            weight = options.pop("weight", 1.0)
            task = build_task(name, self.llm.vocab, **options)
            self.tasks[task.name] = task
            self.task_weights[task.name] = weight
        self.eval_task = build_task(eval_task, self.llm.vocab).name
        if self.eval_task not in self.tasks:
            raise ValueError(f"eval_task '{eval_task}' is not among the model's tasks {list(self.tasks)}")
        self.train_modes = tuple(train_modes)
        self.decode_mode = decode_mode
        self.max_objects = max_objects
        self.matcher = HungarianMatcher(**(matcher or {}))
        self.slot_loss = SlotLoss(**(slot_loss or {}))
        self.token_loss = TokenDetectionLoss(**token_loss) if token_loss is not None else None
        if self.token_loss is not None and num_slots > self.image_tokenizer.num_queries:
            raise ValueError(
                f"num_slots ({num_slots}) exceeds image_tokenizer.num_queries "
                f"({self.image_tokenizer.num_queries}): with token_loss each slot starts from its own token"
            )
        if self.token_loss is None and self.image_tokenizer.two_stage:
            raise ValueError("image_tokenizer.two_stage needs token_loss: it trains the proposals it selects")
        self.sequence_loss_weight = sequence_loss_weight
        self.class_names = list(class_names) if class_names is not None else None
        self.grammar = Grammar(self.llm.vocab.num_tokens)

    @property
    def vocab(self):
        return self.llm.vocab

    # ----------------------------------------------------------------- inputs
    def prompt_ids(self, request: Request) -> list[int]:
        """``<image>`` x M, then the instruction's tokens (class references stay single tokens)."""
        text_ids = self.vocab.tokenizer(request.text, add_special_tokens=False).input_ids
        return [self.vocab.image_id] * self.image_tokenizer.num_queries + text_ids

    def _query(self, task: Task, request: Request) -> LLMQuery:
        prompt = self.prompt_ids(request)
        classes = [self.vocab.class_id(k) for k in range(len(request.classes))]
        missing = [f"<c{k}>" for k, c in enumerate(classes) if c not in prompt]
        if missing:
            raise ValueError(f"the instruction never writes {missing}: {request.text!r}")
        return LLMQuery(task, request, prompt, [prompt.index(c) for c in classes])

    def _check_context(self, query: LLMQuery, mode: str) -> None:
        """Refuse a request whose prompt and answer do not fit the LLM's positions: past them a
        position-embedded LM fails and a rotary one reads positions it never saw (and finds nothing)."""
        context = self.llm.context_length
        if context is None:
            return
        object_length = query.task.object_length
        # parallel decoding writes every slot at once; autoregressive decoding needs room for one object
        answer = self.slot_embed.shape[0] * object_length if mode == "parallel" else object_length + 1
        needed = len(query.prompt_ids) + answer
        if needed > context:
            text = len(query.prompt_ids) - self.image_tokenizer.num_queries
            raise ValueError(
                f"the instruction is too long for the LLM: {text} instruction tokens + "
                f"{self.image_tokenizer.num_queries} visual tokens + {answer} answer positions ({mode}) = "
                f"{needed} positions, but the LLM has {context}; shorten the instruction or split its "
                f"{len(query.request.classes)} classes over several requests"
            )

    def _annotations(self, sample: DetDataSample) -> ImageAnnotations:
        gt = sample.gt_instances
        boxes = gt.bboxes.tensor if hasattr(gt.bboxes, "tensor") else gt.bboxes
        polygons = (
            [[np.asarray(p, dtype=np.float64) for p in parts] for parts in gt.masks.masks]
            if "masks" in gt
            else []
        )
        return ImageAnnotations(
            boxes=boxes.detach().cpu().numpy(),
            labels=gt.labels.cpu().numpy(),
            polygons=polygons,
            attributes=list(sample.metainfo.get("instance_attributes", [{}] * len(gt))),
            canvas_size=self._canvas_size(sample.metainfo),
        )

    @staticmethod
    def _canvas_size(meta: Mapping) -> int:
        """Location bins span the padded input square: its side in model-input pixels (from an
        image's metainfo)."""
        return int(max(meta.get("pad_shape") or meta["batch_input_shape"]))

    def _class_names(self) -> list[str]:
        if self.class_names is None:
            raise RuntimeError("VisionLLM.class_names is unset: add ClassNamesHook or set model.class_names")
        return self.class_names

    def _sample_request(
        self, annotations: ImageAnnotations, rng: np.random.Generator
    ) -> tuple[Task, Request]:
        """Draw a task by the configured weights and let it sample a request; a task that cannot
        phrase one for this image (grounding without an unambiguous referent) passes to the next."""
        names = list(self.task_weights)
        weights = np.asarray([self.task_weights[n] for n in names], dtype=np.float64)
        order = rng.choice(len(names), size=len(names), replace=False, p=weights / weights.sum())
        for index in order:
            task = self.tasks[names[index]]
            try:
                return task, task.sample_request(self._class_names(), annotations, rng)
            except NoReferentError:
                continue
        raise NoReferentError(f"no task among {names} can phrase a request for this image")

    def forward(self, inputs: Tensor, data_samples: list[DetDataSample] | None = None, mode: str = "tensor"):
        """mmengine's entry point: ``loss`` (dict of losses), ``predict`` (samples with
        ``pred_instances``) or ``tensor`` (the visual tokens of the eval request, for inspection)."""
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            request = self.tasks[self.eval_task].request_for_eval(self._class_names())
            return self.image_tokenizer(inputs, [request.plain_text] * inputs.shape[0]).embeds
        raise ValueError(f"mode '{mode}' is not one of loss, predict, tensor")

    # ------------------------------------------------------------------ train
    def loss(self, inputs: Tensor, data_samples: list[DetDataSample]) -> dict[str, Tensor]:
        """Sample an instruction per image, then score the enabled decoders against its targets."""
        rng = np.random.default_rng(
            int(torch.randint(0, 2**31 - 1, ()).item())
        )  # follows the seeded torch RNG
        queries, targets = [], []
        for sample in data_samples:
            annotations = self._annotations(sample)
            task, request = self._sample_request(annotations, rng)
            queries.append(self._query(task, request))
            targets.append(task.encode_objects(request, annotations, self._class_names()))
        tokens = self.image_tokenizer(inputs, [q.request.plain_text for q in queries])
        token_class_logits = None
        losses: dict[str, Tensor] = {}
        if self.token_loss is not None:
            layer_class_logits = self.image_tokenizer.class_logits(
                tokens.layer_features, [q.request.classes for q in queries]
            )  # per image (L, M, n)
            token_class_logits = [logits[-1] for logits in layer_class_logits]
            losses.update(
                self.token_loss(
                    tokens.layer_boxes,
                    layer_class_logits,
                    [t.boxes for t in targets],
                    [t.class_index for t in targets],
                    canvas=tokens.canvas,
                    proposal_boxes=tokens.proposal_boxes,
                    proposal_logits=tokens.proposal_logits,
                )
            )
        if "parallel" in self.train_modes:
            slot_inputs, slot_priors, seeds = self._slot_inputs(
                tokens, token_class_logits, queries, [self._canvas_size(s.metainfo) for s in data_samples]
            )
            slot_logits = parallel_slot_logits(self.llm, tokens.embeds, queries, slot_inputs, slot_priors)
            losses.update(self._parallel_loss(slot_logits, queries, targets, seeds))
        if "autoregressive" in self.train_modes:
            losses["loss_sequence"] = self._sequence_loss(tokens.embeds, queries, targets)
        return losses

    def _token_class_logits(self, tokens: VisualTokens, queries: list[LLMQuery]) -> list[Tensor] | None:
        """Per image (M, n) class logits of the visual tokens; None when the token loss is off (untrained)."""
        if self.token_loss is None:
            return None
        return self.image_tokenizer.class_logits(tokens.features, [q.request.classes for q in queries])

    def _slot_inputs(
        self,
        tokens: VisualTokens,
        token_class_logits: list[Tensor] | None,
        queries: list[LLMQuery],
        canvas_sizes: list[int],
    ) -> tuple[Tensor, list[Tensor] | None, list[tuple[Tensor, Tensor]] | None]:
        """Each parallel slot's input embedding (B,N,D), prior logits (per image (N, L, V)) and seed
        detection (per image: class probabilities (N, n), location in fractional bins (N, L-1)).

        With trained token detections, the N most confident visual tokens seed the N slots (in token
        order, as two-stage DETRs select their queries). A seed's embedding, mapped by
        ``slot_seed_proj``, joins the slot's own; its detection becomes the slot's prior: its class
        logits on the class references, and on each location token a Laplace log-density (scale
        learnt, ``bin_prior_scale``) around the coordinate its box implies (``Task.geometry_from_boxes``).
        The LLM's logits refine that prior, as each Deformable DETR decoder layer refines the last box.
        Without token detections the slots are the learned embeddings alone (priors and seeds None).
        """
        slots = self.slot_embed.unsqueeze(0).expand(tokens.embeds.shape[0], -1, -1)  # (B,N,D)
        if token_class_logits is None:
            return slots, None, None
        num_slots = slots.shape[1]
        chosen = torch.stack(
            [
                logits.detach().max(-1).values.topk(num_slots).indices.sort().values
                for logits in token_class_logits
            ]
        )  # (B,N) the most confident tokens, in token order
        seeds = self.slot_seed_proj(
            tokens.embeds.gather(1, chosen.unsqueeze(-1).expand(-1, -1, slots.shape[-1]))
        )
        boxes = self._token_boxes(tokens)
        bins = torch.arange(self.vocab.num_bins, device=slots.device, dtype=torch.float32)
        priors, detections = [], []
        for q, logits, index, image_boxes, canvas in zip(
            queries, token_class_logits, chosen, boxes, canvas_sizes
        ):
            coords = q.task.geometry_from_boxes(image_boxes[index].cpu().numpy(), canvas)  # (N, L-1)
            coords = torch.as_tensor(coords, dtype=torch.float32, device=slots.device)
            logits = logits.float()  # priors join the LLM's fp32 task logits
            prior = logits.new_zeros(num_slots, q.task.object_length, self.vocab.num_tokens)
            prior[:, 0, self.vocab.class_local_ids(len(q.request.classes)).to(prior.device)] = logits[index]
            distance = (bins - coords.unsqueeze(-1)).abs()  # (N, L-1, num_bins)
            prior[:, 1:, self.vocab.bin_local_ids()] = -self.bin_prior_scale.exp() * distance
            priors.append(prior)
            detections.append((logits[index].detach().sigmoid(), coords))
        return slots + seeds, priors, detections

    @staticmethod
    def _token_boxes(tokens: VisualTokens) -> Tensor:
        """(B,M,4) the visual tokens' boxes as fp32 xyxy pixels of the padded input (no gradient)."""
        height, width = tokens.canvas
        boxes = tokens.boxes.detach().float()
        return bbox_cxcywh_to_xyxy(boxes) * boxes.new_tensor([width, height] * 2)

    def _parallel_loss(
        self,
        slot_logits: list[Tensor],
        queries: list[LLMQuery],
        targets: list,
        seeds: list[tuple[Tensor, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """Slot set loss. Objects are matched to slots by the slots' seed detections when they have
        them: a slot then learns to refine the object its seed token found, not to override it."""
        vocab = self.vocab
        class_logits, class_targets, bin_logits, bin_targets = [], [], [], []
        for i, (q, target, logits) in enumerate(zip(queries, targets, slot_logits)):
            cls = logits[:, 0, vocab.class_local_ids(len(q.request.classes))]  # (N, n)
            bins = logits[:, 1:, vocab.bin_local_ids()]  # (N, L-1, num_bins)
            class_probs, locations = (
                seeds[i] if seeds is not None else (cls.detach().sigmoid(), expected_bins(bins.detach()))
            )
            slots, gts = self.matcher(class_probs, locations, target.class_index, target.bins, vocab.num_bins)
            slots = slots.to(cls.device)
            onehot = torch.zeros_like(cls)
            onehot[slots, target.class_index[gts].to(cls.device)] = 1.0
            class_logits.append(cls)
            class_targets.append(onehot)
            bin_logits.append(bins[slots].flatten(0, 1))  # (matched*(L-1), num_bins)
            bin_targets.append(target.bins[gts].to(cls.device).flatten())
        return self.slot_loss(class_logits, class_targets, torch.cat(bin_logits), torch.cat(bin_targets))

    def _sequence_loss(self, visual: Tensor, queries: list[LLMQuery], targets: list) -> Tensor:
        sequences, answers = [], []
        for q, target in zip(queries, targets):
            answer = q.task.target_sequence(target)
            sequences.append(q.prompt_ids + answer)
            answers.append(answer)
        embeds, mask, positions = embed_batch(self.llm, visual, sequences)
        hidden, _ = self.llm(embeds, mask, positions)
        length = hidden.shape[1]
        logits, legal, labels = [], [], []
        for i, (q, answer, seq) in enumerate(zip(queries, answers, sequences)):
            # the answer's k-th token is predicted from the position before it
            states = hidden[i, length - len(answer) - 1 : length - 1]
            logits.append(self.llm.task_logits(states, q.class_keys(hidden[i], embeds[i], length - len(seq))))
            n = len(q.request.classes)
            step = q.task.object_length
            legal.append(
                torch.stack([self.grammar.mask(q.task, k % step, n, False) for k in range(len(answer))])
            )
            labels.append(torch.as_tensor(self.vocab.to_local(answer)))
        logits = torch.cat(logits)
        return sequence_loss(
            logits,
            torch.cat(legal).to(logits.device),
            torch.cat(labels).to(logits.device),
            self.sequence_loss_weight,
        )

    # ---------------------------------------------------------------- predict
    def predict(self, inputs: Tensor, data_samples: list[DetDataSample]) -> list[DetDataSample]:
        """The Runner's evaluation path: the eval task's request over all dataset classes, decoded with
        ``decode_mode``; each answer becomes mmdet ``pred_instances`` (xyxy original-image pixels,
        dataset labels, RLE ``masks`` for tasks with shapes), which mmdet's ``CocoMetric`` reads."""
        request = self.tasks[self.eval_task].request_for_eval(self._class_names())
        predictions = self.generate(
            inputs, [request] * len(data_samples), [s.metainfo for s in data_samples], self.decode_mode
        )
        for sample, prediction in zip(data_samples, predictions):
            instances = InstanceData()
            instances.bboxes = torch.as_tensor(prediction.boxes, dtype=torch.float32).reshape(-1, 4)
            instances.scores = torch.as_tensor(prediction.scores, dtype=torch.float32)
            instances.labels = torch.as_tensor(prediction.labels, dtype=torch.long)
            if prediction.masks is not None:
                instances.masks = prediction.masks
            sample.pred_instances = instances
        return data_samples

    @torch.no_grad()
    def generate(
        self,
        inputs: Tensor,
        requests: Sequence[Request],
        image_metas: Sequence[Mapping],
        decode_mode: str | None = None,
    ) -> list[Prediction]:
        """Answer one request per image: the single path from model to results.

        Args:
            inputs: (B,3,H,W) preprocessed images (the data preprocessor's output).
            requests: per image, what to find (``visionllm.instructions`` makes them from text).
            image_metas: per image, the test pipeline's metainfo: ``ori_shape``, ``scale_factor`` and
                ``pad_shape`` (or ``batch_input_shape``), to map the answer back to original pixels.
            decode_mode: one of ``DECODE_MODES``; None = the model's ``decode_mode``.
        Returns:
            One :class:`Prediction` per image in original-image pixels; objects that lie wholly in the
            padding (no area once clipped to the image) are left out.
        """
        mode = decode_mode or self.decode_mode
        check_decode_mode(mode, self.token_loss is not None)
        queries = [self._query(self.tasks[request.task], request) for request in requests]
        if mode != "tokens":  # the tokens decoder reads no prompt
            for query in queries:
                self._check_context(query, mode)
        tokens = self.image_tokenizer(inputs, [q.request.plain_text for q in queries])  # (B,M,D)
        canvas_sizes = [self._canvas_size(meta) for meta in image_metas]
        if mode == "parallel":
            slot_inputs, slot_priors, _ = self._slot_inputs(
                tokens, self._token_class_logits(tokens, queries), queries, canvas_sizes
            )
            decoded = decode_parallel(
                self.llm, self.grammar, tokens.embeds, queries, slot_inputs, self.max_objects, slot_priors
            )
        elif mode == "autoregressive":
            decoded = decode_autoregressive(self.llm, self.grammar, tokens.embeds, queries, self.max_objects)
        else:
            decoded = decode_tokens(
                self.vocab,
                queries,
                self._token_class_logits(tokens, queries),
                self._token_boxes(tokens),
                canvas_sizes,
                self.max_objects,
            )
        predictions = []
        for q, seq, canvas, meta in zip(queries, decoded, canvas_sizes, image_metas):
            parsed = q.task.parse(seq.token_ids, q.request, canvas, seq.token_scores)
            with_shapes = "segm" in q.task.iou_types
            predictions.append(
                Prediction.from_parsed(parsed, q.request, meta, mode, self.class_names or (), with_shapes)
            )
        return predictions
