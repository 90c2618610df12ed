"""Typed tools for the agent: a name, a one-line description a planner reads, typed inputs and output.

A tool is a plain Python function; :meth:`ToolRegistry.register` reads its type hints and the first
line of its docstring, so adding one is::

    @registry.register
    def brightest(image: Image.Image, objects: Objects) -> Object:
        \"\"\"The object whose box is brightest on average.\"\"\"

Parameters with defaults are optional in a plan. A parameter typed :class:`ToolContext` is not an
input: the executor passes its context there (the Predictor, the score threshold), which keeps the
registry, plans and the tools that need no model testable without one.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from PIL import Image

from visionllm.structures import ObjectPrediction

#: One object the model found (its box, class, score, mask or polygon), in the image's pixels.
Object = ObjectPrediction
#: Several objects, in the model's order.
Objects = list[ObjectPrediction]


@dataclass
class ToolContext:
    """What tools that call the model get from the executor: the Predictor and its score threshold."""

    predictor: Any = None
    score_thr: float = 0.3


@dataclass(frozen=True)
class Tool:
    """A registered function: ``inputs`` maps each plan argument to its type, ``optional`` names those
    with defaults, ``context_arg`` the parameter the executor passes its :class:`ToolContext` to (if any)."""

    name: str
    description: str
    inputs: dict[str, Any]
    optional: frozenset[str]
    output: Any
    function: Callable[..., Any]
    context_arg: str | None

    def signature(self) -> str:
        """``"select(objects: Objects, by: 'largest' | ...) -> Object"``: how a planner sees the tool."""
        args = ", ".join(
            f"{name}: {type_name(kind)}{' = optional' if name in self.optional else ''}"
            for name, kind in self.inputs.items()
        )
        return f"{self.name}({args}) -> {type_name(self.output)}"


def type_name(kind: Any) -> str:
    """A short readable name for a tool type (the names plans and error messages use)."""
    if kind is Image.Image:
        return "Image"
    if kind is ObjectPrediction:
        return "Object"
    if kind == Objects:
        return "Objects"
    if get_origin(kind) is Literal:
        return " | ".join(repr(v) for v in get_args(kind))
    if get_origin(kind) is list:
        return f"list[{type_name(get_args(kind)[0])}]"
    return getattr(kind, "__name__", str(kind))


def accepts(expected: Any, given: Any) -> bool:
    """Whether a value of type ``given`` may fill a parameter of type ``expected``: the same type, an
    int for a float, or one Object where Objects are expected (passed as a list of one)."""
    if expected == given or (expected is float and given is int):
        return True
    if expected == Objects and given is ObjectPrediction:
        return True
    if get_origin(expected) is Literal:
        return given is str and all(isinstance(v, str) for v in get_args(expected))
    if get_origin(expected) is Union:
        return any(accepts(option, given) for option in get_args(expected))
    return False


def value_matches(expected: Any, value: Any) -> bool:
    """Whether a literal JSON value fits a parameter of type ``expected`` (plans may only write
    strings, numbers, booleans and lists of them; images and objects come from references)."""
    origin = get_origin(expected)
    if origin is Literal:
        return value in get_args(expected)
    if origin is Union:
        return any(value_matches(option, value) for option in get_args(expected))
    if origin is list:
        return isinstance(value, list) and all(value_matches(get_args(expected)[0], v) for v in value)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected in (str, bool):
        return isinstance(value, expected)
    if expected is type(None):
        return value is None
    return False


class ToolRegistry:
    """Tools by name, each registered from a type-hinted, documented function."""

    def __init__(self) -> None:
        self.tools: dict[str, Tool] = {}

    def register(self, function: Callable[..., Any] | None = None, *, name: str | None = None):
        """Register ``function`` (usable as ``@registry.register`` or ``@registry.register(name=...)``).

        Raises ValueError for a function without a docstring, a parameter or return value without a
        type hint, or a name already taken.
        """
        if function is None:
            return lambda f: self.register(f, name=name)
        tool = tool_from_function(function, name)
        if tool.name in self.tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self.tools[tool.name] = tool
        return function

    def __getitem__(self, name: str) -> Tool:
        return self.tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def describe(self) -> str:
        """One line per tool, signature and description: what a planner is shown."""
        return "\n".join(f"{tool.signature()}: {tool.description}" for tool in self.tools.values())


def tool_from_function(function: Callable[..., Any], name: str | None = None) -> Tool:
    """A :class:`Tool` from ``function``'s type hints and the first line of its docstring."""
    tool_name = name or function.__name__
    doc = inspect.getdoc(function)
    if not doc:
        raise ValueError(f"tool {tool_name!r} needs a docstring: its first line is the planner's description")
    hints = typing.get_type_hints(function)
    if "return" not in hints:
        raise ValueError(f"tool {tool_name!r} needs a return type hint")
    inputs, optional, context_arg = {}, set(), None
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ValueError(f"tool {tool_name!r}: *args and **kwargs cannot be typed in a plan")
        if parameter.name not in hints:
            raise ValueError(f"tool {tool_name!r}: the parameter {parameter.name!r} needs a type hint")
        if hints[parameter.name] is ToolContext:
            context_arg = parameter.name
            continue
        inputs[parameter.name] = hints[parameter.name]
        if parameter.default is not parameter.empty:
            optional.add(parameter.name)
    return Tool(
        name=tool_name,
        description=doc.splitlines()[0],
        inputs=inputs,
        optional=frozenset(optional),
        output=hints["return"],
        function=function,
        context_arg=context_arg,
    )
