"""User instructions -> a :class:`Request`: which task, which classes (or which phrase).

Two ways in, one result:

* free-form text: ``"Find all the cups, knives and people; give class and box"``,
  ``"segment every dog"``, ``"where is the man in the red shirt?"``;
* a Python call: ``resolve_instruction(task="detect", classes=["cup", "knife"])``.

The user's words choose the task and the class list; the model then reads that task's canonical
instruction (its first template, or a random one when ``rng`` is given), the wording it was trained
on. Free-form resolution asks the registered tasks (``visionllm.tasks.TASKS``): every task lists
``(priority, cue)`` pairs, the cues are tried lowest priority first, and the first that matches picks
the task, which then reads its class list or phrase from the text (``Task.names_from_text``). The
built-in order: grounding questions (10: where is ..., which one is ...), a detection verb before one
definite, singular noun phrase in an instruction without segmentation words (11: "find the man in the
red shirt", "point to the dog on the left" are grounding), segmentation words (20: segment, mask,
outline, cut out, ...), detection verbs (30: detect, find, locate, box, highlight, circle, where are, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from visionllm.tasks import TASKS, canonical_task_name
from visionllm.tasks.base import Request, check_class_count
from visionllm.tasks.wording import singular_candidates, singularize
from visionllm.vocab import DEFAULT_MAX_CLASSES

__all__ = ["Request", "resolve_instruction", "singular_candidates", "singularize", "task_from_text"]


def task_from_text(text: str, num_regions: int = 0, num_points: int = 0) -> tuple[str, int] | None:
    """The task a lower-cased instruction asks for and where its cue ends, or None when no registered
    task's cue matches (cues tried lowest priority first; ties in registration order). Only tasks that
    take ``num_regions`` region and ``num_points`` point inputs are asked: "what is this?" with a box is
    a region question, "segment what I clicked" with a point a point question."""
    cues = [
        (priority, order, name, cue)
        for order, (name, task) in enumerate(TASKS.items())
        if (task.region_inputs, task.point_inputs) == (num_regions, num_points)
        for priority, cue in task.cues
    ]
    for _, _, name, cue in sorted(cues, key=lambda item: item[:2]):
        if match := cue(text):
            return name, match.end()
    return None


def unsupported_instruction_message(
    instruction: str | None, num_regions: int = 0, num_points: int = 0
) -> str:
    """Why an instruction resolved to no task, with every task's example; with region / point inputs,
    which tasks take that many (only those were asked)."""
    inputs = ""
    if num_regions or num_points:
        takers = [
            name
            for name, task in TASKS.items()
            if (task.region_inputs, task.point_inputs) == (num_regions, num_points)
        ]
        inputs = (
            f" with {num_regions} region(s) and {num_points} point(s), which only "
            f"{', '.join(takers) or 'no task'} take(s)"
        )
    lines = [
        f"cannot tell which task this instruction asks for: {instruction!r}{inputs}.",
        "Supported tasks, with an example instruction for each:",
        *(f"  {name}: {task.example_instruction!r}" for name, task in TASKS.items()),
        "Or name the task and classes: --task detect --classes cup knife (visionllm predict), "
        'resolve_instruction(task="detect", classes=["cup", "knife"]) (Python); a phrase: '
        '--task ground --phrase "the man in the red shirt".',
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
    regions: Sequence[Sequence[float]] = (),
    points: Sequence[Sequence[float]] = (),
) -> Request:
    """A free-form instruction and/or explicit arguments -> a :class:`Request`.

    Explicit ``task``/``classes``/``phrase`` override what the text says. Tasks that take a class list
    use ``known_classes`` (all of them) when none is named. ``rng`` picks a random template instead of
    the canonical one. ``regions`` (x1, y1, x2, y2) and ``points`` (x, y) fill the ``<region>`` and
    ``<point>`` placeholders of region and point questions, in order. Raises ValueError (listing the
    supported tasks with an example each) when the task cannot be determined, or when the inputs do not
    match what the task takes.
    """
    text = " ".join((instruction or "").lower().split())
    found = task_from_text(text, len(regions), len(points)) if text else None
    if task is not None:
        task = canonical_task_name(task)
    elif found is not None:
        task = found[0]
    else:
        raise ValueError(unsupported_instruction_message(instruction, len(regions), len(points)))
    task_type = TASKS[task]
    cue_end = found[1] if found else 0
    if (len(regions), len(points)) != (task_type.region_inputs, task_type.point_inputs):
        raise ValueError(
            f"the task {task!r} takes {task_type.region_inputs} region(s) and {task_type.point_inputs} "
            f"point(s), but {len(regions)} region(s) and {len(points)} point(s) were given"
        )

    if task_type.names_kind == "none":
        names = list(task_type.fixed_classes)
    elif task_type.names_kind == "phrase":
        phrase = phrase or (classes[0] if classes else None)
        if phrase:
            names = [phrase]
        else:
            names = task_type.names_from_text(text, cue_end, known_classes) if text else []
        if not names:
            raise ValueError(f"a {task!r} request needs a phrase, e.g. {task_type.example_instruction!r}")
    elif classes is not None:
        names = list(dict.fromkeys(classes))  # a name given twice is asked for once
    elif text:
        names = task_type.names_from_text(text, cue_end, known_classes)
    else:
        names = list(known_classes or ())
    if not names and task_type.names_kind != "none":
        raise ValueError(
            f"no classes named for task {task!r}: list them in the instruction or pass classes=[...]"
        )
    check_class_count(names, max_classes)
    template_index = (
        task_type.template_for_text(text) if rng is None else int(rng.integers(len(task_type.templates)))
    )
    return Request(
        task=task,
        classes=names,
        text=task_type.render_text(names, template_index),
        regions=[tuple(float(v) for v in box) for box in regions],
        points=[tuple(float(v) for v in point) for point in points],
    )
