"""A new task is one module: a toy task defined here, registered, reached from free-form text and parsed,
without touching any other file of the project."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pytest
from transformers import AutoTokenizer

from visionllm.instructions import resolve_instruction
from visionllm.pretrained import minilm_dir
from visionllm.tasks import TASKS, DetectionTask, Geometry, ImageAnnotations, Request, Task, build_task
from visionllm.tasks import register_task as register
from visionllm.vocab import TaskVocab

CLASSES = ["cup", "knife", "plate"]


class CentreTask(Task):
    """Toy task: the centre point of every requested object, ``<ck> x y``."""

    name = "centre"
    synonyms = ("center", "centre_points")
    templates: ClassVar[tuple[str, ...]] = ("Mark the centre of every {classes}.",)
    answer_format = "Answer with the class <cls> and the point <x1> <y1> of each object."
    example_instruction = "mark the centres of the cups"
    cues = ((15, re.compile(r"\bcent(?:er|re)s?\b").search),)  # before segmentation's and detection's

    @property
    def format_tokens(self) -> list[str]:
        return ["<cls>", "<x1>", "<y1>"]

    def sample_request(
        self, dataset_classes: Sequence[str], annotations: ImageAnnotations, rng: np.random.Generator
    ) -> Request:
        return self.build_request(list(dataset_classes))

    select_instances = DetectionTask.select_instances  # the instances of the requested classes

    def instance_geometry(self, annotations: ImageAnnotations, index: int) -> tuple[np.ndarray, np.ndarray]:
        box = annotations.boxes[index]
        centre = (box[:2] + box[2:]) / 2
        return self.vocab.quantize(centre, annotations.canvas_size), box

    def decode_geometry(self, bins: Sequence[int], canvas_size: float) -> Geometry | str:
        x, y = self.vocab.dequantize(np.asarray(bins), canvas_size)
        return Geometry(box=(float(x) - 0.5, float(y) - 0.5, float(x) + 0.5, float(y) + 0.5))

    def geometry_from_boxes(self, boxes: np.ndarray, canvas_size: float) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return self.vocab.continuous_bins((boxes[:, :2] + boxes[:, 2:]) / 2, canvas_size)


@pytest.fixture
def centre_task():
    """Register the toy task for one test, then leave the registry as it was."""
    before = dict(TASKS)
    register(CentreTask)
    yield CentreTask
    TASKS.clear()
    TASKS.update(before)


@pytest.fixture(scope="module")
def vocab() -> TaskVocab:
    return TaskVocab(AutoTokenizer.from_pretrained(minilm_dir()))


def test_a_registered_task_is_built_by_name_and_chosen_by_its_cue(centre_task):
    request = resolve_instruction("Mark the centers of all the cups and knives, please.")
    assert request.task == "centre" and request.classes == ["cup", "knife"]
    assert request.text == CentreTask.render_text(["cup", "knife"])
    # other tasks' cues still win their own instructions
    assert resolve_instruction("segment every dog").task == "segment"
    assert resolve_instruction("find the cups").task == "detect"
    # "every object" reads the known classes, as for detection
    assert resolve_instruction("centres of all objects", known_classes=CLASSES).classes == CLASSES


def test_a_registered_task_round_trips_its_own_grammar(centre_task, vocab):
    task = build_task("centre_points", vocab)
    assert isinstance(task, CentreTask) and task.object_length == 3
    canvas = 256
    annotations = ImageAnnotations([[10, 20, 50, 60], [100, 100, 200, 180], [0, 0, 5, 5]], [0, 2, 1], canvas)
    request = task.build_request(["plate", "cup"])
    targets = task.encode_objects(request, annotations, CLASSES)
    result = task.parse(task.target_sequence(targets), request, canvas)
    assert result.finished and not result.dropped
    centres = [((x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in (obj.box for obj in result.objects)]
    assert [request.classes[obj.class_index] for obj in result.objects] == ["cup", "plate"]
    np.testing.assert_allclose(centres, [(30, 40), (150, 140)], atol=vocab.bin_size(canvas))


def test_a_task_name_taken_by_another_task_is_refused(centre_task):
    clash = type("Clash", (CentreTask,), {"name": "finder", "synonyms": ("detection",)})
    with pytest.raises(ValueError, match="'detection' of Clash is already used by 'detect'"):
        register(clash)
    assert "finder" not in TASKS and TASKS["detect"] is DetectionTask
