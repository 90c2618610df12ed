"""Visual grounding: a referring phrase -> one box.

The request's class list is ``[phrase]``, so the answer is ``<c0> x1 y1 x2 y2 <eoo>`` (the
detection grammar with one object). ``parse`` returns every valid candidate (a parallel decoder
yields one per slot); :meth:`GroundingTask.referent` picks the best-scoring one.

Training phrases are generated from an instance's category, its ``size``/``color`` attributes when
the dataset has them, and its position among the instances the rest of the phrase describes:
"the circle", "the red circle", "the large red circle on the left", "the small triangle at the top".
A phrase is used only when it designates exactly one instance:

* without a position, the instance must be the only one of its category with those attributes
  (an instance whose attribute is unknown counts as matching, to stay on the safe side);
* with a position ("on the left" = smallest box-centre x, "on the right", "at the top",
  "at the bottom"), the instance must be the extreme one among at least two such instances, ahead of
  the runner-up by ``position_margin`` of the canvas.

Accuracy is ``GroundingAccuracy`` (Acc@0.5): the fraction of phrases whose predicted box has
IoU >= 0.5 with the target box.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, ClassVar

import numpy as np
from mmengine.evaluator import BaseMetric

from visionllm.registry import METRICS
from visionllm.tasks.base import Cue, DetectedObject, ImageAnnotations, Request, register_task
from visionllm.tasks.detection import DETECT_CUE, DetectionTask
from visionllm.tasks.segmentation import SEGMENT_CUE
from visionllm.tasks.wording import is_definite_singular, object_segment
from visionllm.vocab import TaskVocab

#: Attributes used in phrases, in English adjective order ("the large red circle").
PHRASE_ATTRIBUTES = ("size", "color")
#: Position qualifiers: (words, box-centre axis, +1 when the extreme is the largest value).
POSITIONS = (("on the left", 0, -1), ("on the right", 0, 1), ("at the top", 1, -1), ("at the bottom", 1, 1))

#: Free-form grounding questions: "where is ...", "which one is ...", "point to ...", "ground ...".
GROUND_CUE = re.compile(
    r"^(?:(?:please|kindly|can\s+you|could\s+you|would\s+you)\s+)*"
    r"(?:where(?:\s+exactly)?(?:\s+is|'s)|which\s+(?:one|object)\s+is)\b"
    r"|^ground\b|\brefer(?:s|ring)?\s+to\b"
)
#: Detection verbs that ask for one object when followed by a definite singular phrase ("point to the
#: dog on the left", "box the small yellow circle"; "point out the bananas" stays detection).
REFERRING_VERBS = re.compile(
    r"^(?:(?:please|kindly|now|can\s+you|could\s+you|would\s+you)\s+)*"
    r"(?:find|locate|show(?:\s+me)?|look\s+for|search\s+for|point\s+(?:to|at|out)|box|highlight|mark|circle)$"
)
_GROUND_LEAD = re.compile(
    r"^(?:(?:please|kindly|can\s+you|could\s+you|would\s+you)\s+)*"
    r"(?:where(?:\s+exactly)?(?:\s+is|'s)|which\s+(?:one|object)\s+is|point\s+(?:to|at|out)|find|locate"
    r"|show(?:\s+me)?|look\s+for|search\s+for|ground(?:\s+the\s+(?:phrase|expression))?|highlight|mark|circle"
    r"|give\s+(?:me\s+)?the\s+(?:bounding\s+)?box\s+(?:of|for|around)|box)\s+"
)
_GROUND_TRAIL = re.compile(r"\s+(?:(?:in|on|from)\s+(?:the|this)\s+(?:image|picture|photo)|please)$")


def referring_request(text: str) -> re.Match | None:
    """A detection verb, then one definite, singular noun phrase ("find the man in the red shirt"), in
    an instruction without segmentation words ("show the outline of the red car" is segmentation)."""
    match = DETECT_CUE.search(text)
    if (
        match
        and not SEGMENT_CUE.search(text)
        and REFERRING_VERBS.match(match.group(0))
        and is_definite_singular(object_segment(text, match.end()))
    ):
        return match
    return None


def phrase_from_text(text: str) -> str:
    """``"where is the man in the red shirt?"`` -> ``"the man in the red shirt"``."""
    phrase = text.strip().rstrip("?.! ")
    phrase = _GROUND_LEAD.sub("", phrase, count=1)
    return _GROUND_TRAIL.sub("", phrase).strip()


@dataclass(frozen=True)
class ReferringExpression:
    index: int  # the instance in ImageAnnotations that the phrase designates
    phrase: str


class NoReferentError(ValueError):
    """Raised when no instance of an image can be described unambiguously."""


@register_task
class GroundingTask(DetectionTask):
    name = "ground"
    synonyms = ("grounding", "visual_grounding", "refer", "referring", "rec")
    iou_types = ()
    #: questions first; a referring "find the ..." next (before other tasks' cues: "point to the dog on
    #: the left" names one object, it compares nothing; a list or a plural is not a referring phrase)
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((10, GROUND_CUE.search), (11, referring_request))
    names_kind = "phrase"
    templates: ClassVar[tuple[str, ...]] = (
        "Find {phrase} in the image.",
        "Where is {phrase}?",
        "Give the bounding box of {phrase}.",
        "Locate the object described as {phrase}.",
        "Which object is {phrase}? Box it.",
        "Point out {phrase} with a box.",
        "Show me {phrase}.",
        "Ground the expression {phrase} in the image.",
    )
    answer_format = "Answer with the reference <cls> and the box <x1> <y1> <x2> <y2>."
    example_instruction = "where is the man in the red shirt?"

    @classmethod
    def names_from_text(cls, text: str, cue_end: int, known_classes: Sequence[str] | None) -> list[str]:
        """The referring phrase: the instruction without its lead ("where is") and trail ("please")."""
        phrase = phrase_from_text(text)
        return [phrase] if phrase else []

    def __init__(self, vocab: TaskVocab, position_margin: float = 0.05) -> None:
        super().__init__(vocab)
        self.position_margin = position_margin

    def request_for_eval(self, dataset_classes: Sequence[str]) -> Request:
        """``dataset_classes`` is the class list of a grounding request: ``[phrase]``."""
        if len(dataset_classes) != 1:
            raise ValueError(f"a grounding request has exactly one phrase, got {list(dataset_classes)}")
        return self.build_request(dataset_classes)

    def referring_expressions(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations
    ) -> list[ReferringExpression]:
        """Every unambiguous phrase for every instance; per instance the plainest comes first."""
        centres = (annotations.boxes[:, :2] + annotations.boxes[:, 2:]) / 2
        margin = self.position_margin * annotations.canvas_size
        expressions = []
        for index, label in enumerate(annotations.labels):
            known = [key for key in PHRASE_ATTRIBUTES if key in annotations.attributes[index]]
            for size in range(len(known) + 1):
                for keys in combinations(known, size):
                    matching = [
                        other
                        for other in np.flatnonzero(annotations.labels == label)
                        if all(
                            annotations.attributes[other].get(k, annotations.attributes[index][k])
                            == annotations.attributes[index][k]
                            for k in keys
                        )
                    ]
                    words = [str(annotations.attributes[index][k]) for k in keys] + [dataset_classes[label]]
                    noun_phrase = "the " + " ".join(words)
                    others = [other for other in matching if other != index]
                    if not others:
                        expressions.append(ReferringExpression(index, noun_phrase))
                        continue
                    for qualifier, axis, sign in POSITIONS:
                        gap = sign * (centres[index, axis] - centres[others, axis])
                        if np.all(gap >= margin):
                            expressions.append(ReferringExpression(index, f"{noun_phrase} {qualifier}"))
        return expressions

    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        """A random phrase for a random describable instance (uniform over instances first, so
        instances with many phrasings are not favoured), with a random template."""
        expressions = self.referring_expressions(dataset_classes, annotations)
        if not expressions:
            raise NoReferentError("no instance in this image can be described unambiguously")
        instances = sorted({e.index for e in expressions})
        chosen = instances[int(rng.integers(len(instances)))]
        phrases = [e.phrase for e in expressions if e.index == chosen]
        phrase = phrases[int(rng.integers(len(phrases)))]
        template_index = int(rng.integers(len(self.templates)))
        return self.build_request([phrase], template_index=template_index, target_indices=[chosen])

    def select_instances(
        self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]
    ) -> list[tuple[int, int]]:
        """The instances the phrase refers to (``request.target_indices``), all answered as ``<c0>``."""
        for index in request.target_indices:
            if not 0 <= index < len(annotations):
                raise ValueError(f"target index {index} is outside the {len(annotations)} instances")
        return [(index, 0) for index in request.target_indices]

    @staticmethod
    def referent(objects: Sequence[DetectedObject]) -> DetectedObject | None:
        """The answer to a grounding request: the highest-scoring candidate (first on ties)."""
        return max(objects, key=lambda obj: obj.score, default=None)


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU of two xyxy boxes."""
    width = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
    height = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
    intersection = max(width, 0.0) * max(height, 0.0)
    area_a = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
    area_b = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
    union = area_a + area_b - intersection
    return float(intersection / union) if union > 0 else 0.0


