"""What every task shares: requests, annotations, targets, the output grammar and its parser.

Output grammar (global token ids; ``L = object_length``, one class token then ``L - 1`` bins)::

    answer  ::= object* "<eoo>"                    (autoregressive)
              | slot*                              (parallel decoding: one slot per object query)
    object  ::= class_ref bin{L-1}
    slot    ::= object | "<noobj>" bin{0..L-1}      (an empty slot; skipped without complaint)
    class_ref ::= "<c0>" | ... | "<c{n-1}>"         (n = len(request.classes))

Objects have a fixed length, so the class token is the only separator the grammar needs (there is
no ``<obj>`` token) and an autoregressive answer lines up with the parallel decoder's slots.

The parser never raises on any token sequence. It keeps every valid object and counts the rest in
``ParseResult.dropped``. Object-level reasons count objects: ``class_out_of_range`` (``<ck>`` with
k >= n), ``truncated`` (a non-bin token or the end arrived before the object's bins were complete),
``degenerate_box``, ``degenerate_polygon``. Token-level reasons count tokens: ``unexpected_token``
(a token that cannot start an object, e.g. a stray bin, text or an id outside the vocabulary) and
``after_end`` (tokens after ``<eoo>``).
"""

from __future__ import annotations

import operator
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from visionllm.tasks.wording import class_names, known_names_in, object_segment
from visionllm.vocab import POINT, REGION, TASK_TOKEN_PATTERN, TaskVocab

if TYPE_CHECKING:
    from visionllm.structures import Prediction

Box = tuple[float, float, float, float]


@dataclass
class Request:
    """A task request: what the LLM reads, and the class list its ``<ck>`` answers index.

    ``text`` has the class-reference tokens written in ("... cup <c0>, knife <c1> ...") but no
    ``<image>`` token (the model prepends it). ``regions``/``points`` are the inputs that fill the
    ``<region>``/``<point>`` placeholders in ``text``, in order (xyxy boxes and x,y points in
    model-input pixels). ``target_indices`` (training only) are the annotated instances a grounding
    phrase refers to.
    """

    task: str
    classes: list[str]
    text: str
    regions: list[Box] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    target_indices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.classes = list(self.classes)
        if not self.classes and not issubclass(TASKS.get(self.task, Task), TextTask):
            raise ValueError("a request needs at least one class (or a grounding phrase)")
        for name in self.classes:
            if not isinstance(name, str) or not name.strip() or TASK_TOKEN_PATTERN.search(name):
                raise ValueError(
                    f"invalid class name {name!r}: it must be non-empty text without task tokens"
                )
        repeated = sorted({name for name in self.classes if self.classes.count(name) > 1})
        if repeated:
            raise ValueError(
                f"class names {repeated} are listed more than once: each object would count twice"
            )
        for placeholder, inputs in ((REGION, self.regions), (POINT, self.points)):
            if self.text.count(placeholder) != len(inputs):
                raise ValueError(
                    f"the text has {self.text.count(placeholder)} {placeholder} placeholders "
                    f"but {len(inputs)} inputs were given"
                )
        check_inputs(self.regions, self.points)
        for reference in re.findall(r"<c(\d+)>", self.text):
            if int(reference) >= len(self.classes):
                raise ValueError(
                    f"the text refers to <c{reference}> but only {len(self.classes)} classes exist"
                )

    def scaled(self, sx: float, sy: float) -> Request:
        """This request with its regions and points multiplied by (sx, sy): original-image pixels to
        model-input pixels with the resize's ``scale_factor``, or back with its inverse."""
        return replace(
            self,
            regions=[(x1 * sx, y1 * sy, x2 * sx, y2 * sy) for x1, y1, x2, y2 in self.regions],
            points=[(x * sx, y * sy) for x, y in self.points],
        )

    @property
    def plain_text(self) -> str:
        """``text`` without task tokens, for a text encoder that does not know them."""
        text = TASK_TOKEN_PATTERN.sub(" ", self.text)
        text = re.sub(r"\s+([,.;:?!])", r"\1", text)
        return " ".join(text.split())


