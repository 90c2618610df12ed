"""User instructions -> a :class:`Request`: which task, which classes (or which phrase).

Two ways in, one result:

* free-form text: ``"Find all the cups, knives and people; give class and box"``,
  ``"segment every dog"``, ``"where is the man in the red shirt?"``;
* a Python call: ``resolve_instruction(task="detect", classes=["cup", "knife"])``.

The user's words choose the task and the class list; the model then reads that task's canonical
instruction (its first template, or a random one when ``rng`` is given), the wording it was trained
on. Free-form resolution is keyword based, in this order: segmentation words (segment, mask,
outline, ...), grounding questions (where is ..., which one is ..., point to ...), then detection
verbs (detect, find, locate, box, ...). "find/locate/show me" followed by one definite, singular
noun phrase ("find the man in the red shirt") is grounding; a list or plural ("find the cups") is
detection. Class names are singularised ("knives" -> "knife", "people" -> "person") and, when
``known_classes`` are given, matched against them (multi-word names included); unknown names are
kept as written, because the class set is whatever the instruction says.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from visionllm.tasks import SUPPORTED_TASKS, TASKS, canonical_task_name
from visionllm.tasks.base import Request, check_class_count
from visionllm.vocab import DEFAULT_MAX_CLASSES

__all__ = ["Request", "resolve_instruction", "singularize", "singular_candidates"]

_IRREGULAR_PLURALS = {
    "people": "person", "persons": "person", "men": "man", "women": "woman", "children": "child",
    "mice": "mouse", "geese": "goose", "teeth": "tooth", "feet": "foot", "oxen": "ox", "dice": "die",
    "knives": "knife", "wives": "wife", "lives": "life", "leaves": "leaf", "wolves": "wolf",
    "shelves": "shelf", "halves": "half", "calves": "calf", "loaves": "loaf", "thieves": "thief",
    "scarves": "scarf", "cacti": "cactus", "fungi": "fungus", "buses": "bus", "potatoes": "potato",
    "tomatoes": "tomato", "heroes": "hero", "mangoes": "mango", "volcanoes": "volcano", "echoes": "echo",
}  # fmt: skip
_UNINFLECTED = {
    "sheep", "deer", "fish", "moose", "bison", "aircraft", "series", "species", "scissors", "skis",
    "broccoli", "police", "pants", "jeans", "shorts", "trousers", "binoculars", "headphones", "news",
}  # fmt: skip

_SEGMENT_CUE = re.compile(r"\b(?:segment\w*|masks?|outlin\w*|contours?|polygons?|silhouettes?|delineat\w*)\b")
_GROUND_CUE = re.compile(
    r"^(?:please\s+)?(?:where\s+(?:is|'s)|which\s+(?:one|object)\s+is|point\s+(?:to|at|out))\b"
    r"|^ground\b|\brefer(?:s|ring)?\s+to\b"
)
_DETECT_CUE = re.compile(
    r"\b(?:detect\w*|find|locate|locali[sz]\w*|box(?:es)?|bounding|spot|identify|where\s+are"
    r"|show(?:\s+me)?|look\s+for|search\s+for|count)\b"
)
#: Detection verbs that ask for one object when followed by a definite singular phrase.
_REFERRING_VERBS = re.compile(r"^(?:find|locate|show(?:\s+me)?|look\s+for|search\s+for)$")
_CLAUSE_END = re.compile(
    r"[;.?!]|\b(?:give|giving|return|output|with|and\s+(?:give|return|output|draw|mark|report))\b"
    r"|\b(?:in|on|from)\s+(?:the|this)\s+(?:image|picture|photo)\b"
)
_LIST_SEPARATOR = re.compile(r",|&|/|\+|\band\b|\bor\b|\bas\s+well\s+as\b|\bplus\b")
_QUANTIFIER = re.compile(r"\b(?:all|every|each|any|both|some)\b")
_EVERYTHING = re.compile(
    r"\b(?:everything|anything|(?:all|every|each)\s+(?:the\s+)?(?:objects?|classes|categories))\b"
)
_FILLERS = {
    "all", "the", "every", "each", "any", "some", "both", "a", "an", "of", "for", "me", "please",
    "instances", "instance", "objects", "object", "kinds", "types", "following", "categories", "classes",
}  # fmt: skip
_PREPOSITIONS = re.compile(
    r"\b(?:in|on|at|with|near|next|to|behind|under|above|below|wearing|holding|that|who|which|from|of)\b"
)
_GROUND_LEAD = re.compile(
    r"^(?:(?:please|can\s+you|could\s+you)\s+)*"
    r"(?:where\s+(?:is|'s)|which\s+(?:one|object)\s+is|point\s+(?:to|at|out)|find|locate|show(?:\s+me)?"
    r"|look\s+for|search\s+for|ground(?:\s+the\s+(?:phrase|expression))?"
    r"|give\s+(?:me\s+)?the\s+(?:bounding\s+)?box\s+(?:of|for|around)|box)\s+"
)
_GROUND_TRAIL = re.compile(r"\s+(?:(?:in|on|from)\s+(?:the|this)\s+(?:image|picture|photo)|please)$")


def singular_candidates(word: str) -> list[str]:
    """Possible singular forms of ``word``, most likely first (the word itself when not plural)."""
    word = word.lower()
    if word in _IRREGULAR_PLURALS:
        return [_IRREGULAR_PLURALS[word]]
    if word in _UNINFLECTED:
        return [word]
    if word.endswith("men") and len(word) > 3:
        return [word[:-3] + "man"]
    if word.endswith("ies"):
        return [word[:-3] + "y", word[:-1]] if len(word) > 4 else [word[:-1]]
    if word.endswith("ves"):
        return [word[:-1], word[:-3] + "f", word[:-3] + "fe"]
    if word.endswith(("sses", "shes", "ches", "xes")):
        return [word[:-2], word[:-1]]
    if word.endswith(("oes", "ses")):
        return [word[:-1], word[:-2]]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return [word[:-1]]
    return [word]


def singularize(word: str) -> str:
    """``"knives"`` -> ``"knife"``, ``"people"`` -> ``"person"``, ``"cups"`` -> ``"cup"``."""
    return singular_candidates(word)[0]


def _singularize_name(words: Sequence[str], known: dict[str, str]) -> str | None:
    """A class name written as ``words`` (head noun last): its known spelling, else None."""
    head_forms = [words[-1], *singular_candidates(words[-1])]
    for form in head_forms:
        name = " ".join([*words[:-1], form])
        if name in known:
            return known[name]
    return None


def _strip_fillers(words: list[str]) -> list[str]:
    while words and words[0] in _FILLERS:
        words = words[1:]
    return words


def _object_segment(text: str, cue_end: int) -> str:
    """The part of ``text`` after the task cue that names the objects."""
    rest = text[cue_end:]
    if ":" in rest:  # "detect the following: cups, knives"
        rest = rest.split(":", 1)[1]
    end = _CLAUSE_END.search(rest)
    return rest[: end.start()] if end else rest


def _class_names(segment: str, known_classes: Sequence[str] | None) -> list[str]:
    """Class names listed in ``segment``, singular, in order of first mention."""
    known = {name.lower(): name for name in known_classes or ()}
    if _EVERYTHING.search(segment):
        if not known:
            raise ValueError("the instruction asks for every object: pass known_classes, or name the classes")
        return list(known_classes)
    longest = max((len(name.split()) for name in known), default=1)
    names: list[str] = []
    for item in _LIST_SEPARATOR.split(segment):
        words = _strip_fillers(re.findall(r"[\w'-]+", item))
        if not words:
            continue
        matches, start = [], 0
        while start < len(words):
            for length in range(min(longest, len(words) - start), 0, -1):
                match = _singularize_name(words[start : start + length], known)
                if match is not None:
                    matches.append(match)
                    start += length
                    break
            else:
                start += 1
        names.extend(matches or [" ".join([*words[:-1], singularize(words[-1])])])
    return list(dict.fromkeys(names))


def _is_definite_singular(segment: str) -> bool:
    """``"the man in the red shirt"``: one definite, singular noun phrase (a referring expression)."""
    segment = segment.strip()
    if not re.match(r"(?:the|this|that)\s", segment) or _QUANTIFIER.search(segment):
        return False
    if _LIST_SEPARATOR.search(segment):
        return False
    head_words = re.findall(r"[\w'-]+", _PREPOSITIONS.split(segment, maxsplit=1)[0])
    return len(head_words) > 1 and singularize(head_words[-1]) == head_words[-1]


def _task_from_text(text: str) -> tuple[str, re.Match] | None:
    """The task an instruction asks for and the cue that said so, or None."""
    if match := _GROUND_CUE.search(text):
        return "ground", match
    if match := _SEGMENT_CUE.search(text):
        return "segment", match
    if match := _DETECT_CUE.search(text):
        if _REFERRING_VERBS.match(match.group(0)) and _is_definite_singular(
            _object_segment(text, match.end())
        ):
            return "ground", match
        return "detect", match
    return None


def _phrase_from_text(text: str) -> str:
    """``"where is the man in the red shirt?"`` -> ``"the man in the red shirt"``."""
    phrase = text.strip().rstrip("?.! ")
    phrase = _GROUND_LEAD.sub("", phrase, count=1)
    return _GROUND_TRAIL.sub("", phrase).strip()


def unsupported_instruction_message(instruction: str | None) -> str:
    lines = [
        f"cannot tell which task this instruction asks for: {instruction!r}.",
        "Supported tasks, with an example instruction for each:",
        *(f"  {name}: {TASKS[name].example_instruction!r}" for name in SUPPORTED_TASKS),
        'Or name the task: resolve_instruction(task="detect", classes=["cup", "knife"]), '
        'resolve_instruction(task="ground", phrase="the man in the red shirt").',
    ]
    return "\n".join(lines)


def resolve_instruction(
    instruction: str | None = None,
    *,
    task: str | None = None,
    classes: Sequence[str] | None = None,
    phrase: str | None = None,
    known_classes: Sequence[str] | None = None,
    rng: np.random.Generator | None = None,
    max_classes: int = DEFAULT_MAX_CLASSES,
) -> Request:
    """A free-form instruction and/or explicit arguments -> a :class:`Request`.

    Explicit ``task``/``classes``/``phrase`` override what the text says. Detection and
    segmentation without any class list use ``known_classes`` (all of them). ``rng`` picks a random
    template instead of the canonical one. Raises ValueError (listing the supported tasks with an
    example each) when the task cannot be determined.
    """
    text = " ".join((instruction or "").lower().split())
    found = _task_from_text(text) if text else None
    if task is not None:
        task = canonical_task_name(task)
    elif found is not None:
        task = found[0]
    else:
        raise ValueError(unsupported_instruction_message(instruction))
    cue_end = found[1].end() if found else 0

    if task == "ground":
        phrase = phrase or (classes[0] if classes else None) or (_phrase_from_text(text) if text else None)
        if not phrase:
            raise ValueError("a grounding request needs a phrase, e.g. 'where is the man in the red shirt?'")
        names = [phrase]
    elif classes is not None:
        names = list(classes)
    elif text:
        names = _class_names(_object_segment(text, cue_end), known_classes)
    else:
        names = list(known_classes or ())
    if not names:
        raise ValueError(
            f"no classes named for task {task!r}: list them in the instruction or pass classes=[...]"
        )
    check_class_count(names, max_classes)
    task_type = TASKS[task]
    template_index = 0 if rng is None else int(rng.integers(len(task_type.templates)))
    return Request(task=task, classes=names, text=task_type.render_text(names, template_index))
