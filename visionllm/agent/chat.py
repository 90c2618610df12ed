"""``Agent(predictor).chat(image, text)``: plan a request, validate the plan, run it, remember the result.

    agent = Agent(Predictor.from_checkpoint(config, checkpoint))
    reply = agent.chat("shapes.png", "find the stars, then crop the largest one")
    print(reply.text, reply.image_path)
    reply = agent.chat(None, "how many are there?")  # the same image; "there" = the stars found

A plan that does not validate is an error of the planner, reported in the reply, never run.
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
from visionllm.agent.rules import RulePlanner
from visionllm.agent.tools import ToolContext, ToolRegistry
from visionllm.apis.inference import ImageInput, load_rgb

PLANNERS = ("rules",)


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


class Agent:
    """A conversation about an image with a planner over a tool registry.

    Args:
        predictor: the model the detect / segment / ground tools run (None: only tools without it).
        planner: ``"rules"`` (the offline default; the only one so far).
        registry: the tools (default: the built-in ones); register your own on it.
        memory_dir: where the conversation's artifacts go (default: a new temporary folder).
        score_thr: the model tools leave out objects scoring below it.
    """

    def __init__(
        self,
        predictor=None,
        planner: str = "rules",
        *,
        registry: ToolRegistry | None = None,
        memory_dir: str | os.PathLike | None = None,
        score_thr: float = 0.3,
    ) -> None:
        if planner not in PLANNERS:
            raise ValueError(f"unknown planner {planner!r}; choose one of {PLANNERS}")
        known = list(getattr(getattr(predictor, "model", None), "class_names", None) or ())
        self.planner = RulePlanner(known)
        self.registry = registry or default_registry()
        self.executor = Executor(self.registry, ToolContext(predictor, score_thr))
        self.memory = Memory(memory_dir)

    def chat(self, image: ImageInput | None, text: str) -> Reply:
        """Answer ``text`` about ``image`` (None: the conversation's image so far)."""
        if image is not None:
            self.memory.set_input(Image.fromarray(np.ascontiguousarray(load_rgb(image))))
        elif "input" not in self.memory.current:
            return Reply(text="Give me an image first.", error="no image")
        return self.run(self.planner.plan(text, self.memory))

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