def check_inputs(
    regions: Sequence[Sequence[float]],
    points: Sequence[Sequence[float]],
    image_size: tuple[int, int] | None = None,
    image: str = "the image",
) -> None:
    """Raise a ValueError naming the first bad region or point (1-based): not finite numbers, a region
    without area, or, given the image's (width, height) in the same pixels, one that is not inside it
    (``image`` names the image in the message)."""
    for kind, inputs, size in (("region", regions, 4), ("point", points, 2)):
        for k, values in enumerate(inputs, 1):
            values = tuple(values)
            if len(values) != size or not all(np.isfinite(v) for v in values):
                raise ValueError(f"{kind} {k} must be {size} finite numbers, got {values}")
            if size == 4 and not (values[2] > values[0] and values[3] > values[1]):
                raise ValueError(f"region {k} {values} has no area: it needs x1 < x2 and y1 < y2")
    if image_size is None:
        return
    width, height = image_size
    for k, (x1, y1, x2, y2) in enumerate(regions, 1):
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ValueError(
                f"region {k} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not inside {image} ({width}x{height} px)"
            )
    for k, (x, y) in enumerate(points, 1):
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"point {k} ({x:g}, {y:g}) is not inside {image} ({width}x{height} px)")


def check_class_count(classes: Sequence[str], max_classes: int) -> None:
    """Raise a clear error when a class list does not fit the vocabulary's class tokens."""
    if len(classes) > max_classes:
        raise ValueError(
            f"{len(classes)} classes requested but the vocabulary has only {max_classes} class tokens "
            f"(<c0>..<c{max_classes - 1}>); split the class list over several requests"
        )


@dataclass
class ImageAnnotations:
    """One image's instances in model-input pixels (after resize, before/after padding alike).

    ``labels`` index the dataset class list. ``polygons[i]`` is instance i's list of parts, each a
    flat x,y,... array; it is empty for instances known only as RLE. ``attributes[i]`` is a dict
    such as ``{"color": "red", "size": "large"}`` (empty when the dataset has none). ``polygons`` and
    ``attributes`` may be left out (None or ``[]``) when no instance has any.
    """

    boxes: np.ndarray
    labels: np.ndarray
    canvas_size: int
    polygons: list[list[np.ndarray]] | None = None
    attributes: list[dict] | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if not self.polygons:  # None or [] = no polygons known
            self.polygons = [[] for _ in range(n)]
        self.polygons = [
            [np.asarray(part, dtype=np.float64).reshape(-1) for part in parts] for parts in self.polygons
        ]
        if not self.attributes:
            self.attributes = [{} for _ in range(n)]
        if not len(self.labels) == len(self.polygons) == len(self.attributes) == n:
            raise ValueError("boxes, labels, polygons and attributes must describe the same instances")

    def __len__(self) -> int:
        return len(self.boxes)

    def rescaled(self, sx: float, sy: float) -> ImageAnnotations:
        """The same instances with x multiplied by ``sx`` and y by ``sy`` (e.g. back to original pixels)."""
        scale = np.array([sx, sy])
        return ImageAnnotations(
            self.boxes * [sx, sy, sx, sy],
            self.labels,
            self.canvas_size * max(sx, sy),
            [[(p.reshape(-1, 2) * scale).reshape(-1) for p in parts] for parts in self.polygons],
            self.attributes,
        )

    @classmethod
    def from_coco(
        cls,
        annotations: Sequence[dict],
        category_ids: Sequence[int],
        canvas_size: int,
        scale_factor: tuple[float, float] = (1.0, 1.0),
    ) -> ImageAnnotations:
        """COCO annotation dicts -> model-input pixels. Crowd instances are left out (they are
        ignore regions, not targets); ``category_ids[label]`` is the COCO id of dataset class ``label``.
        """
        label_of = {int(cat): label for label, cat in enumerate(category_ids)}
        sx, sy = scale_factor
        scale = np.array([sx, sy])
        boxes, labels, polygons, attributes = [], [], [], []
        for ann in annotations:
            if ann.get("iscrowd", 0) or int(ann["category_id"]) not in label_of:
                continue
            x, y, w, h = ann["bbox"]
            boxes.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
            labels.append(label_of[int(ann["category_id"])])
            segmentation = ann.get("segmentation")
            parts = segmentation if isinstance(segmentation, list) else []  # RLE: no polygon
            polygons.append(
                [(np.asarray(p, dtype=np.float64).reshape(-1, 2) * scale).reshape(-1) for p in parts]
            )
            attributes.append(dict(ann.get("attributes") or {}))
        return cls(np.asarray(boxes).reshape(-1, 4), np.asarray(labels), canvas_size, polygons, attributes)


