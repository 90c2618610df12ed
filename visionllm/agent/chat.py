"""``Agent(predictor).chat(image, text)``: plan a request, validate the plan, run it, remember the result.

    agent = Agent(Predictor.from_checkpoint(config, checkpoint))
    reply = agent.chat("shapes.png", "find the stars, then crop the largest one")
    print(reply.text, reply.image_path)
    reply = agent.chat(None, "how many are there?")  # the same image; "there" = the stars found

A plan that does not validate is an error of the planner, never run. A plan that does not validate or
whose step fails goes back to the planner once with the error; when the repaired plan fails too (or
the planner has no other), the reply says both errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from visionllm.agent.builtin import default_registry
from visionllm.agent.executor import Executor, TraceEntry
from visionllm.agent.memory import Memory
from visionllm.agent.plan import parse_plan
from visionllm.agent.planners import Feedback, OpenAIPlanner, Planner, SmolLM2Planner
from visionllm.agent.rules import RulePlanner
from visionllm.agent.tools import ToolContext, ToolRegistry
from visionllm.apis.inference import ImageInput, load_rgb

#: The planner names ``Agent(planner=...)`` and ``visionllm chat --planner`` take.
PLANNERS = ("rules", "smollm2", "openai")


@dataclass
class Reply:
    """The answer's text, its last image's file (None without one), every answered image's file, the
    plan that ran (its JSON) and the trace of its steps."""

    text: str
    image_path: str | None = None
    image_paths: list[str] = field(default_factory=list)
    plan: dict = field(default_factory=dict)
    trace: list[TraceEntry] = field(default_factory=list)
    error: str | None = None
    attempts: int = 1


def make_planner(
    name: str, registry: ToolRegistry, known_classes: list[str] | None = None, **options
) -> Planner:
    """The planner called ``name`` (one of :data:`PLANNERS`): ``rules``; ``smollm2`` (options
    ``constrained=True``, ``model_dir``, ``max_new_tokens``); ``openai`` (options ``url`` (required),
    ``model``, ``api_key``, ``timeout``)."""
    if name == "rules":
        if options:
            raise ValueError(f"the rules planner takes no options, got {sorted(options)}")
        return RulePlanner(known_classes)
    if name == "smollm2":
        return SmolLM2Planner(registry, **options)
    if name == "openai":
        if not options.get("url"):
            raise ValueError(
                "the openai planner needs url=... (an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1)"
            )
        return OpenAIPlanner(registry, **options)
    raise ValueError(f"unknown planner {name!r}; choose one of {PLANNERS}")


class Agent:
    """A conversation about an image with a planner over a tool registry.

    Args:
        predictor: the model the detect / segment / ground tools run (None: only tools without it).
        planner: ``"rules"`` (the offline default), ``"smollm2"`` (the local SmolLM2-135M-Instruct) or
            ``"openai"`` (an OpenAI-compatible endpoint), see :func:`make_planner`; or a planner object.
        planner_options: the named planner's options (e.g. ``{"url": ..., "model": ...}``).
        registry: the tools (default: the built-in ones); register your own on it.
        memory_dir: where the conversation's artifacts go (default: a new temporary folder).
        score_thr: the model tools leave out objects scoring below it.
    """

    def __init__(
        self,
        predictor=None,
        planner: str | Planner = "rules",
        *,
        planner_options: dict | None = None,
        registry: ToolRegistry | None = None,
        memory_dir: str | os.PathLike | None = None,
        score_thr: float = 0.3,
    ) -> None:
        known = list(getattr(getattr(predictor, "model", None), "class_names", None) or ())
        self.registry = registry or default_registry()
        if isinstance(planner, str):
            planner = make_planner(planner, self.registry, known, **(planner_options or {}))
        self.planner = planner
        self.executor = Executor(self.registry, ToolContext(predictor, score_thr))
        self.memory = Memory(memory_dir)

    def chat(self, image: ImageInput | None, text: str) -> Reply:
        """Answer ``text`` about ``image`` (None: the conversation's image so far)."""
        if image is not None:
            self.memory.set_input(Image.fromarray(np.ascontiguousarray(load_rgb(image))))
        elif "input" not in self.memory.current:
            return Reply(text="Give me an image first.", error="no image")
        before = dict(self.memory.current)
        try:
            raw = self.planner.plan(text, self.memory)
            reply = self.run(raw)
            if reply.error is None:
                return reply
            self.memory.current = before  # the failed run's partial results are not "it" / "them"
            repaired = self.planner.plan(text, self.memory, Feedback(raw, reply.error))
        except (RuntimeError, OSError) as error:  # e.g. an endpoint that cannot be reached
            message = f"the planner failed: {error}"
            return Reply(text=message, error=message)
        if repaired == raw:
            reply.text = f"I could not do that: {reply.error} (the planner has no other plan)."
            return reply
        second = self.run(repaired)
        second.attempts = 2
        if second.error is not None:
            self.memory.current = before
            second.text = f"I could not do that: {reply.error}; the repaired plan failed too: {second.error}."
        return second

    def run(self, raw: str | dict) -> Reply:
        """Validate and run a plan (JSON text or dict, e.g. one written by hand for a custom tool) in
        this conversation; an invalid plan is reported, never run."""
        try:
            plan = parse_plan(raw, self.registry, self.memory.available())
        except ValueError as error:
            message = f"invalid plan: {error}"
            return Reply(text=message, plan=raw if isinstance(raw, dict) else {}, error=message)
        result = self.executor.run(plan, self.memory)
        return Reply(
            text=result.text,
            image_path=result.image_paths[-1] if result.image_paths else None,
            image_paths=result.image_paths,
            plan=plan.to_json(),
            trace=result.trace,
            error=result.error,
        )
