"""Questions about regions: a ``<region>`` placeholder per user box, answered in words.

    region_classify  "What is <region>?"                         -> the class name ("star")
    region_describe  "Describe <region>."                        -> its attribute phrase ("a large red
                                                                    star"), the class name when the
                                                                    dataset has no attributes
    region_compare   "Is <region> larger than <region>?"         -> yes / no
                     "Which is further left, <region> or <region>?" -> first / second
                     "Are <region> and <region> the same colour?" -> yes / no

The model fills each ``<region>`` with RoI features of its box (``visionllm.models.prompt_encoder``).
Training boxes are the annotated boxes, each side moved by up to ``BOX_JITTER`` of the box's size, so
the answer does not hinge on a pixel-exact box. Comparisons are asked only where the answer is clear:
areas differ by ``AREA_RATIO`` at least, box centres by ``POSITION_MARGIN`` of the canvas.
Metric: exact-match accuracy of the normalised answer (``TextTask.summarize``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from visionllm.tasks.base import Cue, ImageAnnotations, Request, TextTask, register_task
from visionllm.tasks.grounding import NoReferentError
from visionllm.vocab import TaskVocab

BOX_JITTER = 0.1
AREA_RATIO = 1.5
POSITION_MARGIN = 0.05
#: Examples scored per image by default (the first instances in annotation order).
EVAL_PER_IMAGE = 2

#: "what is this", "what's in the box", "what object is that", "classify the region", "name it".
CLASSIFY_CUE = re.compile(
    r"^(?:please\s+)?(?:what(?:'s|\s+is)\s+(?:this|that|it|here|there|in|inside|<region>)|what\s+(?:kind|"
    r"sort|type|class)\s+of|what\s+(?:object|thing)\b|classify|name\s+(?:this|that|it|the))"
)
#: "describe the object in the box", "tell me about this region", "caption the region".
DESCRIBE_CUE = re.compile(r"\b(?:describe|caption|tell\s+me\s+about|what\s+does\s+.+\s+look\s+like)\b")
#: "is this larger than that", "which is further left", "are they the same colour", "compare".
COMPARE_CUE = re.compile(
    r"\b(?:larger|bigger|smaller|further|farther|left|right|same\s+colou?r|compare|which\s+(?:one\s+)?is)\b"
)


def jitter_box(box: np.ndarray, rng: np.random.Generator, canvas_size: float) -> np.ndarray:
    """A training region: ``box`` (xyxy) with each side moved by up to ``BOX_JITTER`` of its size,
    kept inside the canvas and at least one pixel wide and high."""
    x1, y1, x2, y2 = (float(v) for v in box)
    width, height = x2 - x1, y2 - y1
    moved = np.array([x1, y1, x2, y2]) + rng.uniform(-BOX_JITTER, BOX_JITTER, 4) * np.array(
        [width, height, width, height]
    )
    moved = np.clip(moved, 0.0, canvas_size)
    moved[2] = max(moved[2], moved[0] + 1.0)
    moved[3] = max(moved[3], moved[1] + 1.0)
    return moved


def attribute_phrase(annotations: ImageAnnotations, index: int, dataset_classes: Sequence[str]) -> str:
    """ "a large red star" from the instance's size and colour attributes; the class name without them."""
    name = dataset_classes[int(annotations.labels[index])]
    attributes = annotations.attributes[index]
    words = [str(attributes[key]) for key in ("size", "color") if key in attributes]
    if not words:
        return name
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words, name])


def box_area(box: Sequence[float]) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def box_centre_x(box: Sequence[float]) -> float:
    return float(box[0] + box[2]) / 2