@dataclass
class ObjectTargets:
    """Encoded targets of one request: ``bins[i]`` are object i's location bins in grammar order."""

    class_index: torch.Tensor  # (n,) int64, index into request.classes
    bins: torch.Tensor  # (n, object_length - 1) int64
    boxes: torch.Tensor  # (n, 4) float32 xyxy model-input pixels, for matching costs

    def __len__(self) -> int:
        return len(self.class_index)


@dataclass
class DetectedObject:
    class_index: int  # index into request.classes
    box: Box  # xyxy model-input pixels, x1 < x2 and y1 < y2, inside the canvas
    score: float = 1.0
    polygon: list[float] | None = None  # flat x,y,... model-input pixels (segmentation)


@dataclass
class ParseResult:
    objects: list[DetectedObject]
    dropped: Counter[str]
    finished: bool  # True when the answer ended with <eoo>


@dataclass(frozen=True)
class Geometry:
    """An object's location decoded from its bins."""

    box: Box
    polygon: list[float] | None = None


#: Reasons that count dropped objects (the other reasons count tokens).
OBJECT_DROP_REASONS = ("class_out_of_range", "truncated", "degenerate_box", "degenerate_polygon")


def _as_token_list(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _as_int(token: Any) -> int | None:
    """The token as an int, or None when it is not an integer at all."""
    try:
        return operator.index(token)
    except TypeError:
        return None


#: A free-form instruction cue: lower-cased text -> a match (its end is where the names begin) or None.
Cue = Callable[[str], "re.Match[str] | None"]


class TaskBase(ABC):
    """One vision task defined in language: its templates, instruction cues and requests.

    A task answers either with objects in the token grammar (:class:`Task`) or in words
    (:class:`TextTask`). A new task is one module: subclass one of them, fill in the class attributes
    and abstract methods, and decorate the class with :func:`register_task`; models build it by name
    and free-form instructions reach it through its ``cues``.
    """

    name: ClassVar[str]
    synonyms: ClassVar[tuple[str, ...]] = ()
    #: The COCO metric types its predictions are scored with (``bbox``, ``segm``); () = none.
    iou_types: ClassVar[tuple[str, ...]] = ()
    #: ``(priority, cue)`` pairs: the resolver tries the cues of every registered task, lowest priority
    #: first, and the first that matches picks the task (``visionllm.instructions``).
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ()
    #: What an instruction names for this task: ``"classes"`` (a class list), ``"phrase"`` (one
    #: referring expression, the request's only class) or ``"none"`` (questions about regions, points
    #: or the whole image).
    names_kind: ClassVar[str] = "classes"
    #: Training paraphrases; ``{classes}`` / ``{phrase}`` receives the rendered class list.
    templates: ClassVar[tuple[str, ...]]
    #: Appended to every instruction: states the output format with the format tokens.
    answer_format: ClassVar[str]
    #: A free-form instruction for this task, shown when an instruction matches no task.
    example_instruction: ClassVar[str]
    #: How many ``<region>`` and ``<point>`` inputs its requests take (filled by RoI / point features).
    region_inputs: ClassVar[int] = 0
    point_inputs: ClassVar[int] = 0
    #: The class list of every request of a task whose instructions name nothing (``names_kind``
    #: ``"none"``), e.g. ``("object",)`` for "segment the object at <point>"; () for questions in words.
    fixed_classes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, vocab: TaskVocab) -> None:
        self.vocab = vocab

    # ---- requests --------------------------------------------------------------------------------
    @classmethod
    def render_text(cls, classes: Sequence[str], template_index: int = 0) -> str:
        """The instruction for ``classes`` with template ``template_index``: each name is followed
        by its reference token (``cup <c0>, knife <c1>``), then the answer format."""
        listing = ", ".join(f"{name} <c{k}>" for k, name in enumerate(classes))
        body = cls.templates[template_index].format(classes=listing, phrase=listing)
        return f"{body} {cls.answer_format}"

    def build_request(
        self,
        classes: Sequence[str],
        template_index: int = 0,
        target_indices: Sequence[int] = (),
        regions: Sequence[Box] = (),
        points: Sequence[tuple[float, float]] = (),
    ) -> Request:
        check_class_count(classes, self.vocab.max_classes)
        return Request(
            task=self.name,
            classes=list(classes),
            text=self.render_text(classes, template_index),
            regions=[tuple(float(v) for v in box) for box in regions],
            points=[tuple(float(v) for v in point) for point in points],
            target_indices=tuple(int(i) for i in target_indices),
        )

    @classmethod
    def names_from_text(cls, text: str, cue_end: int, known_classes: Sequence[str] | None) -> list[str]:
        """The class list a free-form instruction (lower-cased) names after its cue, which ends at
        ``cue_end``; "everything" means ``known_classes``. When nothing after the cue is a known class,
        known classes named before it count ("could you point out every platelet with boxes?").
        Tasks that read a phrase override this."""
        names = class_names(object_segment(text, cue_end), known_classes)
        if known_classes and not set(names) & set(known_classes):
            names = known_names_in(text, known_classes) or names
        return names

    @classmethod
    def template_for_text(cls, text: str) -> int:
        """The template a free-form instruction (lower-cased) is asked with: the first, unless a task's
        templates ask different questions (``RegionComparisonTask``: larger, further left, same colour)."""
        return 0

    def request_for_eval(self, dataset_classes: Sequence[str]) -> Request:
        """The deterministic evaluation instruction: first template, classes in dataset order."""
        return self.build_request(dataset_classes)

    @abstractmethod
    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        """A random training request for this image (random template and class list)."""

    # ---- evaluation ------------------------------------------------------------------------------
    def eval_examples(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> list[tuple[Request, Any]]:
        """Requests that score this task on one annotated image (first template), each with its
        reference answer; none for tasks that COCO metrics score over the whole class list."""
        return []

    def summarize(self, examples: Sequence[tuple[Prediction, Any]]) -> dict[str, float]:
        """The task's metrics over (prediction, reference) pairs from ``eval_examples``."""
        raise NotImplementedError(f"task {self.name!r} has no eval_examples to summarize")


class Task(TaskBase):
    """A task answered with objects: class references and location bins in the output grammar
    (see the module docstring), decoded in parallel slots or autoregressively."""

    #: Objects come with polygons (and masks), not only boxes.
    predicts_polygons: ClassVar[bool] = False
    #: Parallel decoding writes a slot's location tokens from its seed token's box (True) rather than
    #: the LLM's logits: the image tokenizer's decoder refined that box against the image, which the LLM
    #: does not see (it reads the tokens), and the LLM's bins placed boxes worse than their seeds
    #: (``bench/slot_ablation.py``). Polygon tasks, whose seed is only the box's outline, take the LLM's.
    locations_from_seed: ClassVar[bool] = True
    #: Parallel decoding reports an object's box as its seed token's box (True) rather than the extent of
    #: the geometry the LLM wrote, as Mask R-CNN reports its box head's box beside its mask. For polygon
    #: tasks: once the LLM's vertices left the seed's outline, their extents scored 0.39-0.43 bbox AP,
    #: the seeds' boxes 0.61-0.62 on the same checkpoints (docs/benchmarks.md, run 9).
    boxes_from_seed: ClassVar[bool] = False
    #: The visual tokens learn to detect the objects a request asks for (True: they read its text). A task
    #: whose object is picked by a click, which the tokenizer does not see, sets False: its tokens learn
    #: every annotated object as the request's class ``<c0>``, and the click picks among them
    #: (``VisionLLM.click_prior`` and the LLM).
    tokens_find_answers: ClassVar[bool] = True

    # ---- output format ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def format_tokens(self) -> list[str]:
        """One object slot: ``<cls>`` then one format token per location bin."""

    @property
    def object_length(self) -> int:
        return len(self.format_tokens)

    @property
    def format_token_ids(self) -> torch.Tensor:
        return torch.tensor([self.vocab.token_id(token) for token in self.format_tokens])

    # ---- targets ---------------------------------------------------------------------------------
    @abstractmethod
    def select_instances(
        self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]
    ) -> list[tuple[int, int]]:
        """The ``(instance index, request class index)`` pairs that ``request`` asks for."""

    @abstractmethod
    def instance_geometry(
        self, annotations: ImageAnnotations, index: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Instance ``index`` as ``(bins, box)`` in grammar order, or None when it cannot be a target."""

    @abstractmethod
    def decode_geometry(self, bins: Sequence[int], canvas_size: float) -> Geometry | str:
        """An object's bins -> its geometry, or the reason it is invalid."""

    @abstractmethod
    def geometry_from_boxes(self, boxes: np.ndarray, canvas_size: float) -> np.ndarray:
        """(N,4) xyxy pixel boxes -> (N, L-1) continuous bin coordinates in grammar order: the best
        guess of each object's location tokens when only its box is known (a parallel slot's prior)."""

    def encode_objects(
        self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]
    ) -> ObjectTargets:
        """The objects ``request`` asks for, in canonical order: raster order of the top-left corner
        of their boxes (y1, then x1), ties broken by class index then instance index."""
        check_class_count(request.classes, self.vocab.max_classes)
        encoded = []
        for index, class_index in self.select_instances(request, annotations, dataset_classes):
            geometry = self.instance_geometry(annotations, index)
            if geometry is not None:
                bins, box = geometry
                encoded.append((box[1], box[0], class_index, index, bins, box))
        encoded.sort(key=lambda item: item[:4])
        length = self.object_length - 1
        return ObjectTargets(
            class_index=torch.tensor([item[2] for item in encoded], dtype=torch.long),
            bins=torch.tensor(np.array([item[4] for item in encoded], dtype=np.int64).reshape(-1, length)),
            boxes=torch.tensor(np.array([item[5] for item in encoded], dtype=np.float32).reshape(-1, 4)),
        )

    def target_sequence(self, targets: ObjectTargets) -> list[int]:
        """Global token ids of the answer: each object (class token, bins), then ``<eoo>``."""
        sequence = []
        for class_index, bins in zip(targets.class_index.tolist(), targets.bins.tolist()):
            sequence.append(self.vocab.class_id(class_index))
            sequence.extend(self.vocab.bin_id(b) for b in bins)
        sequence.append(self.vocab.eoo_id)
        return sequence

    def legal_local_ids(self, position: int, num_classes: int, parallel: bool) -> torch.Tensor:
        """Local ids the grammar allows at ``position`` within an object: the class tokens of the
        request plus ``<noobj>`` (parallel) or ``<eoo>`` (autoregressive) at 0, bins after."""
        if not 0 <= position < self.object_length:
            raise ValueError(f"position {position} is outside an object of length {self.object_length}")
        if position > 0:
            return self.vocab.bin_local_ids()
        stop = self.vocab.noobj_id if parallel else self.vocab.eoo_id
        stop_local = torch.tensor([self.vocab.to_local(stop)])
        return torch.cat([self.vocab.class_local_ids(num_classes), stop_local])

    # ---- parsing ---------------------------------------------------------------------------------
    def parse(
        self,
        token_ids: Sequence[int],
        request: Request,
        canvas_size: int,
        token_scores: Sequence[float] | None = None,
        object_boxes: Sequence[Sequence[float]] | None = None,
    ) -> ParseResult:
        """Walk the grammar over ``token_ids`` (global ids); never raises on the tokens themselves.
        An object's score is ``token_scores`` at its class token (1.0 without scores). ``object_boxes``
        (optional, one xyxy box in fractional bins per class token, in order) replace the boxes the
        objects' geometry implies, where they have an area (``boxes_from_seed``)."""
        tokens = [_as_int(token) for token in _as_token_list(token_ids)]
        scores = None if token_scores is None else [float(s) for s in _as_token_list(token_scores)]
        if scores is not None and len(scores) != len(tokens):
            raise ValueError(f"{len(scores)} scores for {len(tokens)} tokens")
        vocab, num_bins_per_object = self.vocab, self.object_length - 1
        result = ParseResult(objects=[], dropped=Counter(), finished=False)
        object_start: int | None = None  # position of the class token of the object being read
        object_bins: list[int] = []
        objects_read = 0  # class tokens so far: the index into ``object_boxes``
        empty_slot_left = 0  # bins still allowed in a <noobj> slot
        position = 0
        while position < len(tokens):
            token = tokens[position]
            is_bin = token is not None and vocab.is_bin(token)
            if object_start is not None:
                if not is_bin:  # interrupted: drop it, then read this token afresh
                    result.dropped["truncated"] += 1
                    object_start = None
                    continue
                object_bins.append(vocab.bin_index(token))
                if len(object_bins) == num_bins_per_object:
                    score = 1.0 if scores is None else scores[object_start]
                    outcome = self._complete_object(
                        tokens[object_start], object_bins, len(request.classes), canvas_size, score
                    )
                    if isinstance(outcome, str):
                        result.dropped[outcome] += 1
                    else:
                        outcome = self._with_box(outcome, object_boxes, objects_read - 1, canvas_size)
                        result.objects.append(outcome)
                    object_start = None
            elif empty_slot_left and is_bin:
                empty_slot_left -= 1
            elif token == vocab.eoo_id:
                result.finished = True
                if position + 1 < len(tokens):
                    result.dropped["after_end"] += len(tokens) - position - 1
                break
            elif token is not None and vocab.is_class(token):
                object_start, object_bins, empty_slot_left = position, [], 0
                objects_read += 1
            elif token == vocab.noobj_id:
                empty_slot_left = num_bins_per_object
            else:
                empty_slot_left = 0
                result.dropped["unexpected_token"] += 1
            position += 1
        if object_start is not None:
            result.dropped["truncated"] += 1
        return result

    def _with_box(
        self, obj: DetectedObject, boxes: Sequence[Sequence[float]] | None, index: int, canvas_size: int
    ) -> DetectedObject:
        """``obj`` with ``boxes[index]`` (fractional bins) as its box in pixels, when given and not empty."""
        if boxes is None:
            return obj
        x1, y1, x2, y2 = (float(v) for v in self.vocab.dequantize(np.asarray(boxes[index]), canvas_size))
        return replace(obj, box=(x1, y1, x2, y2)) if x2 > x1 and y2 > y1 else obj

    def _complete_object(
        self, class_token: int, bins: list[int], num_classes: int, canvas_size: int, score: float
    ) -> DetectedObject | str:
        """A complete object, or the reason it is dropped."""
        class_index = self.vocab.class_index(class_token)
        if class_index >= num_classes:
            return "class_out_of_range"
        geometry = self.decode_geometry(bins, canvas_size)
        if isinstance(geometry, str):
            return geometry
        return DetectedObject(class_index, geometry.box, score, geometry.polygon)


