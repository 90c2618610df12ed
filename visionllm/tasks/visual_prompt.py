"""Visual-prompt detection: "Find every object like <region>" -> every object of that kind, boxed.

The class is given by an example instead of a name (as T-Rex2 and DINO-X take visual prompts): the
request's one class, "object like the region", is bound to ``<c0>`` right after the ``<region>``
placeholder, so the LLM's class pointer reads the region's features. The image tokenizer scores its
visual tokens against a class feature pooled from the region (``PromptEncoder.region_class_features``)
where other requests use a class name's text features: its detections seed the parallel slots as usual.
The answer is the detection grammar (``<c0> x1 y1 x2 y2`` per object).

Training: a random instance's box (jittered) is the prompt; the targets are all instances of its class.
Metric: box AP over (image, class) examples, beside the AP of the same examples asked by class name
("Find every star"), so the ratio says what the example costs against the name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from visionllm.tasks.base import Cue, ImageAnnotations, Request, register_task
from visionllm.tasks.detection import DetectionTask
from visionllm.tasks.regions import jitter_box

if TYPE_CHECKING:
    from visionllm.structures import Prediction

#: Classes scored per image (the first ones present, in label order).
EVAL_CLASSES_PER_IMAGE = 2
LIKE_CUE = re.compile(
    r"\b(?:like\s+(?:this|that|the\s+one|<region>)|similar\s+to|same\s+(?:kind|type|class)|more\s+of\s+these)\b"
)


@register_task
class VisualPromptDetectionTask(DetectionTask):
    name = "detect_like"
    synonyms = ("visual_prompt", "visual_prompt_detection", "find_similar")
    iou_types = ()
    names_kind = "none"
    region_inputs: ClassVar[int] = 1
    #: the tokenizer's class feature comes from the region, not from a name
    class_from_region: ClassVar[bool] = True
    fixed_classes = ("object like the region",)
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((15, LIKE_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = (
        "Find every object like <region>, the {classes}.",
        "Detect all objects of the same kind as <region>, the {classes}.",
        "Box everything that looks like <region>, the {classes}.",
        "Where are the other objects similar to <region>, the {classes}?",
    )
    example_instruction = "find every object like this one (with --region x1,y1,x2,y2)"

    def request_like(
        self, index: int, annotations: ImageAnnotations, template_index: int, rng=None
    ) -> Request:
        """Instance ``index``'s box as the prompt (jittered when ``rng`` is given); all instances of its
        class are the answer."""
        box = annotations.boxes[index]
        if rng is not None:
            box = jitter_box(box, rng, annotations.canvas_size)
        same = np.flatnonzero(annotations.labels == annotations.labels[index]).tolist()
        return self.build_request(self.fixed_classes, template_index, target_indices=same, regions=[box])

    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        index = int(rng.integers(len(annotations)))
        return self.request_like(index, annotations, int(rng.integers(len(self.templates))), rng)

    def select_instances(
        self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]
    ) -> list[tuple[int, int]]:
        return [(index, 0) for index in request.target_indices]

    def eval_examples(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> list[tuple[Request, Any]]:
        """Per class present: its first instance as the prompt, and the same class asked by name."""
        examples = []
        for label in sorted(set(annotations.labels.tolist()))[:EVAL_CLASSES_PER_IMAGE]:
            index = int(np.flatnonzero(annotations.labels == label)[0])
            boxes = annotations.boxes[annotations.labels == label]
            name = dataset_classes[label]
            examples.append((self.request_like(index, annotations, 0), ("visual", boxes)))
            by_name = Request("detect", [name], DetectionTask.render_text([name]))
            examples.append((by_name, ("named", boxes)))
        return examples

    def summarize(self, examples: Sequence[tuple[Prediction, Any]]) -> dict[str, float]:
        """Box AP and AP50 of the visual prompts, the AP of the same classes asked by name, and their
        ratio."""
        from visionllm.evaluation.coco_eval import box_ap

        metrics = {}
        for kind, prefix in (("visual", ""), ("named", "named_")):
            rows = [(ref, p.boxes, p.scores) for p, (k, ref) in examples if k == kind]
            if rows:
                metrics[f"{prefix}AP"], metrics[f"{prefix}AP50"] = box_ap(rows)
        if metrics.get("named_AP"):
            metrics["ratio"] = metrics["AP"] / metrics["named_AP"]
        return metrics
