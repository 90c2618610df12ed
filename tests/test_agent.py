"""The agent: tools from type hints, plan validation (every bad plan), execution with a memory across
turns, the rule-based planner's plans, declines, and one chat with a tiny random-weight model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from visionllm.agent import (
    Agent,
    Executor,
    Memory,
    Object,
    Objects,
    RulePlanner,
    ToolContext,
    ToolRegistry,
    default_registry,
    parse_plan,
)
from visionllm.agent.builtin import colour_name, compare, count, crop, describe, draw, mask_out, select
from visionllm.structures import ObjectPrediction, Prediction, polygons_to_rle
from visionllm.tasks.base import Request

REPO = Path(__file__).resolve().parents[1]
STAR_SMALL = ObjectPrediction("star", 0.9, (10.0, 10.0, 30.0, 30.0), 0)
STAR_LARGE = ObjectPrediction("star", 0.6, (60.0, 20.0, 120.0, 80.0), 0)
CIRCLE = ObjectPrediction("circle", 0.8, (130.0, 5.0, 150.0, 25.0), 1)


class FakePredictor:
    """Answers every request with fixed objects of the requested classes (no model)."""

    def __init__(self, objects: list[ObjectPrediction]) -> None:
        self.objects = objects
        self.calls: list[dict] = []

    def predict(self, images, *, task, classes=None, phrase=None, score_thr=0.0) -> list[Prediction]:
        self.calls.append(dict(task=task, classes=classes, phrase=phrase))
        names = [phrase] if phrase else list(classes)
        found = [o for o in self.objects if phrase or o.class_name in names]
        height, width = images.shape[:2]
        return [
            Prediction(
                request=Request(task=task, classes=names, text=""),
                decode_mode="fake",
                height=height,
                width=width,
                boxes=[o.box for o in found],
                scores=[o.score for o in found],
                class_indices=[0 if phrase else names.index(o.class_name) for o in found],
                labels=[o.label for o in found],
            )
        ]


@pytest.fixture
def image() -> Image.Image:
    picture = Image.new("RGB", (160, 100), (200, 190, 170))
    ImageDraw.Draw(picture).rectangle((60, 20, 120, 80), fill=(30, 30, 200))
    return picture


def _memory(tmp_path: Path, image: Image.Image) -> Memory:
    memory = Memory(tmp_path / "memory")
    memory.set_input(image)
    return memory


# --- tools ---------------------------------------------------------------------------------------


def test_tool_from_type_hints_and_docstring() -> None:
    registry = ToolRegistry()

    @registry.register
    def brightest(ctx: ToolContext, image: Image.Image, objects: Objects, margin: int = 0) -> Object:
        """The object whose box is brightest on average.

        More text that the planner does not see.
        """
        return objects[0]

    tool = registry["brightest"]
    assert tool.description == "The object whose box is brightest on average."
    assert tool.inputs == {"image": Image.Image, "objects": Objects, "margin": int}
    assert tool.optional == {"margin"} and tool.output is Object and tool.context_arg == "ctx"
    assert tool.signature() == "brightest(image: Image, objects: Objects, margin: int = optional) -> Object"
    assert "brightest(" in registry.describe()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(brightest)

    def undocumented(objects: Objects) -> int:
        return 0

    def untyped(objects) -> int:
        """Untyped."""

    with pytest.raises(ValueError, match="docstring"):
        registry.register(undocumented)
    with pytest.raises(ValueError, match="'objects' needs a type hint"):
        registry.register(untyped)


def test_builtin_tools() -> None:
    registry = default_registry()
    names = {"detect", "segment", "ground", "select", "select_class", "count", "crop", "crop_each"}
    assert names | {"mask_out", "blur", "draw", "describe", "colour", "compare"} == set(registry.tools)
    assert registry["detect"].inputs == {"image": Image.Image, "classes": list[str]}
    assert registry["ground"].output == Objects and registry["count"].output is int
    assert all(registry[name].context_arg is None for name in ("crop", "draw", "select"))


def test_image_and_object_operations(image: Image.Image) -> None:
    objects = [STAR_SMALL, STAR_LARGE, CIRCLE]
    assert select(objects, "largest") is STAR_LARGE and select(objects, "smallest") is STAR_SMALL
    assert select(objects, "rightmost") is CIRCLE and select(objects, "topmost") is CIRCLE
    assert select(objects, "best") is STAR_SMALL and count(objects) == 3
    assert crop(image, STAR_LARGE).size == (60, 60)
    masked = np.asarray(mask_out(image, [STAR_SMALL]))
    assert masked[10:30, 10:30].max() == 0 and masked[50, 50].max() > 0
    assert draw(image, objects).size == image.size
    outline = [60.0, 20.0, 120.0, 20.0, 90.0, 80.0]
    triangle = ObjectPrediction(
        "triangle", 0.7, (60.0, 20.0, 120.0, 80.0), 2, polygons_to_rle([outline], 100, 160), outline
    )
    assert np.asarray(draw(image, [triangle])).std() > 0
    assert (
        np.asarray(mask_out(image, [triangle]))[25, 90].max() == 0
    )  # inside the outline, not its box corner
    assert np.asarray(mask_out(image, [triangle]))[75, 62].max() > 0
    assert "larger than" in compare(STAR_LARGE, CIRCLE) and "left of" in compare(STAR_LARGE, CIRCLE)
    assert describe(image, [STAR_SMALL]).startswith("1 object: star (0.90) at [10, 10, 30, 30], top left")
    with pytest.raises(ValueError, match="nothing was found"):
        select([], "largest")


# --- plans ---------------------------------------------------------------------------------------

DETECT = {"id": "s1", "tool": "detect", "args": {"image": "$input", "classes": ["star"]}}
SELECT = {"id": "s2", "tool": "select", "args": {"objects": "$s1", "by": "largest"}}
CROP = {"id": "s3", "tool": "crop", "args": {"image": "$input", "object": "$s2"}}


def _with(step: dict, **args) -> dict:
    return {**step, "args": {**step["args"], **args}}


BAD_PLANS = {
    "non-JSON": ('{"steps": [', "not JSON"),
    "not a plan": ({"steps": [DETECT]}, 'keys "steps" and "answer"'),
    "unknown tool": ({"steps": [{**DETECT, "tool": "caption"}], "answer": "$s1"}, "step 's1': unknown tool"),
    "missing argument": (
        {"steps": [{**DETECT, "args": {"image": "$input"}}], "answer": "$s1"},
        "step 's1': the argument 'classes' of detect is missing",
    ),
    "extra argument": (
        {"steps": [_with(DETECT, colour="red")], "answer": "$s1"},
        "step 's1': detect has no argument 'colour'",
    ),
    "wrong literal type": (
        {"steps": [_with(DETECT, classes="star")], "answer": "$s1"},
        "step 's1': argument 'classes' must be list\\[str\\]",
    ),
    "literal outside a choice": (
        {"steps": [DETECT, _with(SELECT, by="prettiest")], "answer": "$s2"},
        "step 's2': argument 'by' must be 'largest'",
    ),
    "wrong reference type": (
        {"steps": [DETECT, SELECT, _with(CROP, image="$s2")], "answer": "$s3"},
        "step 's3': argument 'image' must be Image, but \\$s2 is Object",
    ),
    "dangling reference": (
        {"steps": [DETECT, _with(SELECT, objects="$s9")], "answer": "$s2"},
        "step 's2': argument 'objects' refers to \\$s9, which is no earlier step",
    ),
    "forward reference": (
        {"steps": [DETECT, _with(SELECT, objects="$s3"), CROP], "answer": "$s3"},
        "step 's2': argument 'objects' refers to \\$s3, a later step",
    ),
    "memory name absent": (
        {"steps": [{"id": "s1", "tool": "count", "args": {"objects": "$last_objects"}}], "answer": "$s1"},
        "refers to \\$last_objects",
    ),
    "duplicate id": (
        {"steps": [DETECT, {**SELECT, "id": "s1"}], "answer": "$s1"},
        "step 's1': the id is already",
    ),
    "bad answer": ({"steps": [DETECT], "answer": "s1"}, "\"answer\": 's1' is not a reference"),
    "malformed step": ({"steps": [{"tool": "detect"}], "answer": "$s1"}, "step 1: a step is"),
}


@pytest.mark.parametrize("plan, error", BAD_PLANS.values(), ids=BAD_PLANS.keys())
def test_bad_plans_are_rejected_before_running(plan, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_plan(plan, default_registry(), {"input": Image.Image})


def test_valid_plan_from_json_text() -> None:
    text = json.dumps({"steps": [DETECT, SELECT, CROP], "answer": ["$s3", "$s2"]})
    plan = parse_plan(text, default_registry(), {"input": Image.Image})
    assert [s.tool for s in plan.steps] == ["detect", "select", "crop"] and plan.answer == ["s3", "s2"]
    assert plan.to_json() == json.loads(text)
    assert parse_plan('{"decline": "no"}', default_registry(), {}).decline == "no"


# --- execution -----------------------------------------------------------------------------------


def test_execution_keeps_artifacts_across_turns(tmp_path: Path, image: Image.Image) -> None:
    registry = default_registry()
    predictor = FakePredictor([STAR_SMALL, STAR_LARGE, CIRCLE])
    executor = Executor(registry, ToolContext(predictor))
    memory = _memory(tmp_path, image)
    plan = parse_plan({"steps": [DETECT, SELECT, CROP], "answer": "$s3"}, registry, memory.available())
    first = executor.run(plan, memory)
    assert predictor.calls == [dict(task="detect", classes=["star"], phrase=None)]
    assert first.error is None and [entry.tool for entry in first.trace] == ["detect", "select", "crop"]
    artifacts = [entry.artifact for entry in first.trace]
    assert re.fullmatch(r"objects/[0-9a-f]{8}", artifacts[0]) and re.fullmatch(
        r"object/[0-9a-f]{8}", artifacts[1]
    )
    assert re.fullmatch(r"image/[0-9a-f]{8}\.png", artifacts[2])
    [crop_path] = first.image_paths
    assert crop_path == str(memory.folder / artifacts[2]) and Image.open(crop_path).size == (60, 60)
    stored = json.loads((memory.folder / f"{artifacts[0]}.json").read_text())
    assert [o["class_name"] for o in stored] == ["star", "star"] and stored[1]["box"] == [60, 20, 120, 80]

    # the next turn refers to "them" (the stars) and "it" (the largest) through the memory
    assert set(memory.available()) == {"input", "last_image", "last_object", "last_objects"}
    follow_up = {
        "steps": [
            {"id": "n", "tool": "count", "args": {"objects": "$last_objects"}},
            {"id": "b", "tool": "blur", "args": {"image": "$input", "objects": "$last_object"}},
        ],
        "answer": ["$n", "$b"],
    }
    second = executor.run(parse_plan(follow_up, registry, memory.available()), memory)
    assert second.text == "2" and len(second.image_paths) == 1 and Path(second.image_paths[0]).is_file()
    assert len(predictor.calls) == 1  # nothing was detected again


def test_a_failing_step_is_reported(tmp_path: Path, image: Image.Image) -> None:
    registry = default_registry()
    memory = _memory(tmp_path, image)
    plan = parse_plan({"steps": [DETECT, SELECT], "answer": "$s2"}, registry, memory.available())
    result = Executor(registry, ToolContext(FakePredictor([]))).run(plan, memory)
    assert (
        result.error == "step 's2' (select) failed: ValueError: there is no largest object: nothing was found"
    )
    assert [entry.error is None for entry in result.trace] == [True, False]
    no_model = Executor(registry, ToolContext(None)).run(plan, memory)
    assert "needs the model" in no_model.error


# --- the rule-based planner ----------------------------------------------------------------------

PLANS = {
    "find the stars": [("detect", {"classes": ["star"]}), ("draw", {"objects": "$s1"})],
    "Find all the stars and circles.": [("detect", {"classes": ["star", "circle"]}), ("draw", {})],
    "segment every circle": [("segment", {"classes": ["circle"]}), ("draw", {})],
    "where is the red star?": [("ground", {"phrase": "the red star"}), ("draw", {})],
    "where is the red star? crop it": [
        ("ground", {"phrase": "the red star"}),
        ("select", {"objects": "$s1", "by": "best"}),
        ("crop", {"object": "$s2"}),
    ],
    "How many squares are there?": [("detect", {"classes": ["square"]}), ("count", {"objects": "$s1"})],
    "find the stars, then crop the largest one": [
        ("detect", {"classes": ["star"]}),
        ("select", {"objects": "$s1", "by": "largest"}),
        ("crop", {"image": "$input", "object": "$s2"}),
    ],
    "find the stars and count them": [("detect", {"classes": ["star"]}), ("count", {"objects": "$s1"})],
    "detect the circles then blur each of them": [
        ("detect", {"classes": ["circle"]}),
        ("blur", {"image": "$input", "objects": "$s1"}),
    ],
    "find the squares; mask out the leftmost one": [
        ("detect", {}),
        ("select", {"by": "leftmost"}),
        ("mask_out", {"objects": "$s2"}),
    ],
    "find the largest star": [("detect", {"classes": ["star"]}), ("select", {"by": "largest"}), ("draw", {})],
    "segment the circles, then describe them": [("segment", {}), ("describe", {"objects": "$s1"})],
    "find stars and circles then compare the largest and the smallest": [
        ("detect", {"classes": ["star", "circle"]}),
        ("select", {"by": "largest"}),
        ("select", {"by": "smallest"}),
        ("compare", {"a": "$s2", "b": "$s3"}),
    ],
    "count the squares": [("detect", {"classes": ["square"]}), ("count", {})],
    "find stars and circles, then crop each circle": [
        ("detect", {"classes": ["star", "circle"]}),
        ("select_class", {"objects": "$s1", "class_name": "circle"}),
        ("crop_each", {"objects": "$s2"}),
    ],
    "find stars and circles, then crop the circle on the left": [
        ("detect", {"classes": ["star", "circle"]}),
        ("select_class", {"objects": "$s1", "class_name": "circle"}),
        ("select", {"objects": "$s2", "by": "leftmost"}),
        ("crop", {"object": "$s3"}),
    ],
    "Could you please draw boxes around the stars?": [("detect", {"classes": ["star"]}), ("draw", {})],
    "find the stars, blur the rightmost one and then draw them": [
        ("detect", {}),
        ("select", {"by": "rightmost"}),
        ("blur", {"image": "$input", "objects": "$s2"}),
        ("draw", {"image": "$s3", "objects": "$s1"}),
    ],
}


def _check_plan(plan: dict, expected: list[tuple[str, dict]]) -> None:
    assert [step["tool"] for step in plan["steps"]] == [tool for tool, _ in expected], plan
    for step, (_, args) in zip(plan["steps"], expected):
        assert step["args"] | args == step["args"], (step, args)


@pytest.mark.parametrize("request_text", PLANS)
def test_rule_planner(request_text: str) -> None:
    plan = RulePlanner(["star", "circle", "square"]).plan(request_text)
    _check_plan(plan, PLANS[request_text])
    parse_plan(plan, default_registry(), {"input": Image.Image})  # every plan it writes is valid


def test_rule_planner_answers() -> None:
    planner = RulePlanner()
    assert planner.plan("find the stars")["answer"] == ["$s1", "$s2"]  # the objects and their drawing
    assert planner.plan("find the stars then count them and crop each")["answer"] == ["$s2", "$s3"]


FOLLOW_UPS = {
    "how many are there?": [("count", {"objects": "$last_objects"})],
    "crop the largest one": [("select", {"objects": "$last_objects"}), ("crop", {"object": "$s1"})],
    "now blur them": [("blur", {"image": "$input", "objects": "$last_objects"})],
    "crop it": [("crop_each", {"objects": "$last_objects"})],  # "it" is several objects: each
    "count the circles": [
        ("select_class", {"objects": "$last_objects", "class_name": "circle"}),
        ("count", {}),
    ],
    "count the squares": [("detect", {"classes": ["square"]}), ("count", {"objects": "$s1"})],
}


@pytest.mark.parametrize("request_text", FOLLOW_UPS)
def test_rule_planner_follow_ups(tmp_path: Path, image: Image.Image, request_text: str) -> None:
    memory = _memory(tmp_path, image)
    memory.remember([STAR_SMALL, STAR_LARGE, CIRCLE], Objects)
    _check_plan(RulePlanner().plan(request_text, memory), FOLLOW_UPS[request_text])


@pytest.mark.parametrize(
    "request_text",
    ["What is the weather like today?", "translate this", "find the stars, then sing", "crop it"],
)
def test_rule_planner_declines(request_text: str) -> None:
    plan = RulePlanner().plan(request_text)  # "crop it" with nothing found before
    assert set(plan) == {"decline"} and "I can find" in plan["decline"]


# --- the agent -----------------------------------------------------------------------------------


def test_agent_conversation_with_follow_ups(tmp_path: Path, image: Image.Image) -> None:
    predictor = FakePredictor([STAR_SMALL, STAR_LARGE, CIRCLE])
    agent = Agent(predictor, memory_dir=tmp_path)
    reply = agent.chat(image, "find the stars, then crop the largest one")
    assert reply.error is None and Image.open(reply.image_path).size == (60, 60)
    assert [entry.tool for entry in reply.trace] == ["detect", "select", "crop"]
    assert agent.chat(None, "how many are there?").text == "2"
    assert agent.chat(None, "describe it").text.startswith("1 object: star (0.60)")
    declined = agent.chat(None, "what is the weather?")
    assert "I cannot do" in declined.text and declined.trace == [] and declined.image_path is None
    agent.chat(Image.new("RGB", (50, 50)), "hello")  # a new image: "them" no longer means the stars
    assert "nothing to act on" in agent.chat(None, "count them").text


def test_agent_runs_a_hand_written_plan_with_a_custom_tool(tmp_path: Path, image: Image.Image) -> None:
    agent = Agent(FakePredictor([STAR_SMALL, STAR_LARGE]), memory_dir=tmp_path)

    @agent.registry.register
    def widest(objects: Objects) -> Object:
        """The object with the widest box."""
        return max(objects, key=lambda obj: obj.box[2] - obj.box[0])

    agent.chat(image, "find the stars")
    reply = agent.run(
        '{"steps": [{"id": "w", "tool": "widest", "args": {"objects": "$last_objects"}}], "answer": "$w"}'
    )
    assert reply.text == "star (0.60) at [60, 20, 120, 80]" and reply.plan["answer"] == ["$w"]
    invalid = agent.run({"steps": [{"id": "w", "tool": "widest", "args": {}}], "answer": "$w"})
    assert invalid.error.startswith("invalid plan: step 'w': the argument 'objects' of widest is missing")


def test_agent_chat_with_a_tiny_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """End to end with a random-weight model: the structure of the replies, not their accuracy."""
    from visionllm.apis import Predictor

    predictor = Predictor.from_checkpoint(REPO / "configs/visionllm_tiny_synthetic.py", tiny_checkpoint)
    agent = Agent(predictor, memory_dir=tmp_path, score_thr=0.0)
    picture = Image.new("RGB", (200, 120), (200, 190, 170))
    ImageDraw.Draw(picture).ellipse((20, 20, 80, 80), fill=(200, 30, 30))
    reply = agent.chat(picture, "find the circles and squares, then draw them")
    assert reply.error is None, reply.text
    assert [entry.tool for entry in reply.trace] == ["detect", "draw"]
    assert Image.open(reply.image_path).size == (200, 120)
    found = len(agent.memory.current["last_objects"])
    assert agent.chat(None, "how many are there?").text == str(found)
    blurred = agent.chat(None, "segment the triangles, then blur them")
    assert [entry.tool for entry in blurred.trace] == ["segment", "blur"] and blurred.error is None
    assert all(obj.mask is not None for obj in agent.memory.current["last_objects"])
    ungrounded = agent.chat(None, "where is the red circle?")  # a task this model was not trained for
    assert ungrounded.error.startswith("step 's1' (ground) failed: ValueError: the instruction asks for")


def test_the_issues_example_crops_the_largest_and_names_its_colour(
    tmp_path: Path, image: Image.Image
) -> None:
    """ "find the dogs, crop the biggest one and tell me its colour", here with stars on the test image
    (the large star is the blue rectangle)."""
    agent = Agent(FakePredictor([STAR_SMALL, STAR_LARGE, CIRCLE]), memory_dir=tmp_path)
    reply = agent.chat(image, "find the stars, crop the biggest one and tell me its colour")
    assert [entry.tool for entry in reply.trace] == ["detect", "select", "crop", "colour"]
    assert reply.error is None and reply.text.endswith(": blue.")
    assert Image.open(reply.image_path).size == (60, 60)
    assert "I cannot do" in agent.chat(None, "what colour is the sky?").text  # no object to ask about


@pytest.mark.parametrize(
    "rgb, name",
    [((220, 30, 30), "red"), ((245, 130, 20), "orange"), ((240, 220, 30), "yellow"), ((30, 170, 50), "green"),
     ((30, 60, 220), "blue"), ((140, 40, 180), "purple"), ((10, 10, 10), "black"), ((250, 250, 250), "white"),
     ((128, 128, 130), "grey")],
)  # fmt: skip
def test_colour_names(rgb, name) -> None:
    assert colour_name(np.array(rgb)) == name
