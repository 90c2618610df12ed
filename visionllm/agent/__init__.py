"""Chained requests over the model's tasks: typed tools, JSON plans validated before they run, an
executor with a per-conversation memory, planners (rules, SmolLM2, an OpenAI-compatible endpoint) and
:class:`Agent` (see docs/agent.md)."""

from visionllm.agent.builtin import default_registry
from visionllm.agent.chat import PLANNERS, Agent, Reply, make_planner
from visionllm.agent.executor import Executor, Result, TraceEntry
from visionllm.agent.memory import Memory
from visionllm.agent.plan import Plan, Step, parse_plan
from visionllm.agent.planners import Feedback, OpenAIPlanner, Planner, SmolLM2Planner, plan_schema
from visionllm.agent.rules import RulePlanner
from visionllm.agent.tools import Object, Objects, Tool, ToolContext, ToolRegistry, tool_from_function

__all__ = [
    "PLANNERS", "Agent", "Executor", "Feedback", "Memory", "Object", "Objects", "OpenAIPlanner", "Plan",
    "Planner", "Reply", "Result", "RulePlanner", "SmolLM2Planner", "Step", "Tool", "ToolContext",
    "ToolRegistry", "TraceEntry", "default_registry", "make_planner", "parse_plan", "plan_schema",
    "tool_from_function",
]  # fmt: skip
