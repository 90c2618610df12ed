"""Chained requests over the model's tasks: typed tools, JSON plans validated before they run, an
executor with a per-conversation memory, a rule-based planner, and :class:`Agent` (see docs/agent.md)."""

from visionllm.agent.builtin import default_registry
from visionllm.agent.chat import Agent, Reply
from visionllm.agent.executor import Executor, Result, TraceEntry
from visionllm.agent.memory import Memory
from visionllm.agent.plan import Plan, Step, parse_plan
from visionllm.agent.rules import RulePlanner
from visionllm.agent.tools import Object, Objects, Tool, ToolContext, ToolRegistry, tool_from_function

__all__ = [
    "Agent", "Executor", "Memory", "Object", "Objects", "Plan", "Reply", "Result", "RulePlanner",
    "Step", "Tool", "ToolContext", "ToolRegistry", "TraceEntry", "default_registry", "parse_plan",
    "tool_from_function",
]  # fmt: skip
