"""Object detection: for each requested object, its class reference and box.

Object grammar: ``<ck> x1 y1 x2 y2`` (4 bins, xyxy). A box narrower than one bin is widened to one
bin when encoded, so every target box parses back (x2 bin > x1 bin, y2 bin > y1 bin).

Training class lists (``sample_request``), drawn so the model has to read the list:

* with probability ``full_list_prob`` (a task option, default ``FULL_LIST_PROB``; if the
  dataset's classes fit the vocabulary): every dataset
  class, in dataset order half of the time (the evaluation instruction) and shuffled otherwise;
* otherwise a subset: each class present in the image is kept with probability
  ``KEEP_PRESENT_PROB`` (none of them with probability ``ABSENT_ONLY_PROB``, so the model learns to
  answer "nothing" when asked only for what is not there), plus a log-uniform number of absent
  classes from 0 to all: short lists such as "person and dog" are as common as long ones, where a
  uniform count would make a two-class list rare among 80 classes. The subset is shuffled and is
  never empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from visionllm.tasks.base import Cue, Geometry, ImageAnnotations, Request, Task, register_task
from visionllm.vocab import TaskVocab

FULL_LIST_PROB = 0.2
DATASET_ORDER_PROB = 0.5
KEEP_PRESENT_PROB = 0.7
ABSENT_ONLY_PROB = 0.1


def sample_class_list(
    dataset_classes: Sequence[str],
    present_labels: Sequence[int],
    max_classes: int,
    rng: np.random.Generator,
    full_list_prob: float = FULL_LIST_PROB,
) -> list[str]:
    """A random training class list (see the module docstring for the distribution)."""
    num_classes = len(dataset_classes)
    if num_classes <= max_classes and rng.random() < full_list_prob:
        order = np.arange(num_classes) if rng.random() < DATASET_ORDER_PROB else rng.permutation(num_classes)
        return [dataset_classes[i] for i in order]
    present = sorted(set(int(label) for label in present_labels))
    only_absent = rng.random() < ABSENT_ONLY_PROB
    kept = [] if only_absent else [label for label in present if rng.random() < KEEP_PRESENT_PROB]
    absent = np.setdiff1d(np.arange(num_classes), present)
    room = max(0, min(len(absent), max_classes - len(kept)))  # kept may overflow: cut below
    num_absent = int((room + 1) ** rng.random()) - 1  # log-uniform over 0..room
    chosen = kept + rng.choice(absent, size=num_absent, replace=False).tolist()
    if not chosen:
        pool = absent if len(absent) and (only_absent or not present) else present
        chosen = [int(rng.choice(pool))]
    order = rng.permutation(len(chosen))[:max_classes]
    return [dataset_classes[chosen[i]] for i in order]


#: Free-form detection requests: "detect ...", "find the cups", "where are the dogs", "box each ...",
#: "highlight / mark / circle the kites", "tell me where the seals are", "which of these appear: a, b",
#: "are there any carrots?", "I want all beetles located".
DETECT_CUE = re.compile(
    r"^(?:(?:please|kindly|now|can\s+you|could\s+you|would\s+you)\s+)*circle\b"
    r"|^(?:are\s+there|is\s+there|any)\b|^what\s+about\b"
    r"|^i\s+(?:want|need|'d\s+like)\s+(?:to\s+see\s+)?(?=.*\b(?:boxed|located|marked|highlighted|found)\b)"
    r"|\b(?:which\s+of\s+(?:these|those|the\s+following)|(?:tell\s+me|know|show(?:\s+me)?|see)\s+where"
    r"|where\s+(?:are|do|can|were)|detect\w*|find(?:ing)?|locat\w*|locali[sz]\w*|box(?:es)?|bounding"
    r"|spot|identify|highlight|mark|rectangles?|point\s+(?:to|at|out)|show(?:\s+me)?|look\s+for"
    r"|search\s+for|count)\b"
)


@register_task
class DetectionTask(Task):
    name = "detect"
    synonyms = ("detection", "det", "bbox", "object_detection")
    iou_types = ("bbox",)
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((30, DETECT_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = (
        "Detect all objects of the categories {classes} in the image.",
        "Find every instance of {classes} in this image.",
        "Locate all {classes} in the picture and give their bounding boxes.",
        "Which of these objects appear in the image: {classes}? Box each one.",
        "Draw a bounding box around each object that is one of {classes}.",
        "Identify and localize every object from the category set {classes}.",
        "Give the class and box of all {classes} you can see.",
        "Object detection. Categories: {classes}.",
        "Look for {classes} in the image and report each one with its box.",
        "Report the location of every object in the image that belongs to {classes}.",
    )
    answer_format = "Answer with the class <cls> and box <x1> <y1> <x2> <y2> of each object."
    example_instruction = "Find all the cups, knives and people; give class and box"

    def __init__(self, vocab: TaskVocab, full_list_prob: float = FULL_LIST_PROB) -> None:
        super().__init__(vocab)
        if not 0.0 <= full_list_prob <= 1.0:
            raise ValueError(f"full_list_prob must be in [0, 1], got {full_list_prob}")
        self.full_list_prob = full_list_prob

    @property
    def format_tokens(self) -> list[str]:
        return ["<cls>", "<x1>", "<y1>", "<x2>", "<y2>"]

    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        classes = sample_class_list(
            dataset_classes, annotations.labels, self.vocab.max_classes, rng, self.full_list_prob
        )
        return self.build_request(classes, template_index=int(rng.integers(len(self.templates))))

    def select_instances(
        self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]
    ) -> list[tuple[int, int]]:
        """Instances whose dataset class is named in the request, mapped to its position there."""
        position = {name: k for k, name in enumerate(request.classes)}
        names = [dataset_classes[label] for label in annotations.labels]
        return [(i, position[name]) for i, name in enumerate(names) if name in position]

    def instance_geometry(self, annotations: ImageAnnotations, index: int) -> tuple[np.ndarray, np.ndarray]:
        canvas = annotations.canvas_size
        box = np.clip(annotations.boxes[index], 0, canvas)
        return self.box_bins(box, canvas), box

    def box_bins(self, box: np.ndarray, canvas_size: float) -> np.ndarray:
        """xyxy pixels -> 4 bins, widened to at least one bin per side so the box stays valid."""
        x1, y1, x2, y2 = self.vocab.quantize(box, canvas_size)
        last = self.vocab.num_bins - 1
        x1, y1 = min(x1, last - 1), min(y1, last - 1)
        return np.array([x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)], dtype=np.int64)

    def geometry_from_boxes(self, boxes: np.ndarray, canvas_size: float) -> np.ndarray:
        return self.vocab.continuous_bins(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), canvas_size)

    def decode_geometry(self, bins: Sequence[int], canvas_size: float) -> Geometry | str:
        x1, y1, x2, y2 = bins
        if x2 <= x1 or y2 <= y1:
            return "degenerate_box"
        box = self.vocab.dequantize(np.asarray(bins), canvas_size)
        return Geometry(box=tuple(float(v) for v in box))
