"""VisionLLM: image + instruction -> language-guided visual tokens -> LLM -> task tokens -> objects.

    images (B,3,H,W), requests (task, class list, instruction text)
      image_tokenizer(images, plain instruction text)   -> visual tokens (B,M,D) + their boxes
      training: a DETR-style loss on the tokens' boxes and classes (``token_loss``), so they localise
      prompt ids: <image>*M + instruction tokens        -> (B,T) with the visual tokens spliced in
      training: parallel slots (Hungarian-matched set loss) and/or teacher-forced autoregressive loss
      predict:  parallel (one pass) or autoregressive (grammar-constrained greedy) decoding
      task.parse(tokens) -> objects -> Prediction in original-image pixels (``generate``); the Runner's
      ``predict`` hands them to mmdet metrics as ``pred_instances``
    region / point inputs: each <region> / <point> placeholder of the instruction is written over with
      RoI / point features from the tokenizer's maps (``PromptEncoder``)
    answers in words (``TextTask``): LM loss on the answer's tokens; greedy decoding over the vocabulary

The model knows no task by name: tasks are built from the config and looked up by their name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.layers import MLP
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_overlaps
from mmengine.model import BaseModel
from mmengine.structures import InstanceData
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from visionllm.models.decoding import (
    Grammar,
    LLMQuery,
    decode_autoregressive,
    decode_parallel,
    decode_text,
    decode_tokens,
    embed_batch,
    parallel_slot_logits,
    per_token,
)
from visionllm.models.image_tokenizer import LanguageGuidedImageTokenizer, VisualTokens
from visionllm.models.llm import LanguageModel
from visionllm.models.loss import SlotLoss, TokenDetectionLoss, expected_bins, sequence_loss
from visionllm.models.matcher import HungarianMatcher
from visionllm.models.prompt_encoder import PromptEncoder
from visionllm.models.serialization import PretrainedMixin, init_kwargs
from visionllm.models.slot_refiner import SlotRefiner
from visionllm.registry import MODELS
from visionllm.structures import Prediction
from visionllm.tasks import build_task
from visionllm.tasks.base import ImageAnnotations, Request, Task, TaskBase, TextTask
from visionllm.tasks.grounding import NoReferentError
from visionllm.tasks.points import visible_point
from visionllm.tasks.regions import jitter_box
from visionllm.vocab import POINT, REGION

_PLACEHOLDER = re.compile(f"{re.escape(REGION)}|{re.escape(POINT)}")

TRAIN_MODES = ("parallel", "autoregressive")
#: A visual token learns the attributes of the object its box overlaps this much (``loss_token_attribute``).
ATTRIBUTE_IOU = 0.5
DECODE_MODES = (*TRAIN_MODES, "tokens")  # tokens: the image tokenizer's detections, no LLM


def _rows(values: Sequence, width: int, device: torch.device) -> Tensor:
    """A list of coordinate rows (possibly empty) as a (K, width) float tensor."""
    return torch.as_tensor(np.asarray(values), dtype=torch.float32, device=device).reshape(-1, width)


def check_decode_mode(mode: str, has_token_loss: bool) -> None:
    """Raise unless ``mode`` is a decoder this model can run (``tokens`` needs trained token detections)."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode '{mode}' is not one of {DECODE_MODES}")
    if mode == "tokens" and not has_token_loss:
        raise ValueError("decode mode 'tokens' needs token_loss: untrained tokens detect nothing")