class RegionTask(TextTask):
    """What the one-region questions share: a request about one instance, boxed by its region."""

    region_inputs: ClassVar[int] = 1
    names_kind = "none"

    def __init__(self, vocab: TaskVocab, eval_per_image: int = EVAL_PER_IMAGE) -> None:
        super().__init__(vocab)
        self.eval_per_image = eval_per_image

    def request_about(
        self, indices: Sequence[int], annotations: ImageAnnotations, template_index: int, rng=None
    ) -> Request:
        """The request about instances ``indices``: their boxes (jittered when ``rng`` is given)."""
        boxes = [annotations.boxes[i] for i in indices]
        if rng is not None:
            boxes = [jitter_box(box, rng, annotations.canvas_size) for box in boxes]
        return self.build_request([], template_index, target_indices=indices, regions=boxes)

    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        index = int(rng.integers(len(annotations)))
        return self.request_about([index], annotations, int(rng.integers(len(self.templates))), rng)

    def eval_examples(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> list[tuple[Request, Any]]:
        examples = []
        for index in range(min(len(annotations), self.eval_per_image)):
            request = self.request_about([index], annotations, 0)
            examples.append((request, self.answer(request, annotations, dataset_classes)))
        return examples


@register_task
class RegionClassificationTask(RegionTask):
    name = "region_classify"
    synonyms = ("region_classification", "classify_region")
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((12, CLASSIFY_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = (
        "What is <region>?",
        "What kind of object is <region>?",
        "Name the object in <region>.",
        "Which class does <region> belong to?",
        "What do you see in <region>?",
    )
    example_instruction = "what is this? (with --region x1,y1,x2,y2)"

    def answer(self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]) -> str:
        return dataset_classes[int(annotations.labels[request.target_indices[0]])]


@register_task
class RegionDescriptionTask(RegionTask):
    name = "region_describe"
    synonyms = ("region_description", "region_caption", "describe_region")
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((14, DESCRIBE_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = (
        "Describe <region>.",
        "Give a short description of <region>.",
        "What does <region> look like?",
        "Tell me about the object in <region>.",
    )
    example_instruction = "describe the object in the box (with --region x1,y1,x2,y2)"

    def answer(self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]) -> str:
        return attribute_phrase(annotations, request.target_indices[0], dataset_classes)


#: Comparison kinds: their templates (first region, then second) and how the answer follows.
COMPARISONS: dict[str, tuple[str, ...]] = {
    "larger": (
        "Is <region> larger than <region>?",
        "Is <region> bigger than <region>?",
        "Compare the sizes: is <region> larger than <region>?",
    ),
    "left": (
        "Which is further left, <region> or <region>?",
        "Which of <region> and <region> is more to the left?",
        "Which one is on the left: <region> or <region>?",
    ),
    "color": (
        "Are <region> and <region> the same colour?",
        "Do <region> and <region> have the same color?",
        "Is <region> the same colour as <region>?",
    ),
}


@register_task
class RegionComparisonTask(RegionTask):
    name = "region_compare"
    synonyms = ("region_comparison", "compare_regions")
    region_inputs: ClassVar[int] = 2
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((13, COMPARE_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = tuple(t for group in COMPARISONS.values() for t in group)
    example_instruction = "is this one larger than that one? (with two --region boxes)"

    @classmethod
    def template_for_text(cls, text: str) -> int:
        """The first template of the comparison the text asks for (left/right, colour, else size)."""
        kind = "left" if re.search(r"\b(?:left|right)\b", text) else "color" if "colo" in text else "larger"
        return cls.templates.index(COMPARISONS[kind][0])

    @staticmethod
    def kind(template_index: int) -> str:
        """The comparison a template asks for."""
        for kind, group in COMPARISONS.items():
            if template_index < len(group):
                return kind
            template_index -= len(group)
        raise ValueError("template index outside the comparison templates")

    def _kind_of(self, request: Request) -> str:
        return self.kind(self.templates.index(request.text[len(self.answer_format) + 1 :]))

    @staticmethod
    def clear_pairs(annotations: ImageAnnotations, kind: str) -> list[tuple[int, int]]:
        """Ordered instance pairs whose comparison of ``kind`` has a clear answer."""
        pairs = []
        margin = POSITION_MARGIN * annotations.canvas_size
        for a in range(len(annotations)):
            for b in range(len(annotations)):
                if a == b:
                    continue
                box_a, box_b = annotations.boxes[a], annotations.boxes[b]
                if kind == "larger":
                    ratio = box_area(box_a) / max(box_area(box_b), 1e-9)
                    clear = ratio >= AREA_RATIO or ratio <= 1 / AREA_RATIO
                elif kind == "left":
                    clear = abs(box_centre_x(box_a) - box_centre_x(box_b)) >= margin
                else:
                    clear = "color" in annotations.attributes[a] and "color" in annotations.attributes[b]
                if clear:
                    pairs.append((a, b))
        return pairs

    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        options = [
            (index, pair)
            for index in range(len(self.templates))
            for pair in self.clear_pairs(annotations, self.kind(index))
        ]
        if not options:
            raise NoReferentError("no two instances of this image compare clearly")
        template_index, pair = options[int(rng.integers(len(options)))]
        return self.request_about(list(pair), annotations, template_index, rng)

    def eval_examples(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> list[tuple[Request, Any]]:
        examples = []
        start = 0
        for kind, group in COMPARISONS.items():
            pairs = self.clear_pairs(annotations, kind)
            if pairs:
                pair = pairs[int(rng.integers(len(pairs)))]
                request = self.request_about(list(pair), annotations, start)
                examples.append((request, self.answer(request, annotations, dataset_classes)))
            start += len(group)
        return examples

    def summarize(self, examples: Sequence[tuple[Any, Any]]) -> dict[str, float]:
        """Accuracy over every comparison, and over each kind alone (``accuracy_larger``, ``_left``,
        ``_color``): the kinds read different things (the boxes' sizes, their positions, the colours)."""
        scores = super().summarize(examples)
        for kind in COMPARISONS:
            of_kind = [(p, ref) for p, ref in examples if self._kind_of(p.request) == kind]
            if of_kind:
                scores[f"accuracy_{kind}"] = super().summarize(of_kind)["accuracy"]
        return scores

    def answer(self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]) -> str:
        a, b = request.target_indices
        box_a, box_b = annotations.boxes[a], annotations.boxes[b]
        kind = self._kind_of(request)
        if kind == "larger":
            return "yes" if box_area(box_a) > box_area(box_b) else "no"
        if kind == "left":
            return "first" if box_centre_x(box_a) < box_centre_x(box_b) else "second"
        same = annotations.attributes[a].get("color") == annotations.attributes[b].get("color")
        return "yes" if same else "no"
