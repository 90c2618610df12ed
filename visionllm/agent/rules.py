"""The rule-based planner, the offline default: deterministic plans for the common request shapes.

A request is split into clauses ("find the stars, then crop the largest one"; at ``then``, ``;``,
sentence ends, and ``,``/``and`` before an action verb). A clause is either

* a **finding** clause, read with the project's instruction resolver (``task_from_text`` and each
  task's ``names_from_text``): "find X" / "find X and Y" (detect), "segment X", "where is <phrase>"
  (ground), "how many X are there?" (detect, then count), "find the largest X" (detect, then select);
* an **action** on the objects found so far, or, in a follow-up turn, on what the memory remembers
  ("it", "them", or no noun at all): crop, count, describe, mask (out), blur, draw / show /
  highlight / mark / circle, compare; aimed at the largest / smallest / leftmost / rightmost /
  topmost / bottommost / best one, at each of them, or at a class ("blur the stars"), which is
  filtered from what was found or else detected first.

A request with a clause that is neither (or that refers to objects nobody found) is declined with a
message saying what the agent can do: no guessing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from visionllm.agent.memory import Memory
from visionllm.instructions import task_from_text
from visionllm.tasks import TASKS
from visionllm.tasks.wording import class_names, trim_segment

CAPABILITIES = (
    "I can find (detect), segment or locate (ground) objects in the image, then crop, count, describe, "
    "name the colour of, mask out, blur, draw or compare them, e.g. 'find the stars, then crop the largest "
    "one'."
)
_VERBS = (
    r"(?:crop|count|describe|mask|blur|draw|show|highlight|mark|circle|compare|tell me about"
    r"|tell me (?:its|their|the) colou?rs?)\b"
)
#: "tell me its colour" / "tell me the colours of the stars" -> the colour action on "it" / the stars
_COLOUR_QUESTION = re.compile(r"^tell me (?:(its|their) colou?rs?|the colou?rs? of)\b")
_CLAUSE_SPLIT = re.compile(
    rf"\s*(?:[;?!]|\.(?:\s|$)|,?\s*(?:and\s+)?then\b|,\s*(?:and\s+)?(?={_VERBS})|\s+and\s+(?={_VERBS}))\s*"
)
_POLITE = re.compile(r"^(?:(?:please|now|also|just|ok|okay|and)\s+|(?:can|could|would|will) you\s+)+")
_ACTIONS = {
    "crop": "crop", "count": "count", "describe": "describe", "tell me about": "describe",
    "mask out": "mask_out", "mask": "mask_out", "blur": "blur", "draw": "draw", "show": "draw",
    "highlight": "draw", "mark": "draw", "circle": "draw", "compare": "compare", "colour": "colour",
}  # fmt: skip
_ACTION_VERB = re.compile(rf"^({'|'.join(sorted(map(re.escape, _ACTIONS), key=len, reverse=True))})\b")
_SELECTORS = {
    "largest": r"largest|biggest|largest one|biggest one",
    "smallest": r"smallest|tiniest",
    "leftmost": r"leftmost|left-most|left most|(?:one )?on the left",
    "rightmost": r"rightmost|right-most|right most|(?:one )?on the right",
    "topmost": r"topmost|top-most|highest|uppermost|(?:one )?at the top",
    "bottommost": r"bottommost|bottom-most|lowest|(?:one )?at the bottom",
    "best": r"best|most confident|most likely",
}
_SELECTOR = re.compile(rf"\b(?:{'|'.join(f'(?P<{k}>{v})' for k, v in _SELECTORS.items())})\b")
#: Selectors that are a grounding phrase's own words ("the dog on the left"): kept in the phrase.
_POSITIONAL = re.compile(r"\b(?:on the (?:left|right)|at the (?:top|bottom))\b")
#: A list after a question ("which of these are present, and where? frog, toad"): read as after a colon.
_LIST_AFTER_QUESTION = re.compile(r"\?(?=[^?]*,[^?]*$)")
_IT = re.compile(r"\b(?:it|that one|this one)\b")
_NOISE = re.compile(
    r"\b(?:(?:a |the )?(?:bounding )?(?:boxes|box|rectangles?|circles?|rings?) (?:around|over)"
    r"|in (?:the|this) (?:image|picture|photo)|the (?:image|picture|photo)|for me|please|one|ones|of them"
    r"|out|are there|is there|there|me|each|every|all|them|they|those|these|it|that|this)\b"
)
_HOW_MANY = re.compile(r"^how many\b(?P<rest>.*?)(?:\s+(?:are|is|can|do|does)\b.*)?$")


class Declined(Exception):
    """A request no tool can serve; the message says why and what the agent can do."""


class _Builder:
    """The plan under construction: its steps, and what later clauses act on."""

    def __init__(self, memory: Memory | None) -> None:
        self.steps: list[dict] = []
        self.available = memory.available() if memory else {}
        last = memory.current.get("last_objects") if memory else None
        self.memory_classes = {obj.class_name for obj in last or ()}
        self.objects: str | None = None  # the reference of the objects found so far in this plan
        self.classes: list[str] = []  # the classes they were asked for
        self.selected: str | None = None  # the last single object picked
        self.grounded = False  # whether the objects are a referring phrase's matches
        self.image = "$input"  # what image operations draw on (blurs and drawings chain)
        self.texts: list[str] = []
        self.pictures: list[str] = []

    def add(self, tool: str, **args: Any) -> str:
        step_id = f"s{len(self.steps) + 1}"
        self.steps.append({"id": step_id, "tool": tool, "args": args})
        return f"${step_id}"

    def find(self, task: str, names: list[str]) -> str:
        arg = {"phrase": names[0]} if task == "ground" else {"classes": names}
        self.objects, self.classes, self.selected = self.add(task, image="$input", **arg), names, None
        self.grounded = task == "ground"
        return self.objects

    def source(self, names: list[str]) -> str:
        """The objects an action on ``names`` (none: whatever was found) works on."""
        if not names:
            if self.objects:
                return self.objects
            if "last_objects" in self.available:
                return "$last_objects"
            raise Declined(f"There is nothing to act on yet: ask me to find something first. {CAPABILITIES}")
        found = set(self.classes) if self.objects else self.memory_classes
        base = self.objects or "$last_objects"
        if set(names) == found:
            return base
        if len(names) == 1 and names[0] in found:
            return self.add("select_class", objects=base, class_name=names[0])
        return self.find("detect", names)

    def single(self, names: list[str], by: str | None, it: bool) -> str | None:
        """One object (a selector, or "it"), or None when the action is on all of them."""
        if by:
            self.selected = self.add("select", objects=self.source(names), by=by)
            return self.selected
        if it and not names:
            if self.selected:
                return self.selected
            if self.grounded:  # "where is the red car? crop it": the phrase's best match
                self.selected = self.add("select", objects=self.objects, by="best")
                return self.selected
            if self.objects:
                return self.objects
            if "last_object" in self.available:
                return "$last_object"
            return self.source([])
        return None


class RulePlanner:
    """Turns a request into a plan (the JSON dict of ``visionllm.agent.plan``), deterministically.

    ``known_classes`` (the model's) give class names their known spelling (``wording.class_names``).
    """

    def __init__(self, known_classes: Sequence[str] | None = None) -> None:
        self.known_classes = list(known_classes or ())

    def plan(self, text: str, memory: Memory | None = None, feedback: object = None) -> dict:
        """The plan for ``text`` in the conversation ``memory``, or ``{"decline": message}``. Rules have
        one plan per request: ``feedback`` (a failed plan's error) changes nothing."""
        text = _LIST_AFTER_QUESTION.sub(":", " ".join(text.lower().split()))
        clauses = [c for c in _CLAUSE_SPLIT.split(text) if c and c.strip(" ,.")]
        if not clauses:
            return {"decline": f"The request is empty. {CAPABILITIES}"}
        builder = _Builder(memory)
        try:
            for clause in clauses:
                clause = _POLITE.sub("", clause.strip(" ,."))
                self._clause(
                    _COLOUR_QUESTION.sub(lambda m: "colour it" if m[1] else "colour", clause), builder
                )
        except Declined as declined:
            return {"decline": str(declined)}
        if not builder.texts and not builder.pictures:  # only finding: show what was found
            found = builder.selected or builder.objects
            builder.texts.append(found)
            builder.pictures.append(builder.add("draw", image="$input", objects=found))
        return {"steps": builder.steps, "answer": builder.texts + builder.pictures[-1:]}

    def _names(self, segment: str) -> list[str]:
        segment = " ".join(_NOISE.sub(" ", _SELECTOR.sub(" ", trim_segment(segment))).split())
        return class_names(segment, self.known_classes) if segment else []

    def _clause(self, clause: str, builder: _Builder) -> None:
        if match := _HOW_MANY.match(clause):
            names = self._names(match["rest"])
            builder.texts.append(builder.add("count", objects=builder.source(names)))
            return
        found = task_from_text(clause)
        match = _ACTION_VERB.match(clause)
        if match and not (_ACTIONS[match[1]] == "draw" and found and found[0] in ("segment", "ground")):
            self._action(_ACTIONS[match[1]], clause[match.end() :], builder)
            return  # (but "show the outlines of the moose", "highlight the book by the lamp" find)
        if found is None or found[0] not in ("detect", "segment", "ground"):
            raise Declined(f"I cannot do {clause!r} with my tools. {CAPABILITIES}")
        task, cue_end = found
        selector = _SELECTOR.search(clause[cue_end:])
        if selector and task == "ground" and _POSITIONAL.search(selector[0]):
            selector = None  # "point to the dog on the left": the phrase says it
        if selector:  # "find the largest star": detect the stars, then pick one
            builder.find("segment" if task == "segment" else "detect", self._names(clause[cue_end:]))
            builder.single([], selector.lastgroup, False)
            return
        names = TASKS[task].names_from_text(clause, cue_end, self.known_classes)
        if not names:
            raise Declined(f"{clause!r} names nothing to look for. {CAPABILITIES}")
        builder.find(task, names)

    def _action(self, action: str, rest: str, builder: _Builder) -> None:
        if action == "compare":
            parts = re.split(r"\s+(?:and|with|to|against)\s+", rest, maxsplit=1)
            if len(parts) != 2:
                raise Declined("Compare what with what? e.g. 'compare the largest and the smallest'.")
            a, b = (self._target(part, builder) for part in parts)
            builder.texts.append(builder.add("compare", a=a, b=b))
            return
        selector = _SELECTOR.search(rest)
        names = self._names(rest)
        one = builder.single(names, selector.lastgroup if selector else None, bool(_IT.search(rest)))
        target = one or builder.source(names)
        if action == "count":
            builder.texts.append(builder.add("count", objects=target))
        elif action in ("describe", "colour"):
            builder.texts.append(builder.add(action, image="$input", objects=target))
        elif action == "crop":
            if one and one != builder.objects and one != "$last_objects":
                builder.pictures.append(builder.add("crop", image="$input", object=one))
            else:
                builder.pictures.append(builder.add("crop_each", image="$input", objects=target))
        else:
            if action in ("mask_out", "blur") and not one and names and target == builder.objects:
                builder.steps[-1]["tool"] = "segment"  # just found for this: outlines, not boxes
            builder.image = builder.add(action, image=builder.image, objects=target)
            builder.pictures.append(builder.image)

    def _target(self, part: str, builder: _Builder) -> str:
        """One object for ``compare``: a selector, else the best-scoring one of the named class."""
        selector = _SELECTOR.search(part)
        names = self._names(part)
        return builder.single(names, selector.lastgroup if selector else "best", False)