#: Canonical task name -> class, filled by :func:`register_task`.
TASKS: dict[str, type[TaskBase]] = {}


def register_task(task: type[TaskBase]) -> type[TaskBase]:
    """Class decorator: make ``task`` buildable by its name and synonyms and reachable from free-form
    instructions. A name or synonym that another task already uses is an error."""
    taken = {alias: name for name, other in TASKS.items() for alias in (name, *other.synonyms)}
    for alias in (task.name, *task.synonyms):
        if taken.get(alias, task.name) != task.name:
            raise ValueError(f"task name {alias!r} of {task.__name__} is already used by {taken[alias]!r}")
    if task.names_kind not in ("classes", "phrase", "none"):
        raise ValueError(
            f"{task.__name__}.names_kind must be 'classes', 'phrase' or 'none', not {task.names_kind!r}"
        )
    TASKS[task.name] = task
    return task


class TextTask(TaskBase):
    """A task answered in words: the LLM writes tokens of its tokenizer's own vocabulary and stops at
    its end token (``VisionLLM`` trains it with the LM loss on the answer, decodes it greedily). The
    class names a request lists are written plainly (no ``<ck>`` references: nothing points back), and the
    question comes last."""

    answer_format: ClassVar[str] = "Answer in words."
    #: Longest answer generated, in tokenizer tokens.
    max_answer_tokens: ClassVar[int] = 24

    @classmethod
    def render_text(cls, classes: Sequence[str], template_index: int = 0) -> str:
        """The answer format first, the question last: the answer then starts right after the question
        (and its ``<region>`` / ``<point>``), as a chat model reads a question just before answering."""
        listing = ", ".join(classes)
        body = cls.templates[template_index].format(classes=listing, phrase=listing)
        return f"{cls.answer_format} {body}"

    @abstractmethod
    def answer(self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]) -> str:
        """The right answer to ``request`` on this image (the training target)."""

    @staticmethod
    def normalise(text: str) -> str:
        """An answer as compared: lower case, single spaces, no surrounding punctuation."""
        return " ".join(text.lower().replace(" - ", "-").split()).strip(" .,!?;:")

    def summarize(self, examples: Sequence[tuple[Prediction, Any]]) -> dict[str, float]:
        """Exact-match accuracy of the normalised answers."""
        hits = [self.normalise(p.text or "") == self.normalise(str(ref)) for p, ref in examples]
        return {"accuracy": float(np.mean(hits)) if hits else 0.0}
