"""Questions about the whole image, answered in words.

    caption         "Describe the image."           -> "two red circles, a small blue star and a green
                                                        cross" (from the annotations: objects grouped
                                                        by colour and class, left to right)
    count           "How many stars are there?"     -> "3" (digits; "0" for a class that is absent)
    color_question  "What colour is the circle?"    -> "red" (asked only of an object its class, or its
                                                        size and class, names unambiguously)

Without attributes (COCO) a caption lists classes with counts ("two people and a dog") and colour
questions are not asked. Metrics: caption CIDEr (``pycocoevalcap``'s scorer, pure Python), exact-match
accuracy for the other two.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from visionllm.tasks.base import Cue, ImageAnnotations, Request, TextTask, register_task
from visionllm.tasks.grounding import NoReferentError
from visionllm.tasks.regions import attribute_phrase
from visionllm.tasks.wording import class_names, pluralize

if TYPE_CHECKING:
    from visionllm.structures import Prediction

NUMBER_WORDS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
#: How often a counting question asks about a class that is absent (answer "0").
ABSENT_PROB = 0.25

CAPTION_CUE = re.compile(
    r"\b(?:describe|caption|summari[sz]e)\b.*\b(?:image|picture|photo|scene)\b"
    r"|^what(?:'s|\s+is)\s+in\s+(?:the|this)\s+(?:image|picture|photo)"
    r"|^(?:describe|caption)\s*(?:it|this)?[.?!]?$"
)
COUNT_CUE = re.compile(r"^(?:please\s+)?how\s+many\b")
COLOR_CUE = re.compile(r"\bwhat\s+colou?r\b|\bwhich\s+colou?r\b")


def join_words(parts: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


@register_task
class CaptionTask(TextTask):
    name = "caption"
    synonyms = ("captioning", "image_caption", "describe_image")
    names_kind = "none"
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((9, CAPTION_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = (
        "Describe the image.",
        "What is in this picture?",
        "Write a short caption for the image.",
        "Summarize the scene in one sentence.",
    )
    example_instruction = "describe the image"
    max_answer_tokens: ClassVar[int] = 40

    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        return self.build_request([], int(rng.integers(len(self.templates))))

    def answer(self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]) -> str:
        groups: dict[tuple[str, int], list[int]] = {}
        for index in np.argsort(annotations.boxes[:, 0], kind="stable").tolist():
            key = (annotations.attributes[index].get("color", ""), int(annotations.labels[index]))
            groups.setdefault(key, []).append(index)
        parts = []
        for (color, label), members in groups.items():
            if len(members) == 1:
                parts.append(attribute_phrase(annotations, members[0], dataset_classes))
                if not color:  # no attributes: "a dog"
                    parts[-1] = f"{'an' if parts[-1][0] in 'aeiou' else 'a'} {parts[-1]}"
            else:
                count = NUMBER_WORDS[len(members)] if len(members) < len(NUMBER_WORDS) else str(len(members))
                parts.append(" ".join(w for w in (count, color, pluralize(dataset_classes[label])) if w))
        return join_words(parts) if parts else "nothing"

    def eval_examples(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> list[tuple[Request, Any]]:
        request = self.build_request([])
        return [(request, self.answer(request, annotations, dataset_classes))]

    def summarize(self, examples: Sequence[tuple[Prediction, Any]]) -> dict[str, float]:
        """CIDEr (one reference per image) and exact-match accuracy."""
        from pycocoevalcap.cider.cider import Cider

        if not examples:
            return {}
        references = {i: [self.normalise(str(ref))] for i, (_, ref) in enumerate(examples)}
        candidates = {i: [self.normalise(p.text or "") or "nothing"] for i, (p, _) in enumerate(examples)}
        cider, _ = Cider().compute_score(references, candidates)
        return {"CIDEr": float(cider), **super().summarize(examples)}


@register_task
class CountingTask(TextTask):
    name = "count"
    synonyms = ("counting", "how_many")
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((28, COUNT_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = (
        "How many {classes} are there?",
        "Count the {classes} in the image.",
        "What is the number of {classes} in this picture?",
    )
    answer_format = "Answer with a number."
    example_instruction = "how many stars are there?"

    @classmethod
    def render_text(cls, classes: Sequence[str], template_index: int = 0) -> str:
        """Counting asks for one class, named in the plural."""
        if len(classes) != 1:
            raise ValueError(f"a counting question counts one class, got {list(classes)}")
        return super().render_text([pluralize(classes[0])], template_index)

    @classmethod
    def names_from_text(cls, text: str, cue_end: int, known_classes: Sequence[str] | None) -> list[str]:
        """The one class counted: the first name after "how many"."""
        names = super().names_from_text(text, cue_end, known_classes)
        return names[:1]

    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        present = sorted(set(annotations.labels.tolist()))
        absent = [k for k in range(len(dataset_classes)) if k not in present]
        pool = absent if absent and (not present or rng.random() < ABSENT_PROB) else present
        label = pool[int(rng.integers(len(pool)))]
        return self.build_request([dataset_classes[label]], int(rng.integers(len(self.templates))))

    def answer(self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]) -> str:
        label = list(dataset_classes).index(request.classes[0])
        return str(int((annotations.labels == label).sum()))

    def eval_examples(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> list[tuple[Request, Any]]:
        """Two classes present (the first in label order) and one absent class."""
        present = sorted(set(annotations.labels.tolist()))[:2]
        absent = [k for k in range(len(dataset_classes)) if k not in present]
        labels = present + absent[int(rng.integers(len(absent))) :][:1]
        requests = [self.build_request([dataset_classes[label]]) for label in labels]
        return [(r, self.answer(r, annotations, dataset_classes)) for r in requests]


@register_task
class ColorQuestionTask(TextTask):
    name = "color_question"
    synonyms = ("colour_question", "color", "colour", "what_color")
    names_kind = "phrase"
    cues: ClassVar[tuple[tuple[int, Cue], ...]] = ((9, COLOR_CUE.search),)
    templates: ClassVar[tuple[str, ...]] = (
        "What colour is the {phrase}?",
        "What color is the {phrase}?",
        "Tell me the colour of the {phrase}.",
    )
    answer_format = "Answer with one word."
    example_instruction = "what colour is the large circle?"

    @classmethod
    def names_from_text(cls, text: str, cue_end: int, known_classes: Sequence[str] | None) -> list[str]:
        """The object asked about: the words after "what colour is the"."""
        rest = re.sub(r"^\s*(?:is|are)?\s*(?:the|this|that)?\s*", "", text[cue_end:]).rstrip("?.! ")
        names = class_names(rest, None) if rest else []
        return [" ".join(names)] if names else []

    @staticmethod
    def askable(annotations: ImageAnnotations, dataset_classes: Sequence[str]) -> list[tuple[int, str]]:
        """(instance, phrase) pairs whose phrase names exactly one instance: "circle" when it is the only
        circle, else "large circle" when it is the only large one."""
        pairs = []
        for index, label in enumerate(annotations.labels.tolist()):
            attributes = annotations.attributes[index]
            if "color" not in attributes:
                continue
            same = np.flatnonzero(annotations.labels == label)
            name = dataset_classes[label]
            if len(same) == 1:
                pairs.append((index, name))
            elif "size" in attributes and [
                i for i in same if annotations.attributes[i].get("size") == attributes["size"]
            ] == [index]:
                pairs.append((index, f"{attributes['size']} {name}"))
        return pairs

    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        pairs = self.askable(annotations, dataset_classes)
        if not pairs:
            raise NoReferentError("no instance of this image has a colour and an unambiguous name")
        index, phrase = pairs[int(rng.integers(len(pairs)))]
        return self.build_request([phrase], int(rng.integers(len(self.templates))), target_indices=[index])

    def answer(self, request: Request, annotations: ImageAnnotations, dataset_classes: Sequence[str]) -> str:
        return str(annotations.attributes[request.target_indices[0]]["color"])

    def eval_examples(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> list[tuple[Request, Any]]:
        requests = [
            self.build_request([phrase], target_indices=[index])
            for index, phrase in self.askable(annotations, dataset_classes)[:2]
        ]
        return [(r, self.answer(r, annotations, dataset_classes)) for r in requests]
