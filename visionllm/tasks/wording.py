"""Reading free-form instructions: the class list or referring phrase a request names.

Language helpers the task modules' ``names_from_text`` use: class names are singularised
("knives" -> "knife", "people" -> "person") and, when ``known_classes`` are given, matched against
them (multi-word names included); unknown names are kept as written, because the class set is
whatever the instruction says.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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
    "pliers", "tongs", "tweezers", "shears", "pyjamas", "pajamas", "goggles", "clippers",
}  # fmt: skip

_CLAUSE_END = re.compile(
    r"[;.?!]|\b(?:give|giving|return|output|with|and\s+(?:give|return|output|draw|mark|report|tell|show))\b"
    r"|\b(?:in|on|from)\s+(?:the|this)\s+(?:image|picture|photo|scene)\b|,?\s*(?:and\s+)?where\b"
)
#: How a list may be introduced after the cue: "detect: a, b", "which of these ... and where? a, b, c".
_LIST_INTRO = re.compile(r":|\?(?=[^?]*,)")
#: Words before the names that are not names: "boxes around", "the locations of", "a mask for", "out".
_LEAD = re.compile(
    r"^(?:(?:a|an|the|some|bounding|pixel|instance|exact|precise)\s+)*"
    r"(?:box(?:es)?|rectangles?|circles?|rings?|polygons?|outlines?|masks?|silhouettes?|shapes?|contours?"
    r"|positions?|locations?)\s+(?:of|for|around|over)\s+"
    r"|^(?:around|out|of|for|about|where)\s+"
)
#: Words after the names: "each rabbit is", "the cacti are", "oranges in view", "beetles located".
_TAIL = re.compile(
    r"\s+(?:are|is|appear|boxed|located|outlined|marked|highlighted|in\s+view|from\s+the\s+background"
    r"|here|there|please|for\s+me)$"
)
#: A segment that only points back ("find them", "show me where"): the names are before the cue.
_BACK_REFERENCE = re.compile(r"^(?:them|they|it|those|these|where|where\s+(?:they|it)\s+(?:are|is))?$")
#: What a sentence may start with before the names it asks about ("are there any ...", "what about ...").
_QUESTION_LEAD = re.compile(
    r"^(?:(?:are|is)\s+there|do\s+you\s+see|can\s+you\s+see|what\s+about|i\s+want|i\s+need)\s+"
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


def _singular_name(words: list[str]) -> str:
    """A written name in the singular: its head noun singularised, which is the last word, or the word
    before "of" ("bunches of grapes" -> "bunch of grapes")."""
    head = words.index("of") - 1 if "of" in words[1:-1] else len(words) - 1
    return " ".join([*words[:head], singularize(words[head]), *words[head + 1 :]])


def _strip_fillers(words: list[str]) -> list[str]:
    while words and words[0] in _FILLERS:
        words = words[1:]
    return words


def object_segment(text: str, cue_end: int) -> str:
    """The part of ``text`` after the task cue that names the objects: after a list's colon
    ("detect the following: cups, knives"), up to the clause's end, without the words around the names
    ("boxes around all lemons in view" -> "all lemons"). When it only points back ("any ants? find
    them"), the sentence before the cue names them."""
    rest = text[cue_end:]
    intro = _LIST_INTRO.search(rest)
    if intro:
        rest = rest[intro.end() :]
    end = _CLAUSE_END.search(rest)
    segment = trim_segment(rest[: end.start()] if end else rest)
    if _BACK_REFERENCE.match(segment):
        sentences = [s for s in re.split(r"[;.?!,]", text[:cue_end]) if s.strip()]
        if len(sentences) > 1:
            return trim_segment(_QUESTION_LEAD.sub("", sentences[-2].strip()))
    return segment


def trim_segment(segment: str) -> str:
    """``segment`` without the words before and after its names ("a box around each fish" -> "each fish")."""
    segment = " ".join(segment.split())
    previous = None
    while previous != segment:
        previous = segment
        segment = _TAIL.sub("", _LEAD.sub("", segment)).strip(" ,")
    return segment


def class_names(segment: str, known_classes: Sequence[str] | None) -> list[str]:
    """Class names listed in ``segment``, singular, in order of first mention."""
    known = _known_index(known_classes or ())
    if _EVERYTHING.search(segment):
        if not known:
            raise ValueError("the instruction asks for every object: pass known_classes, or name the classes")
        return list(known_classes)
    names: list[str] = []
    for item in _LIST_SEPARATOR.split(segment):
        words = _strip_fillers(re.findall(r"[\w'-]+", item))
        if words:
            names.extend(_known_matches(words, known) or [_singular_name(words)])
    return list(dict.fromkeys(names))


def known_names_in(text: str, known_classes: Sequence[str]) -> list[str]:
    """The known class names mentioned anywhere in ``text`` (singular or plural), in order of mention."""
    return list(dict.fromkeys(_known_matches(re.findall(r"[\w'-]+", text), _known_index(known_classes))))


def _known_index(known_classes: Sequence[str]) -> dict[str, str]:
    """Lower-cased known names, and their singular forms ("platelets" -> "platelet"), -> the names."""
    index = {}
    for name in known_classes:
        *head, last = name.lower().split() or [""]
        index[" ".join([*head, singularize(last)])] = name
    return {**index, **{name.lower(): name for name in known_classes}}


def _known_matches(words: list[str], known: dict[str, str]) -> list[str]:
    """Known class names in ``words``, longest name first at each position (multi-word names)."""
    longest = max((len(name.split()) for name in known), default=1)
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
    return matches


def is_definite_singular(segment: str) -> bool:
    """``"the man in the red shirt"``: one definite, singular noun phrase (a referring expression)."""
    segment = segment.strip()
    if not re.match(r"(?:the|this|that)\s", segment) or _QUANTIFIER.search(segment):
        return False
    if _LIST_SEPARATOR.search(segment):
        return False
    head_words = re.findall(r"[\w'-]+", _PREPOSITIONS.split(segment, maxsplit=1)[0])
    return len(head_words) > 1 and singularize(head_words[-1]) == head_words[-1]


_IRREGULAR_SINGULARS = {singular: plural for plural, singular in _IRREGULAR_PLURALS.items()}
_IRREGULAR_SINGULARS["person"] = "people"


def pluralize(name: str) -> str:
    """``"knife"`` -> ``"knives"``, ``"person"`` -> ``"people"``, ``"cross"`` -> ``"crosses"``, on the
    last word of a multi-word name (``"traffic light"`` -> ``"traffic lights"``)."""
    *head, word = name.split(" ")
    if word in _IRREGULAR_SINGULARS:
        plural = _IRREGULAR_SINGULARS[word]
    elif word in _UNINFLECTED:
        plural = word
    elif word.endswith(("s", "x", "ch", "sh", "z")):
        plural = word + "es"
    elif word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        plural = word[:-1] + "ies"
    else:
        plural = word + "s"
    return " ".join([*head, plural])
