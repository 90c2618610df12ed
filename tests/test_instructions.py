"""Instructions from users -> task and class list (free-form text or a Python call)."""

import numpy as np
import pytest

from visionllm.instructions import Request, resolve_instruction, singularize
from visionllm.tasks import SUPPORTED_TASKS, TASKS

COCO_LIKE = [
    "person",
    "bicycle",
    "traffic light",
    "hair drier",
    "cup",
    "knife",
    "mouse",
    "wine glass",
    "skis",
    "tie",
]


@pytest.mark.parametrize(
    "instruction,task,classes",
    [
        ("Find all the cups, knives and people; give class and box", "detect", ["cup", "knife", "person"]),
        ("segment every dog", "segment", ["dog"]),
        ("where is the man in the red shirt?", "ground", ["the man in the red shirt"]),
        ("Find the man in the red shirt", "ground", ["the man in the red shirt"]),
        ("find the cups", "detect", ["cup"]),
        ("Please detect the following: cats, dogs.", "detect", ["cat", "dog"]),
        ("Give me the masks of all women and children in the image", "segment", ["woman", "child"]),
        ("Box every bus, fox and sandwich", "detect", ["bus", "fox", "sandwich"]),
        ("Which one is the large red circle on the left?", "ground", ["the large red circle on the left"]),
    ],
)
def test_free_form_instructions_resolve_to_a_task_and_its_classes(instruction, task, classes):
    request = resolve_instruction(instruction)
    assert (request.task, request.classes) == (task, classes)
    for k, name in enumerate(classes):
        assert f"{name} <c{k}>" in request.text
    assert request.text.startswith(TASKS[task].templates[0].split("{")[0])


def test_known_classes_give_multi_word_names_and_their_canonical_spelling():
    request = resolve_instruction(
        "Detect Traffic Lights, hair driers and wine glasses", known_classes=COCO_LIKE
    )
    assert request.classes == ["traffic light", "hair drier", "wine glass"]
    request = resolve_instruction("segment the mice, skis, ties and unicorns", known_classes=COCO_LIKE)
    assert request.classes == ["mouse", "skis", "tie", "unicorn"]  # new names are kept: any class set works


def test_asking_for_everything_lists_the_known_classes():
    assert resolve_instruction("detect everything", known_classes=COCO_LIKE).classes == COCO_LIKE
    with pytest.raises(ValueError, match="known_classes"):
        resolve_instruction("detect all objects")


@pytest.mark.parametrize(
    "plural,singular",
    [
        ("people", "person"), ("knives", "knife"), ("mice", "mouse"), ("men", "man"), ("women", "woman"),
        ("children", "child"), ("cups", "cup"), ("buses", "bus"), ("boxes", "box"), ("benches", "bench"),
        ("puppies", "puppy"), ("ties", "tie"), ("gloves", "glove"), ("glasses", "glass"), ("sheep", "sheep"),
        ("horses", "horse"), ("firemen", "fireman"), ("dog", "dog"), ("bus", "bus"), ("potatoes", "potato"),
    ],
)  # fmt: skip
def test_singularize(plural, singular):
    assert singularize(plural) == singular


def test_python_call_form_and_task_synonyms():
    request = resolve_instruction(task="detection", classes=["cup", "knife"])
    assert (request.task, request.classes) == ("detect", ["cup", "knife"])
    assert resolve_instruction(task="instance_segmentation", classes=["dog"]).task == "segment"
    grounding = resolve_instruction(task="grounding", phrase="the blue square")
    assert (grounding.task, grounding.classes) == ("ground", ["the blue square"])
    assert resolve_instruction(task="detect", known_classes=COCO_LIKE).classes == COCO_LIKE
    explicit = resolve_instruction("find all cups", task="segment", classes=["knife"])
    assert (explicit.task, explicit.classes) == ("segment", ["knife"])


def test_an_unsupported_instruction_lists_every_task_with_an_example():
    with pytest.raises(ValueError) as error:
        resolve_instruction("make me a sandwich")
    message = str(error.value)
    for name in SUPPORTED_TASKS:
        assert name in message and TASKS[name].example_instruction in message
    with pytest.raises(ValueError, match="supported tasks"):
        resolve_instruction(task="tracking", classes=["x"])


def test_each_tasks_example_instruction_resolves_to_that_task():
    """Given the region and point inputs the task takes (the examples say so)."""
    for name in SUPPORTED_TASKS:
        task = TASKS[name]
        inputs = dict(regions=[(1, 2, 30, 40)] * task.region_inputs, points=[(5, 6)] * task.point_inputs)
        assert resolve_instruction(task.example_instruction, **inputs).task == name