@dataclass
class TagWords:
    """What ``word_tags`` tags with (``VisionLLM._tag``): the dataset class names' text features (n, d),
    which tokens and inputs are scored against, and their LLM word embeddings (n, D, unit rows); per
    attribute, its value words' text features (v, d) and LLM word embeddings (v, D)."""

    name_features: Tensor
    name_embeddings: Tensor
    attributes: list[tuple[Tensor, Tensor]]


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
        text_loss_weight: weight of the LM loss on answers in words (``TextTask``s).
        eval_tasks: tasks that ``predict`` also scores on every validation image from its ground truth
            (``Task.eval_examples``; the val pipeline must load annotations), for ``TaskExamplesMetric``.
        roi_size: RoIAlign output side of region inputs (``PromptEncoder``, built when a task takes
            region or point inputs).
        region_relations: each region input also carries where the request's other regions are relative
            to it (``PromptEncoder(region_relations=...)``, ``relative_geometry``), so a comparison can be
            read from one input.
        prompt_class_loss_weight: weight of ``loss_prompt_class``: on every training image, the class
            features of ``prompt_class_samples`` annotated objects' (jittered) boxes and clicks score
            their class among the dataset's (cross-entropy), when the model takes region or point
            inputs; 0 turns it off.
        attribute_loss_weight: weight of the attribute losses, which teach what the LLM reads to carry
            the annotated attributes its answers name (colour, size, ...), as Bottom-Up attention's
            attribute head: ``loss_prompt_attribute`` on the same boxes and clicks as
            ``loss_prompt_class`` (when the model takes region or point inputs) and
            ``loss_token_attribute`` on every visual token whose box overlaps an annotated object by
            IoU >= ``ATTRIBUTE_IOU`` (when ``token_loss`` is on). Each scores an object's value of each
            attribute among ``attribute_values``' words (cross-entropy); 0 turns them off.
        attribute_values: attribute -> the words of its values, e.g. ``dict(color=["red", "blue"],
            size=["small", "large"])``; set from the training set by ``ClassNamesHook`` when None.
        word_tags: the LLM reads each visual token (in answers in words) and each region and point
            input together with its own word embeddings of what the model's heads name there, weighted
            by their probabilities, as Oscar's object tags: the dataset class names (the tokens'
            detections, the inputs' class features), and with ``attribute_loss_weight`` the attribute
            words (``_tag``). A question that names "stars" or asks "what colour" then meets words the
            LLM reads itself, and "what is <region>?" can copy one. Needs ``token_loss``.
        extra_questions: questions answered in words trained per image besides its sampled task, drawn
            from the text tasks by their weights; they read that image's visual tokens and maps (made
            for its sampled instruction), so an image teaches several answers for one tokenizer pass.
        bin_prior_slope: initial slope, in logits per bin, of the Laplace prior that a slot's seed box
            puts on its location tokens (see ``_slot_inputs``).
        learn_bin_prior: learn that slope (True) or keep it fixed.
        slot_vertex_features: a seeded slot's location tokens also read the image tokenizer's maps at
            their seed's points (box corners, polygon vertices) and know which pair they are
            (``SlotRefiner``; needs ``token_loss``).
        slot_offset_radius: R > 0: a seeded slot's location tokens also give logits over offsets -R..R
            bins from their seed coordinate (``SlotRefiner``; needs ``token_loss``); 0: none.
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
        text_loss_weight: float = 1.0,
        eval_tasks: Sequence[str] = (),
        roi_size: int = 4,
        region_relations: bool = True,
        prompt_class_loss_weight: float = 1.0,
        prompt_class_samples: int = 4,
        attribute_loss_weight: float = 0.0,
        attribute_values: Mapping[str, Sequence[str]] | None = None,
        word_tags: bool = False,
        extra_questions: int = 0,
        bin_prior_slope: float = 0.22,
        learn_bin_prior: bool = True,
        slot_vertex_features: bool = False,
        slot_offset_radius: int = 0,
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
        # log of the Laplace prior's slope in logits per bin (0.22: 10 bins off = -2.2)
        log_slope = torch.tensor(math.log(bin_prior_slope))
        if learn_bin_prior:
            self.bin_prior_scale = nn.Parameter(log_slope)
        else:
            self.register_buffer("bin_prior_scale", log_slope)
        self.tasks: dict[str, TaskBase] = {}
        self.task_weights: dict[str, float] = {}
        for name, options in tasks.items():
            options = dict(options)
            weight = options.pop("weight", 1.0)
            task = build_task(name, self.llm.vocab, **options)
            self.tasks[task.name] = task
            self.task_weights[task.name] = weight
        self.eval_task = build_task(eval_task, self.llm.vocab).name
        self.eval_tasks = [build_task(name, self.llm.vocab).name for name in eval_tasks]
        for name in [self.eval_task, *self.eval_tasks]:
            if name not in self.tasks:
                raise ValueError(
                    f"evaluation task '{name}' is not among the model's tasks {list(self.tasks)}"
                )
        self.prompt_encoder = None
        if any(task.region_inputs or task.point_inputs for task in self.tasks.values()):
            self.prompt_encoder = PromptEncoder(
                self.image_tokenizer.embed_dims,
                self.llm.hidden_size,
                self.image_tokenizer.num_levels,
                roi_size,
                attribute_heads=attribute_loss_weight > 0,
                region_relations=region_relations,
            )
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
        self.slot_refiner = None
        if slot_vertex_features or slot_offset_radius:
            if self.token_loss is None:
                raise ValueError(
                    "slot_vertex_features and slot_offset_radius refine seeds: they need token_loss"
                )
            self.slot_refiner = SlotRefiner(
                self.image_tokenizer.embed_dims,
                self.llm.hidden_size,
                self.image_tokenizer.num_levels,
                max_pairs=max((t.object_length - 1) // 2 for t in self.tasks.values() if isinstance(t, Task)),
                vertex_features=slot_vertex_features,
                offset_radius=slot_offset_radius,
            )
        # a click's place in each seed's box -> a logit on the seed's class prior: which object was clicked
        self.click_prior = None
        if self.token_loss is not None and any(
            isinstance(task, Task) and task.point_inputs for task in self.tasks.values()
        ):
            self.click_prior = MLP(2, 32, 1, 2)
            nn.init.zeros_(self.click_prior.layers[-1].weight)
            nn.init.zeros_(self.click_prior.layers[-1].bias)
        if self.token_loss is None and self.image_tokenizer.two_stage:
            raise ValueError("image_tokenizer.two_stage needs token_loss: it trains the proposals it selects")
        self.sequence_loss_weight = sequence_loss_weight
        self.text_loss_weight = text_loss_weight
        self.prompt_class_loss_weight = prompt_class_loss_weight
        self.prompt_class_samples = prompt_class_samples
        self.attribute_loss_weight = attribute_loss_weight
        self.attribute_values = (
            None if attribute_values is None else {k: list(v) for k, v in attribute_values.items()}
        )
        # visual tokens' states -> the space where attribute words are compared
        self.token_attribute = (
            nn.Linear(self.image_tokenizer.embed_dims, self.image_tokenizer.embed_dims)
            if attribute_loss_weight > 0 and token_loss is not None
            else None
        )
        if word_tags and self.token_loss is None:
            raise ValueError("word_tags needs token_loss: the tokens' tags are their trained detections")
        self.word_tags = word_tags
        self.extra_questions = extra_questions
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

    def _query(self, task: TaskBase, request: Request) -> LLMQuery:
        """The LLM's input for ``request``; its region/point inputs are filled in by ``_prompt_inputs``."""
        prompt = self.prompt_ids(request)
        if isinstance(task, TextTask):  # class names are written plainly: nothing points back to them
            return LLMQuery(task, request, prompt, [])
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
        if isinstance(query.task, TextTask):
            answer = query.task.max_answer_tokens + 1
        elif mode == "parallel":  # every slot at once
            answer = self.slot_embed.shape[0] * query.task.object_length
        else:  # autoregressive decoding needs room for one object
            answer = query.task.object_length + 1
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
        self, annotations: ImageAnnotations, rng: np.random.Generator, names: Sequence[str] | None = None
    ) -> tuple[Task, Request]:
        """Draw a task (among ``names``, default all) by the configured weights and let it sample a
        request; a task that cannot phrase one for this image (grounding without an unambiguous
        referent) passes to the next."""
        names = list(self.task_weights if names is None else names)
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
        """Sample an instruction per image, then score the enabled decoders against its targets: object
        answers with the slot and sequence losses, answers in words with the LM loss."""
        rng = np.random.default_rng(
            int(torch.randint(0, 2**31 - 1, ()).item())
        )  # follows the seeded torch RNG
        tasks, requests, targets, token_targets, image_annotations = [], [], [], [], []
        for sample in data_samples:
            annotations = self._annotations(sample)
            image_annotations.append(annotations)
            task, request = self._sample_request(annotations, rng)
            tasks.append(task)
            requests.append(request)
            if isinstance(task, TextTask):
                targets.append(task.answer(request, annotations, self._class_names()))
            else:
                targets.append(task.encode_objects(request, annotations, self._class_names()))
            if isinstance(task, Task) and task.tokens_find_answers:
                token_targets.append((targets[-1].boxes, targets[-1].class_index))
            else:  # the tokens still learn to detect: every object, over the dataset's classes or as <c0>
                boxes = np.clip(annotations.boxes, 0, annotations.canvas_size)
                labels = torch.as_tensor(annotations.labels)
                token_targets.append(
                    (
                        torch.as_tensor(boxes, dtype=torch.float32),
                        labels if isinstance(task, TextTask) else torch.zeros_like(labels),
                    )
                )
        tokens = self.image_tokenizer(inputs, [r.plain_text for r in requests])
        queries = [self._query(task, request) for task, request in zip(tasks, requests)]
        attribute_words = self._attribute_words(inputs.device) if self.attribute_loss_weight > 0 else None
        tag_words = self._tag_words(inputs.device, attribute_words)
        self._fill_prompt_inputs(tokens, queries, tag_words)
        token_class_logits = None
        losses: dict[str, Tensor] = {}
        if self.token_loss is not None:
            layer_class_logits = self.image_tokenizer.class_logits(
                tokens.layer_features, self._token_class_features(tokens, queries)
            )  # per image (L, M, n)
            token_class_logits = [logits[-1] for logits in layer_class_logits]
            losses.update(
                self.token_loss(
                    tokens.layer_boxes,
                    layer_class_logits,
                    [boxes for boxes, _ in token_targets],
                    [labels for _, labels in token_targets],
                    canvas=tokens.canvas,
                    proposal_boxes=tokens.proposal_boxes,
                    proposal_logits=tokens.proposal_logits,
                )
            )
        objects, words = self._split_by_answer(queries)
        if objects:
            object_tokens = tokens.select(objects)
            object_queries = [queries[i] for i in objects]
            object_targets = [targets[i] for i in objects]
            if "parallel" in self.train_modes:
                slot_inputs, slot_priors, seeds = self._slot_inputs(
                    object_tokens,
                    None if token_class_logits is None else [token_class_logits[i] for i in objects],
                    object_queries,
                    [self._canvas_size(data_samples[i].metainfo) for i in objects],
                )
                slot_logits = parallel_slot_logits(
                    self.llm,
                    object_tokens.embeds,
                    object_queries,
                    slot_inputs,
                    slot_priors,
                    location_offsets=self._location_offsets(seeds),
                )
                losses.update(self._parallel_loss(slot_logits, object_queries, object_targets, seeds))
            if "autoregressive" in self.train_modes:
                losses["loss_sequence"] = self._sequence_loss(
                    object_tokens.embeds, object_queries, object_targets
                )
        rows, word_queries, answers = words, [queries[i] for i in words], [targets[i] for i in words]
        if self.extra_questions:
            extra_rows, extra_queries, extra_answers = self._extra_questions(
                tokens, image_annotations, rng, tag_words
            )
            rows, word_queries, answers = (
                rows + extra_rows,
                word_queries + extra_queries,
                answers + extra_answers,
            )
        if rows:
            losses["loss_text"] = self._text_loss(
                self._tagged_tokens(tokens.embeds[rows], tokens.features[rows], tag_words),
                word_queries,
                answers,
            )
        if self.prompt_encoder is not None:
            losses.update(self._prompt_losses(tokens, image_annotations, rng, attribute_words))
        if self.token_attribute is not None:
            losses["loss_token_attribute"] = self._token_attribute_loss(
                tokens, image_annotations, attribute_words
            )
        return losses

    def _extra_questions(
        self,
        tokens: VisualTokens,
        annotations: list[ImageAnnotations],
        rng: np.random.Generator,
        tag_words: TagWords | None = None,
    ) -> tuple[list[int], list[LLMQuery], list[str]]:
        """``extra_questions`` text-task requests per image, with their inputs filled from that image's
        maps (tagged with ``tag_words``): (image row of each, its query, its answer)."""
        text_tasks = [name for name, task in self.tasks.items() if isinstance(task, TextTask)]
        rows, queries, answers = [], [], []
        if not text_tasks:
            return rows, queries, answers
        for row, image in enumerate(annotations):
            for _ in range(self.extra_questions):
                try:
                    task, request = self._sample_request(image, rng, text_tasks)
                except NoReferentError:
                    continue
                rows.append(row)
                queries.append(self._query(task, request))
                answers.append(task.answer(request, image, self._class_names()))
        if rows:
            self._fill_prompt_inputs(tokens.select(rows), queries, tag_words)
        return rows, queries, answers

    def _prompt_losses(
        self,
        tokens: VisualTokens,
        annotations: list[ImageAnnotations],
        rng: np.random.Generator,
        words: dict[str, Tensor] | None,
    ) -> dict[str, Tensor]:
        """On up to ``prompt_class_samples`` objects per image, each object's box jittered as region
        questions' boxes are and a click on its visible part (``PromptEncoder``): ``loss_prompt_class``,
        the cross-entropy of their class among the dataset's class names, and, given attribute ``words``,
        ``loss_prompt_attribute`` (``_attribute_loss``) of their features' attribute heads."""
        use_class, use_attributes = self.prompt_class_loss_weight > 0, words is not None
        if not (use_class or use_attributes):
            return {}
        device = tokens.embeds.device
        boxes, points, labels, attributes = [], [], [], []
        for image in annotations:
            chosen = rng.permutation(len(image))[: self.prompt_class_samples]
            jittered = [jitter_box(image.boxes[i], rng, image.canvas_size) for i in chosen]
            boxes.append(_rows(jittered, 4, device))
            points.append(_rows([visible_point(image, i, rng) for i in chosen], 2, device))
            labels.extend(int(image.labels[i]) for i in chosen)
            attributes.extend(image.attributes[i] for i in chosen)
        if not labels:
            zero = tokens.embeds.sum() * 0.0
            return {
                key: zero
                for key, used in (("loss_prompt_class", use_class), ("loss_prompt_attribute", use_attributes))
                if used
            }
        maps, canvas, encoder = tokens.feature_maps, tokens.canvas, self.prompt_encoder
        region_hidden = encoder.region_features(maps, boxes, canvas)
        point_hidden = encoder.point_features(maps, points, canvas)
        losses = {}
        if use_class:
            features = torch.cat([encoder.region_class(region_hidden), encoder.point_class(point_hidden)])
            names = self.image_tokenizer.name_features([self._class_names()], device)[0]
            logits = features @ names.T / features.shape[-1] ** 0.5
            target = torch.as_tensor(labels * 2, device=device)
            losses["loss_prompt_class"] = self.prompt_class_loss_weight * F.cross_entropy(logits, target)
        if use_attributes:
            features = torch.cat(
                [encoder.region_attribute(region_hidden), encoder.point_attribute(point_hidden)]
            )
            losses["loss_prompt_attribute"] = self._attribute_loss(features, attributes * 2, words)
        return losses

    def _token_attribute_loss(
        self, tokens: VisualTokens, annotations: list[ImageAnnotations], words: dict[str, Tensor]
    ) -> Tensor:
        """``_attribute_loss`` of the visual tokens' attribute features, each token that overlaps an
        annotated object by IoU >= ``ATTRIBUTE_IOU`` (its best) naming that object's attributes: the
        tokens the LLM reads then carry what a colour question or a caption asks of them."""
        token_boxes = self._token_boxes(tokens)  # (B,M,4) xyxy pixels, no gradient
        rows, columns, attributes = [], [], []
        for row, image in enumerate(annotations):
            if not len(image):
                continue
            gt_boxes = torch.as_tensor(image.boxes, dtype=torch.float32, device=token_boxes.device)
            overlaps = bbox_overlaps(token_boxes[row], gt_boxes)  # (M, G)
            best, index = overlaps.max(-1)
            positive = (best >= ATTRIBUTE_IOU).nonzero().squeeze(1)
            rows.extend([row] * len(positive))
            columns.extend(positive.tolist())
            attributes.extend(image.attributes[i] for i in index[positive].tolist())
        features = self.token_attribute(tokens.features[rows, columns])
        return self._attribute_loss(features, attributes, words)

    def _attribute_words(self, device: torch.device) -> dict[str, Tensor]:
        """Attribute -> (n, d) text features of its value words (``attribute_values``), encoded as class
        names are, once per step for every attribute loss."""
        if self.attribute_values is None:
            raise RuntimeError(
                "VisionLLM.attribute_values is unset: add ClassNamesHook (it reads them from the training "
                "set) or set model.attribute_values"
            )
        keys = list(self.attribute_values)
        features = self.image_tokenizer.name_features([self.attribute_values[k] for k in keys], device)
        return dict(zip(keys, features))

    def _attribute_loss(
        self, features: Tensor, attributes: Sequence[Mapping], words: dict[str, Tensor]
    ) -> Tensor:
        """``attribute_loss_weight`` x the mean over attributes of the cross-entropy of each object's
        value among the attribute's ``words`` (``_attribute_words``), from (K, d) features of K objects
        with these ``attributes``; objects without the attribute, or with a value not among its words,
        are skipped."""
        losses = []
        for key, values in self.attribute_values.items():
            index = {value: i for i, value in enumerate(values)}
            rows = [i for i, attrs in enumerate(attributes) if str(attrs.get(key)) in index]
            if not rows:
                continue
            logits = features[rows] @ words[key].T.to(features.dtype) / features.shape[-1] ** 0.5
            target = torch.as_tensor([index[str(attributes[i][key])] for i in rows], device=features.device)
            losses.append(F.cross_entropy(logits.float(), target))
        if not losses:  # nothing annotated here: keep every attribute head in the graph
            return features.sum() * 0.0
        return self.attribute_loss_weight * torch.stack(losses).mean()

    @staticmethod
    def _split_by_answer(queries: Sequence[LLMQuery]) -> tuple[list[int], list[int]]:
        """Indices of the queries answered with objects, and of those answered in words."""
        words = [i for i, q in enumerate(queries) if isinstance(q.task, TextTask)]
        return [i for i in range(len(queries)) if i not in words], words

    def _fill_prompt_inputs(
        self, tokens: VisualTokens, queries: list[LLMQuery], tag_words: TagWords | None = None
    ) -> None:
        """Set each query's ``prompt_inputs``: its regions' and points' embeddings, in the order their
        placeholders stand in the instruction, tagged with ``tag_words`` when given (``word_tags``)."""
        requests = [q.request for q in queries]
        if not any(r.regions or r.points for r in requests):
            return
        if self.prompt_encoder is None:
            raise ValueError("this model takes no region or point inputs: none of its tasks asks for them")
        device = tokens.embeds.device
        tag = None if tag_words is None else partial(self._tag_prompt, tag_words=tag_words)
        regions = self.prompt_encoder.regions(
            tokens.feature_maps, [_rows(r.regions, 4, device) for r in requests], tokens.canvas, tag
        )
        points = self.prompt_encoder.points(
            tokens.feature_maps, [_rows(r.points, 2, device) for r in requests], tokens.canvas, tag
        )
        for query, region_rows, point_rows in zip(queries, regions, points):
            order = _PLACEHOLDER.findall(query.request.text)
            if order:
                region_iter, point_iter = iter(region_rows), iter(point_rows)
                query.prompt_inputs = torch.stack(
                    [next(region_iter) if kind == REGION else next(point_iter) for kind in order]
                )

    def _token_class_features(self, tokens: VisualTokens, queries: list[LLMQuery]) -> list[Tensor]:
        """Per image, the (n, d) class features its visual tokens are scored against: the request's class
        names, a visual prompt's region, or (answers in words) every dataset class."""
        from_region = [getattr(q.task, "class_from_region", False) for q in queries]
        names = [
            [] if region else self._class_names() if isinstance(q.task, TextTask) else q.request.classes
            for q, region in zip(queries, from_region)
        ]
        features = self.image_tokenizer.name_features(names, tokens.embeds.device)
        if any(from_region):
            device = tokens.embeds.device
            boxes = [
                _rows(q.request.regions if region else [], 4, device)[:1]
                for q, region in zip(queries, from_region)
            ]
            prompts = self.prompt_encoder.region_class_features(tokens.feature_maps, boxes, tokens.canvas)
            features = [p if region else f for p, f, region in zip(prompts, features, from_region)]
        return features

    def _slot_inputs(
        self,
        tokens: VisualTokens,
        token_class_logits: list[Tensor] | None,
        queries: list[LLMQuery],
        canvas_sizes: list[int],
    ) -> tuple[list[Tensor], list[Tensor] | None, list[tuple[Tensor, Tensor]] | None]:
        """Each parallel slot's input embeddings on each of its format tokens (per image (N, L, D)), prior
        logits (per image (N, L, V)) and seed detection (per image: class probabilities (N, n), location
        in fractional bins (N, L-1)).

        With trained token detections, the N most confident visual tokens seed the N slots (in token
        order, as two-stage DETRs select their queries). A seed's embedding, mapped by
        ``slot_seed_proj``, joins the slot's own on each of its format tokens; with
        ``slot_vertex_features`` each location token also gets the maps' features at its seed point
        (``SlotRefiner``). The seed's detection becomes the slot's prior: its class logits on the class
        references, and on each location token a Laplace log-density (scale learnt,
        ``bin_prior_scale``) around the coordinate its box implies (``Task.geometry_from_boxes``). A
        request with a click and object answers ("segment the object at <point>") adds ``click_prior`` of
        where the click lies in each seed's box to the seed's class logits. The LLM's logits refine that
        prior, as each Deformable DETR decoder layer refines the last box. Without token detections the
        slots are the learned embeddings alone (priors and seeds None).
        """
        slots = self.slot_embed.unsqueeze(0).expand(tokens.embeds.shape[0], -1, -1)  # (B,N,D)
        if token_class_logits is None:
            return [per_token(slot, q.task.object_length) for slot, q in zip(slots, queries)], None, None
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
            class_prior = logits[index]
            if self.click_prior is not None and q.request.points:
                class_prior = class_prior + self.click_prior(
                    self._click_in_boxes(q.request.points[0], image_boxes[index])
                )
            prior[:, 0, self.vocab.class_local_ids(len(q.request.classes)).to(prior.device)] = class_prior
            distance = (bins - coords.unsqueeze(-1)).abs()  # (N, L-1, num_bins)
            prior[:, 1:, self.vocab.bin_local_ids()] = -self.bin_prior_scale.exp() * distance
            priors.append(prior)
            detections.append((logits[index].detach().sigmoid(), coords))
        inputs = [
            per_token(slot + seed, q.task.object_length) for slot, seed, q in zip(slots, seeds, queries)
        ]
        if self.slot_refiner is not None:
            points = [
                self.vocab.dequantize(coords, canvas).view(num_slots, -1, 2).to(seeds.dtype)
                for (_, coords), canvas in zip(detections, canvas_sizes)
            ]
            location_inputs = self.slot_refiner.location_inputs(tokens.feature_maps, points, tokens.canvas)
            if location_inputs is not None:
                inputs = [
                    torch.cat([rows[:, :1], rows[:, 1:] + extra], 1)
                    for rows, extra in zip(inputs, location_inputs)
                ]
        return inputs, priors, detections

    @staticmethod
    def _click_in_boxes(click: Sequence[float], boxes: Tensor) -> Tensor:
        """A click (x, y) against (N,4) xyxy boxes -> (N,2) its offset from each box's centre in half-widths
        and half-heights (inside a box iff both lie in [-1, 1]): ``click_prior``'s input."""
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = ((boxes[:, 2:] - boxes[:, :2]) / 2).clamp(min=1.0)
        return (boxes.new_tensor(click) - centre) / half

    def _location_offsets(
        self, seeds: list[tuple[Tensor, Tensor]] | None
    ) -> Callable[[int, Tensor], Tensor | None] | None:
        """``parallel_slot_logits``' ``location_offsets`` from the slots' seed detections (``_slot_inputs``):
        the refiner's logits over offsets from image i's seed coordinates; None without them."""
        if seeds is None or self.slot_refiner is None or self.slot_refiner.offset_head is None:
            return None
        num_bins = self.vocab.num_bins
        return lambda image, states: self.slot_refiner.offset_logits(states, seeds[image][1], num_bins)

    def _token_class_logits(self, tokens: VisualTokens, queries: list[LLMQuery]) -> list[Tensor] | None:
        """Per image (M, n) class logits of the visual tokens; None when the token loss is off (untrained)."""
        if self.token_loss is None:
            return None
        return self.image_tokenizer.class_logits(tokens.features, self._token_class_features(tokens, queries))

    def _tag_words(
        self, device: torch.device, attribute_words: dict[str, Tensor] | None = None
    ) -> TagWords | None:
        """What ``word_tags`` tags with, computed once per forward pass; None when they are off. The
        attribute words' text features are ``attribute_words`` when the caller has them already
        (``_attribute_words``), else encoded here when the model has attribute heads."""
        if not self.word_tags:
            return None
        names = self._class_names()
        if attribute_words is None and self.attribute_loss_weight > 0:
            attribute_words = self._attribute_words(device)
        attributes = [
            (features, self._word_embeddings(self.attribute_values[key]))
            for key, features in (attribute_words or {}).items()
        ]
        return TagWords(
            self.image_tokenizer.name_features([names], device)[0], self._word_embeddings(names), attributes
        )

    def _tagged_tokens(self, embeds: Tensor, features: Tensor, tag_words: TagWords | None) -> Tensor:
        """(B,M,D) visual tokens ``embeds`` (their states ``features``, (B,M,d)) as answers in words read
        them: with ``tag_words``, each tagged (``_tag``) with its class probabilities (sigmoid of its class
        logits against the dataset's names, as the token loss trains them) and its attribute features."""
        if tag_words is None:
            return embeds
        logits = self.image_tokenizer.class_logits(features, [tag_words.name_features] * len(features))
        attributes = None if self.token_attribute is None else self.token_attribute(features)
        return self._tag(embeds, torch.stack(logits).sigmoid(), attributes, tag_words)

    def _tag_prompt(
        self, inputs: Tensor, class_features: Tensor, attribute_features: Tensor | None, tag_words: TagWords
    ) -> Tensor:
        """(K, D) region or point inputs tagged (``_tag``) with their class probabilities (softmax of their
        class features against the dataset's names, as ``loss_prompt_class`` trains them)."""
        names = tag_words.name_features
        probs = (class_features @ names.T / class_features.shape[-1] ** 0.5).softmax(-1)
        return self._tag(inputs, probs, attribute_features, tag_words)

    @staticmethod
    def _tag(
        inputs: Tensor, class_probs: Tensor, attribute_features: Tensor | None, tag_words: TagWords
    ) -> Tensor:
        """``inputs`` (..., D) plus their word tags: the LLM's input embedding of each dataset class name
        weighted by ``class_probs`` (..., n), and, given attribute features (..., d), each attribute's
        words weighted by their softmax times the top class probability (how surely it is an object); the
        sum scaled to each input's own norm, so the tag is as loud as the input (a learned small vector
        was 1/200 of a token and never read, run 6). The probabilities are detached: the heads' own
        losses train them."""
        probs = class_probs.detach().float()
        tags = probs @ tag_words.name_embeddings
        if attribute_features is not None:
            objectness = probs.max(-1, keepdim=True).values
            scale = attribute_features.shape[-1] ** 0.5
            for word_features, embeddings in tag_words.attributes:
                weights = (attribute_features.float() @ word_features.float().T / scale).softmax(-1).detach()
                tags = tags + objectness * weights @ embeddings
        return inputs + (tags * inputs.detach().norm(dim=-1, keepdim=True)).to(inputs.dtype)

    def _word_embeddings(self, words: Sequence[str]) -> Tensor:
        """(n, D) float32 unit vectors: each word's (or name's) mean LLM input embedding over its pieces."""
        pieces = self.vocab.tokenizer(list(words), add_special_tokens=False).input_ids
        ids = pad_sequence([torch.as_tensor(p) for p in pieces], batch_first=True).to(self.slot_embed.device)
        keep = (
            torch.arange(ids.shape[1], device=ids.device) < ids.new_tensor([len(p) for p in pieces])[:, None]
        )
        embeddings = self.llm.embed(ids).float() * keep[..., None]  # (n, longest, D), padding zeroed
        return F.normalize(embeddings.sum(1) / keep.sum(1, keepdim=True), dim=-1)

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
        states, keys, legal, labels = [], [], [], []
        for i, (q, answer, seq) in enumerate(zip(queries, answers, sequences)):
            # the answer's k-th token is predicted from the position before it
            states.append(hidden[i, length - len(answer) - 1 : length - 1])
            keys.append(q.class_keys(hidden[i], embeds[i], length - len(seq)))
            n = len(q.request.classes)
            step = q.task.object_length
            legal.append(
                torch.stack([self.grammar.mask(q.task, k % step, n, False) for k in range(len(answer))])
            )
            labels.append(torch.as_tensor(self.vocab.to_local(answer)))
        logits = torch.cat(self.llm.task_logits(states, keys))
        return sequence_loss(
            logits,
            torch.cat(legal).to(logits.device),
            torch.cat(labels).to(logits.device),
            self.sequence_loss_weight,
        )

    def _text_loss(self, visual: Tensor, queries: list[LLMQuery], answers: list[str]) -> Tensor:
        """LM loss on answers in words: each answer's tokens and the end token, teacher-forced."""
        end = self.vocab.text_end_id
        answer_ids = [self.vocab.tokenizer(a, add_special_tokens=False).input_ids + [end] for a in answers]
        sequences = [q.prompt_ids + ids for q, ids in zip(queries, answer_ids)]
        embeds, mask, positions = embed_batch(
            self.llm, visual, sequences, prompt_inputs=[q.prompt_inputs for q in queries]
        )
        hidden, _ = self.llm(embeds, mask, positions)
        length = hidden.shape[1]
        # the answer's k-th token is predicted from the position before it
        states = torch.cat(
            [hidden[i, length - len(ids) - 1 : length - 1] for i, ids in enumerate(answer_ids)]
        )
        labels = torch.as_tensor([t for ids in answer_ids for t in ids], device=states.device)
        return self.text_loss_weight * F.cross_entropy(self.llm.text_logits(states), labels)

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
        if self.eval_tasks:
            self._answer_eval_examples(inputs, data_samples)
        return data_samples

    def _answer_eval_examples(self, inputs: Tensor, data_samples: list[DetDataSample]) -> None:
        """Ask each of ``eval_tasks``' examples of every image (``Task.eval_examples``, built from its
        ground truth in original pixels, as a user would ask) and keep ``(task, prediction, reference)``
        on the sample as ``task_examples``, which ``TaskExamplesMetric`` scores."""
        jobs = []
        for index, sample in enumerate(data_samples):
            sample.task_examples = []
            if "gt_instances" not in sample or not len(sample.gt_instances):
                continue
            sx, sy = sample.metainfo.get("scale_factor", (1.0, 1.0))
            annotations = self._annotations(sample).rescaled(1 / sx, 1 / sy)
            rng = np.random.default_rng(int(sample.metainfo.get("img_id", index)))
            for name in self.eval_tasks:
                examples = self.tasks[name].eval_examples(self._class_names(), annotations, rng)
                for request, reference in examples:
                    if request.task in self.tasks:  # e.g. the class-name baseline of visual prompts
                        jobs.append((index, name, request.scaled(sx, sy), reference))
        batch = len(data_samples)
        for start in range(0, len(jobs), batch):
            chunk = jobs[start : start + batch]
            rows = [index for index, *_ in chunk]
            answers = self.generate(
                inputs[rows],
                [request for _, _, request, _ in chunk],
                [data_samples[r].metainfo for r in rows],
            )
            for (index, name, _, reference), answer in zip(chunk, answers):
                data_samples[index].task_examples.append((name, answer, reference))

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
            requests: per image, what to find or ask (``visionllm.instructions`` makes them from text),
                with its region / point inputs in model-input pixels.
            image_metas: per image, the test pipeline's metainfo: ``ori_shape``, ``scale_factor`` and
                ``pad_shape`` (or ``batch_input_shape``), to map the answer back to original pixels.
            decode_mode: how object answers are decoded, one of ``DECODE_MODES``; None = the model's
                ``decode_mode``. Answers in words are always generated token by token.
        Returns:
            One :class:`Prediction` per image in original-image pixels; objects that lie wholly in the
            padding (no area once clipped to the image) are left out.
        """
        mode = decode_mode or self.decode_mode
        check_decode_mode(mode, self.token_loss is not None)
        for request in requests:
            if request.task not in self.tasks:
                raise ValueError(
                    f"this model was not trained for the task {request.task!r}; its tasks: {list(self.tasks)}"
                )
        queries = [self._query(self.tasks[request.task], request) for request in requests]
        for query in queries:
            if mode != "tokens" or isinstance(query.task, TextTask):  # the tokens decoder reads no prompt
                self._check_context(query, mode)
        tokens = self.image_tokenizer(inputs, [q.request.plain_text for q in queries])  # (B,M,D)
        tag_words = self._tag_words(inputs.device)
        self._fill_prompt_inputs(tokens, queries, tag_words)
        predictions: list[Prediction | None] = [None] * len(queries)
        objects, words = self._split_by_answer(queries)
        if words:
            word_queries = [queries[i] for i in words]
            answers = decode_text(
                self.llm,
                self._tagged_tokens(tokens.embeds[words], tokens.features[words], tag_words),
                word_queries,
                max(q.task.max_answer_tokens for q in word_queries),
            )
            for i, answer in zip(words, answers):
                ids = [
                    t
                    for t in answer.token_ids[: queries[i].task.max_answer_tokens]
                    if t != self.vocab.text_end_id
                ]
                text = self.vocab.tokenizer.decode(ids, skip_special_tokens=True).strip()
                score = float(np.exp(np.mean(np.log(np.maximum(answer.token_scores, 1e-12)))))
                predictions[i] = Prediction.from_text(text, score, requests[i], image_metas[i], mode)
        if objects:
            object_tokens = tokens.select(objects) if words else tokens
            object_queries = [queries[i] for i in objects]
            canvas_sizes = [self._canvas_size(image_metas[i]) for i in objects]
            parsed = self._decode_objects(object_tokens, object_queries, canvas_sizes, mode)
            for i, answer in zip(objects, parsed):
                task = queries[i].task
                predictions[i] = Prediction.from_parsed(
                    answer, requests[i], image_metas[i], mode, self.class_names or (), task.predicts_polygons
                )
        return predictions

    def _decode_objects(
        self, tokens: VisualTokens, queries: list[LLMQuery], canvas_sizes: list[int], mode: str
    ) -> list:
        """Object answers, parsed, in model-input pixels (one ``ParseResult`` per query)."""
        if mode == "parallel":
            slot_inputs, slot_priors, seeds = self._slot_inputs(
                tokens, self._token_class_logits(tokens, queries), queries, canvas_sizes
            )
            decoded = decode_parallel(
                self.llm,
                self.grammar,
                tokens.embeds,
                queries,
                slot_inputs,
                self.max_objects,
                slot_priors,
                seed_locations=None if seeds is None else [coords for _, coords in seeds],
                location_offsets=self._location_offsets(seeds),
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
        return [
            q.task.parse(seq.token_ids, q.request, canvas, seq.token_scores, seq.object_boxes)
            for q, seq, canvas in zip(queries, decoded, canvas_sizes)
        ]
