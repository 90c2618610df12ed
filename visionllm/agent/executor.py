"""Run a validated plan: each step's tool on its resolved arguments, every output kept in the memory.

The result carries the answer (text, and the files of any answered images) and the trace: per step,
the tool, its arguments as written, the name its output is stored under and how long it took. A step
that raises stops the run; the result then says which step failed and why (``error``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from visionllm.agent.memory import Memory
from visionllm.agent.plan import Plan, reference
from visionllm.agent.tools import ToolContext, ToolRegistry
from visionllm.structures import ObjectPrediction


@dataclass
class TraceEntry:
    """One step as it ran: its arguments as written, its output's name in the memory, its time or error."""

    step: str
    tool: str
    args: dict[str, Any]
    artifact: str | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Result:
    """A run's answer (text, answered images' files), its trace, and the failing step's message."""

    text: str
    image_paths: list[str] = field(default_factory=list)
    trace: list[TraceEntry] = field(default_factory=list)
    error: str | None = None


def answer_text(value: Any) -> str:
    """How one answered value reads in the reply."""
    if isinstance(value, ObjectPrediction):
        x1, y1, x2, y2 = value.box
        return f"{value.class_name} ({value.score:.2f}) at [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]"
    if isinstance(value, list) and all(isinstance(v, ObjectPrediction) for v in value):
        if not value:
            return "Nothing was found."
        return f"{len(value)} found: " + "; ".join(answer_text(v) for v in value) + "."
    return str(value)


class Executor:
    """Runs plans with ``registry``'s tools, passing ``context`` to those that take one."""

    def __init__(self, registry: ToolRegistry, context: ToolContext) -> None:
        self.registry = registry
        self.context = context

    def run(self, plan: Plan, memory: Memory) -> Result:
        """Execute ``plan`` (already validated against ``memory.available()``) in ``memory``."""
        if plan.decline is not None:
            return Result(text=plan.decline)
        values: dict[str, Any] = dict(memory.current)
        trace = []
        for step in plan.steps:
            tool = self.registry[step.tool]
            entry = TraceEntry(step.id, step.tool, step.args)
            trace.append(entry)
            kwargs = {name: self._resolve(v, values, tool.inputs[name]) for name, v in step.args.items()}
            if tool.context_arg is not None:
                kwargs[tool.context_arg] = self.context
            start = time.perf_counter()
            try:
                output = tool.function(**kwargs)
            except Exception as error:  # a tool's failure is the user's answer, not a crash
                entry.error = f"{type(error).__name__}: {error}"
                entry.seconds = time.perf_counter() - start
                message = f"step {step.id!r} ({step.tool}) failed: {entry.error}"
                return Result(text=message, trace=trace, error=message)
            entry.seconds = time.perf_counter() - start
            entry.artifact = memory.store(output)
            values[step.id] = output
            memory.remember(output, tool.output)
        texts, images = [], []
        for name in plan.answer:
            value = values[name]
            if isinstance(value, Image.Image):
                images.append(str(memory.path(memory.store(value))))
            elif isinstance(value, list) and value and all(isinstance(v, Image.Image) for v in value):
                images.extend(str(memory.path(n)) for n in memory.store(value).split(","))
            else:
                texts.append(answer_text(value))
        text = " ".join(texts) or f"Here is the result ({len(images)} image{'s' * (len(images) != 1)})."
        return Result(text=text, image_paths=images, trace=trace)

    @staticmethod
    def _resolve(value: Any, values: dict[str, Any], expected: Any) -> Any:
        """A reference's value (one Object wrapped in a list where Objects are expected), else the literal."""
        name = reference(value)
        if name is None:
            return value
        resolved = values[name]
        if isinstance(resolved, ObjectPrediction) and expected == list[ObjectPrediction]:
            return [resolved]
        return resolved
