"""Planners: plan repair (a failed plan goes back once with its error), choosing a planner by name,
the plan's JSON schema, an OpenAI-compatible endpoint (a stub server on 127.0.0.1 started here) and
the local SmolLM2 planner with and without schema-constrained decoding (a couple of requests)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from visionllm.agent import (
    Agent,
    Feedback,
    Memory,
    OpenAIPlanner,
    RulePlanner,
    default_registry,
    make_planner,
    parse_plan,
    plan_schema,
)
from visionllm.agent.planners import extract_json, messages_for
from visionllm.structures import ObjectPrediction, Prediction
from visionllm.tasks.base import Request

STAR = ObjectPrediction("star", 0.9, (10.0, 10.0, 30.0, 30.0), 0)
GOOD = {
    "steps": [
        {"id": "s1", "tool": "detect", "args": {"image": "$input", "classes": ["star"]}},
        {"id": "s2", "tool": "count", "args": {"objects": "$s1"}},
    ],
    "answer": ["$s2"],
}
FAILING = {  # select on the circles, of which there are none: the step raises
    "steps": [
        {"id": "s1", "tool": "detect", "args": {"image": "$input", "classes": ["circle"]}},
        {"id": "s2", "tool": "select", "args": {"objects": "$s1", "by": "largest"}},
    ],
    "answer": ["$s2"],
}


class StarPredictor:
    """Finds one star whatever is asked for stars, nothing else."""

    def predict(self, image, *, task, classes=None, phrase=None, score_thr=0.0) -> list[Prediction]:
        found = [STAR] if classes and "star" in classes else []
        return [
            Prediction(
                request=Request(task=task, classes=list(classes or [phrase]), text=""),
                decode_mode="fake",
                height=image.shape[0],
                width=image.shape[1],
                boxes=[o.box for o in found],
                scores=[o.score for o in found],
                class_indices=[0 for _ in found],
                labels=[0 for _ in found],
            )
        ]


class ScriptedPlanner:
    """Gives its plans in turn and records the feedback it got."""

    def __init__(self, *plans) -> None:
        self.plans = list(plans)
        self.feedback: list[Feedback | None] = []

    def plan(self, text, memory=None, feedback=None):
        self.feedback.append(feedback)
        return self.plans.pop(0)


@pytest.fixture
def picture() -> Image.Image:
    return Image.new("RGB", (64, 48), (200, 190, 170))


# --- plan repair ---------------------------------------------------------------------------------


def test_a_failing_step_goes_back_to_the_planner_once_with_its_error(picture, tmp_path: Path) -> None:
    planner = ScriptedPlanner(FAILING, GOOD)
    agent = Agent(StarPredictor(), planner, memory_dir=tmp_path)
    reply = agent.chat(picture, "count the stars")
    assert reply.error is None and reply.text == "1" and reply.attempts == 2
    assert reply.plan == GOOD
    first, second = planner.feedback
    assert first is None and second.plan == FAILING
    assert second.error.startswith("step 's2' (select) failed: ValueError: there is no largest object")
    # the failed attempt's empty circle list is not what "them" means now: the stars are
    assert [o.class_name for o in agent.memory.current["last_objects"]] == ["star"]


def test_an_invalid_plan_is_repaired_too_and_two_failures_end_with_both_errors(
    picture, tmp_path: Path
) -> None:
    planner = ScriptedPlanner(
        '{"steps": [{"id": "s1", "tool": "sing", "args": {}}], "answer": ["$s1"]}', GOOD
    )
    reply = Agent(StarPredictor(), planner, memory_dir=tmp_path).chat(picture, "count the stars")
    assert reply.text == "1" and "unknown tool 'sing'" in planner.feedback[1].error

    reply = Agent(StarPredictor(), ScriptedPlanner(FAILING, "not json"), memory_dir=tmp_path).chat(
        picture, "x"
    )
    assert reply.attempts == 2 and reply.error.startswith("invalid plan: the plan is not JSON")
    assert reply.text.startswith("I could not do that: step 's2' (select) failed")
    assert "the repaired plan failed too: invalid plan: the plan is not JSON" in reply.text


def test_the_rule_planner_has_no_other_plan(picture, tmp_path: Path) -> None:
    agent = Agent(StarPredictor(), "rules", memory_dir=tmp_path)
    reply = agent.chat(picture, "find the circles, then crop the largest one")
    assert reply.attempts == 1 and reply.error.startswith("step 's2' (select) failed")
    assert reply.text.endswith("(the planner has no other plan).")


# --- choosing a planner --------------------------------------------------------------------------


def test_planners_are_chosen_by_name_and_bad_options_are_clear() -> None:
    registry = default_registry()
    assert isinstance(make_planner("rules", registry), RulePlanner)
    planner = make_planner("openai", registry, url="http://127.0.0.1:9/v1", model="m")
    assert isinstance(planner, OpenAIPlanner) and planner.url == "http://127.0.0.1:9/v1/chat/completions"
    with pytest.raises(ValueError, match="unknown planner 'gpt'; choose one of"):
        make_planner("gpt", registry)
    with pytest.raises(ValueError, match="needs url="):
        make_planner("openai", registry)
    with pytest.raises(ValueError, match="must start with http"):
        make_planner("openai", registry, url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="takes no options"):
        make_planner("rules", registry, url="http://x")


def test_the_plan_schema_follows_the_registry() -> None:
    schema = plan_schema(default_registry())
    plan, decline = schema["anyOf"]
    steps = {s["properties"]["tool"]["enum"][0]: s for s in plan["properties"]["steps"]["items"]["anyOf"]}
    assert set(steps) == set(default_registry().tools)
    select = steps["select"]["properties"]["args"]
    assert select["required"] == ["objects", "by"] and "largest" in select["properties"]["by"]["enum"]
    assert steps["blur"]["properties"]["args"]["required"] == ["image", "objects"]  # radius is optional
    assert steps["detect"]["properties"]["args"]["properties"]["classes"]["type"] == "array"
    assert decline["required"] == ["decline"]


def test_the_prompt_lists_the_tools_memory_and_feedback(tmp_path: Path, picture) -> None:
    memory = Memory(tmp_path)
    memory.set_input(picture)
    memory.remember([STAR, STAR], list[ObjectPrediction])
    messages = messages_for("crop them", default_registry(), memory, Feedback({"decline": "?"}, "boom"))
    assert "select(objects: Objects, by:" in messages[0]["content"]
    assert messages[-3]["content"].endswith(
        "Memory: $input (Image), $last_objects (Objects)\nRequest: crop them"
    )
    assert messages[-1]["content"].startswith("That plan failed: boom")
    assert extract_json('Sure! ```json\n{"decline": "no"}\n``` bye') == '{"decline": "no"}'


# --- an OpenAI-compatible endpoint (stub) --------------------------------------------------------


class _Stub(BaseHTTPRequestHandler):
    answers: list = []
    received: list = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        status, content = self.answers.pop(0)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stub_endpoint():
    _Stub.answers, _Stub.received = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Stub
    server.shutdown()
    server.server_close()


def test_the_openai_planner_asks_the_endpoint_and_repairs_through_it(
    stub_endpoint, picture, tmp_path
) -> None:
    url, stub = stub_endpoint
    stub.answers += [(200, "```json\n" + json.dumps(FAILING) + "\n```"), (200, json.dumps(GOOD))]
    options = {"url": url, "model": "planner-x", "api_key": "k"}
    agent = Agent(StarPredictor(), "openai", planner_options=options, memory_dir=tmp_path)
    reply = agent.chat(picture, "how many stars are there?")
    assert reply.text == "1" and reply.attempts == 2
    first, second = stub.received
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer k"
    assert first["body"]["model"] == "planner-x" and first["body"]["temperature"] == 0
    assert first["body"]["messages"][-1]["content"].endswith("Request: how many stars are there?")
    assert second["body"]["messages"][-1]["content"].startswith("That plan failed: step 's2' (select)")


def test_an_endpoint_error_is_the_reply_not_a_crash(stub_endpoint, picture, tmp_path) -> None:
    url, stub = stub_endpoint
    stub.answers.append((500, "oops"))
    reply = Agent(StarPredictor(), "openai", planner_options={"url": url}, memory_dir=tmp_path).chat(
        picture, "x"
    )
    assert reply.error.startswith("the planner failed: the planner endpoint") and "HTTP 500" in reply.error
    reply = Agent(None, "openai", planner_options={"url": "http://127.0.0.1:9/v1", "timeout": 2}).chat(
        picture, "x"
    )
    assert "cannot be reached" in reply.error


# --- the local SmolLM2 planner -------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    from visionllm.pretrained import smollm2_dir

    try:
        return smollm2_dir()
    except FileNotFoundError as error:
        pytest.skip(f"SmolLM2 is not installed: {error}")


def test_smollm2_constrained_output_always_fits_the_schema_and_plain_output_may_not(smollm2_dir) -> None:
    from visionllm.agent import SmolLM2Planner

    registry = default_registry()
    constrained = SmolLM2Planner(registry, constrained=True, model_dir=smollm2_dir, max_new_tokens=160)
    text = constrained.plan("count the squares")
    plan = json.loads(text)  # constrained: always JSON, with known tools and typed arguments
    assert set(plan) in ({"steps", "answer"}, {"decline"})
    for step in plan.get("steps", []):
        assert step["tool"] in registry and set(step["args"]) <= set(registry[step["tool"]].inputs)
    plain = SmolLM2Planner(registry, constrained=False, model_dir=smollm2_dir, max_new_tokens=160)
    # without the constraint this request's greedy output is not a valid plan (measured: docs/agent.md);
    # the agent reports it and never runs it
    with pytest.raises(ValueError, match="the plan is not JSON|step"):
        parse_plan(plain.plan("count the squares"), registry, {"input": Image.Image})