def test_region_and_point_inputs_choose_among_the_questions_and_must_match_the_task():
    box, other, click = (10, 10, 50, 60), (60, 5, 90, 40), (20, 30)
    assert resolve_instruction("what is this?", regions=[box]).task == "region_classify"
    assert resolve_instruction("describe the object in the box", regions=[box]).task == "region_describe"
    assert resolve_instruction("describe the image").task == "caption"
    assert resolve_instruction("segment what I clicked", points=[click]).task == "point_segment"
    assert resolve_instruction("find every object like this one", regions=[box]).task == "detect_like"
    left = resolve_instruction("which one is further left?", regions=[box, other])
    assert (left.task, left.regions) == ("region_compare", [box, other])
    assert left.text.endswith("Which is further left, <region> or <region>?")
    colour = resolve_instruction("is it the same colour as that?", regions=[box, other])
    assert colour.text.endswith("the same colour?")
    with pytest.raises(ValueError, match="takes 1 region"):
        resolve_instruction("what is this?", task="region_classify")
    with pytest.raises(ValueError, match="takes 0 region"):
        resolve_instruction("find the cups", task="detect", regions=[box])


def test_an_rng_picks_among_the_templates():
    rng = np.random.default_rng(0)
    texts = {resolve_instruction(task="detect", classes=["cup"], rng=rng).text for _ in range(50)}
    assert len(texts) > 3


def test_too_many_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="class tokens"):
        resolve_instruction(task="detect", classes=[f"class {i}" for i in range(101)])
    assert len(resolve_instruction(task="detect", classes=list("abcde"), max_classes=5).classes) == 5
    # a name given twice is asked for once, so it does not count twice against the limit either
    assert resolve_instruction(task="detect", classes=["a"] * 6, max_classes=5).classes == ["a"]


def test_known_classes_named_before_the_cue_are_found_singular_or_plural():
    known = ["Platelets", "RBC", "WBC"]
    request = resolve_instruction(
        "could you point out every platelet in the image with boxes?", known_classes=known
    )
    assert request.task == "detect" and request.classes == ["Platelets"]
    assert resolve_instruction("find all RBCs and the platelets", known_classes=known).classes == [
        "RBC",
        "Platelets",
    ]
    # open vocabulary is untouched: an unknown name after the cue is kept as written
    assert resolve_instruction("find the cups", known_classes=known).classes == ["cup"]


def test_request_validates_region_and_point_inputs_and_strips_task_tokens_for_the_text_encoder():
    request = Request(
        task="detect",
        classes=["cup"],
        text="What is in <region> near <point>? cup <c0>. Answer with <cls> <x1> <y1> <x2> <y2>.",
        regions=[(0.0, 0.0, 10.0, 10.0)],
        points=[(5.0, 5.0)],
    )
    assert request.plain_text == "What is in near? cup. Answer with."
    with pytest.raises(ValueError, match="<region>"):
        Request(task="detect", classes=["cup"], text="<region> cup <c0>")
    with pytest.raises(ValueError, match="<point>"):
        Request(task="detect", classes=["cup"], text="cup <c0>", points=[(1.0, 2.0)])
    with pytest.raises(ValueError, match="<c1>"):
        Request(task="detect", classes=["cup"], text="cup <c0>, knife <c1>")
    with pytest.raises(ValueError, match="class name"):
        Request(task="detect", classes=["cup <c3>"], text="x")


def test_the_rules_half_of_the_instruction_set_resolves_and_the_issues_examples_do() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "instruction_resolution.py"
    spec = importlib.util.spec_from_file_location("instruction_resolution", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    items = bench.load_set("rules")
    for planner in ("resolver", "rules"):
        assert bench.score(bench.resolver(planner), items)["exact"] >= 0.95, planner
    # issue #24's examples, which once resolved to no task or to "around them" / "boxes around all lemon"
    # (its "Highlight where the apples are." is in the held-out half: the resolver still misses it)
    examples = {
        "Please circle each kite.": ("detect", ["kite"]),
        "Which of these can you see here, and where: plate, fork, glass?": (
            "detect",
            ["plate", "fork", "glass"],
        ),
        "Could you tell me where each squirrel is and draw boxes around them?": ("detect", ["squirrel"]),
        "I want bounding boxes around all lemons, limes and oranges in view.": (
            "detect",
            ["lemon", "lime", "orange"],
        ),
    }
    for text, expected in examples.items():
        request = resolve_instruction(text)
        assert (request.task, request.classes) == expected, text