def _field(container: Any, key: str) -> Any:
    """``container[key]`` for dicts (mmengine's evaluator passes ``to_dict()`` output) or attributes."""
    return container[key] if isinstance(container, dict) else getattr(container, key)


def _box_rows(boxes: Any) -> np.ndarray:
    """Boxes as an (n, 4) float array, from a tensor, an array or mmdet's box structures."""
    boxes = getattr(boxes, "tensor", boxes)
    boxes = boxes.detach().cpu().numpy() if hasattr(boxes, "detach") else np.asarray(boxes)
    return boxes.astype(np.float64).reshape(-1, 4)


@METRICS.register_module()
class GroundingAccuracy(BaseMetric):
    """Acc@IoU: the fraction of referring expressions whose top-scoring predicted box has
    IoU >= ``iou_threshold`` with the target box.

    Each data sample needs ``pred_instances`` with ``bboxes`` (and ``scores`` when there are several
    candidates) and ``gt_instances.bboxes`` holding the target box, both in the same pixel frame.
    A sample without predictions counts as a miss.
    """

    default_prefix = "grounding"

    def __init__(
        self, iou_threshold: float = 0.5, collect_device: str = "cpu", prefix: str | None = None
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.iou_threshold = iou_threshold

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        for sample in data_samples:
            predictions = _field(sample, "pred_instances")
            boxes = _box_rows(_field(predictions, "bboxes"))
            target = _box_rows(_field(_field(sample, "gt_instances"), "bboxes"))[0]
            if len(boxes) == 0:
                self.results.append(False)
                continue
            scores = _scores(predictions, len(boxes))
            self.results.append(box_iou(boxes[int(np.argmax(scores))], target) >= self.iou_threshold)

    def compute_metrics(self, results: list) -> dict[str, float]:
        return {f"acc@{self.iou_threshold:g}": float(np.mean(results)) if results else 0.0}


def _scores(predictions: Any, count: int) -> np.ndarray:
    """Prediction scores, or equal scores (first box wins) when none are given."""
    try:
        scores = _field(predictions, "scores")
    except (KeyError, AttributeError):
        return np.ones(count)
    scores = scores.detach().cpu().numpy() if hasattr(scores, "detach") else np.asarray(scores)
    return scores.astype(np.float64).reshape(-1)
