"""Plans: JSON a planner writes, validated against the tool registry before anything runs.

    {"steps": [{"id": "s1", "tool": "detect", "args": {"image": "$input", "classes": ["star"]}},
               {"id": "s2", "tool": "select", "args": {"objects": "$s1", "by": "largest"}},
               {"id": "s3", "tool": "crop", "args": {"image": "$input", "object": "$s2"}}],
     "answer": ["$s3"]}

An argument that is a string starting with ``$`` refers to a name: an earlier step's id or one the
conversation memory provides (``$input``, ``$last_objects``, ...). ``answer`` lists the references
the reply is made of. A planner that cannot serve a request writes ``{"decline": "why"}``. Plans are
read with ``json.loads`` and checked field by field; nothing in them is ever evaluated as code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from visionllm.agent.tools import ToolRegistry, accepts, type_name, value_matches

_STEP_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass
class Step:
    """One validated step: ``args`` as written (references still ``"$name"``)."""

    id: str
    tool: str
    args: dict[str, Any]


@dataclass
class Plan:
    """Validated steps and the references the answer is made of; or, declined, only ``decline``."""

    steps: list[Step] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    decline: str | None = None

    def to_json(self) -> dict:
        if self.decline is not None:
            return {"decline": self.decline}
        steps = [{"id": s.id, "tool": s.tool, "args": s.args} for s in self.steps]
        return {"steps": steps, "answer": [f"${name}" for name in self.answer]}


def reference(value: Any) -> str | None:
    """The name a ``"$name"`` argument refers to, or None for a literal."""
    return value[1:] if isinstance(value, str) and value.startswith("$") else None


def parse_plan(plan: str | dict, registry: ToolRegistry, available: dict[str, Any]) -> Plan:
    """Read and validate a plan (JSON text or its parsed dict) against ``registry``.

    ``available`` maps the names the memory provides (``input``, ``last_objects``, ...) to their
    types. Raises ValueError naming the step and argument for: text that is not JSON, a malformed
    plan, a duplicate or reserved step id, an unknown tool, a missing or unexpected argument, a
    literal of the wrong type, a reference to nothing, to a later step, or to an output of the wrong type.
    """
    if isinstance(plan, str):
        try:
            plan = json.loads(plan)
        except json.JSONDecodeError as error:
            raise ValueError(f"the plan is not JSON: {error}") from error
    if not isinstance(plan, dict):
        raise ValueError(f"a plan is a JSON object, got {type(plan).__name__}")
    if "decline" in plan:
        if set(plan) != {"decline"} or not isinstance(plan["decline"], str):
            raise ValueError('a declined plan is {"decline": "<why>"} and nothing else')
        return Plan(decline=plan["decline"])
    if set(plan) != {"steps", "answer"}:
        raise ValueError(f'a plan has the keys "steps" and "answer", got {sorted(plan)}')
    if not isinstance(plan["steps"], list) or not plan["steps"]:
        raise ValueError('"steps" must be a non-empty list')
    types = dict(available)
    ids = {raw.get("id") for raw in plan["steps"] if isinstance(raw, dict) and isinstance(raw.get("id"), str)}
    steps = []
    for position, raw in enumerate(plan["steps"]):
        step = _check_step(raw, position, registry, types, ids)
        types[step.id] = registry[step.tool].output
        steps.append(step)
    answer = plan["answer"] if isinstance(plan["answer"], list) else [plan["answer"]]
    if not answer:
        raise ValueError('"answer" must name at least one step')
    names = []
    for value in answer:
        name = reference(value)
        if name is None or name not in types:
            raise ValueError(f'"answer": {value!r} is not a reference to a step or memory name')
        names.append(name)
    return Plan(steps=steps, answer=names)


def _check_step(raw: Any, position: int, registry: ToolRegistry, types: dict[str, Any], ids: set) -> Step:
    """One step against the tools and the ``types`` of the names before it (``ids``: all step ids)."""
    where = f"step {position + 1}"
    if not isinstance(raw, dict) or set(raw) != {"id", "tool", "args"}:
        raise ValueError(f'{where}: a step is {{"id": ..., "tool": ..., "args": {{...}}}}, got {raw!r}')
    step_id, tool_name, args = raw["id"], raw["tool"], raw["args"]
    if not isinstance(step_id, str) or not _STEP_ID.fullmatch(step_id):
        raise ValueError(f"{where}: the id {step_id!r} is not a name (a letter, then letters, digits, _)")
    where = f"step {step_id!r}"
    if step_id in types:
        raise ValueError(f"{where}: the id is already used by an earlier step or the memory")
    if tool_name not in registry:
        raise ValueError(f"{where}: unknown tool {tool_name!r}; the tools are {sorted(registry.tools)}")
    if not isinstance(args, dict):
        raise ValueError(f'{where}: "args" must be an object, got {type(args).__name__}')
    tool = registry[tool_name]
    for name in args.keys() - tool.inputs.keys():
        raise ValueError(f"{where}: {tool_name} has no argument {name!r}; it takes {tool.signature()}")
    for name in tool.inputs.keys() - args.keys() - tool.optional:
        raise ValueError(f"{where}: the argument {name!r} of {tool_name} is missing ({tool.signature()})")
    for name, value in args.items():
        expected = tool.inputs[name]
        ref = reference(value)
        if ref is None:
            if not value_matches(expected, value):
                raise ValueError(
                    f"{where}: argument {name!r} must be {type_name(expected)}, got the literal {value!r}"
                )
        elif ref in ids and ref not in types:
            raise ValueError(f"{where}: argument {name!r} refers to ${ref}, a later step (forward reference)")
        elif ref not in types:
            raise ValueError(
                f"{where}: argument {name!r} refers to ${ref}, which is no earlier step nor a memory name "
                f"(known: {', '.join('$' + n for n in types) or 'none'})"
            )
        elif not accepts(expected, types[ref]):
            raise ValueError(
                f"{where}: argument {name!r} must be {type_name(expected)}, "
                f"but ${ref} is {type_name(types[ref])}"
            )
    return Step(step_id, tool_name, dict(args))
