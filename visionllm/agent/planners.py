"""Planners that ask a language model for the plan: the local SmolLM2-135M-Instruct and any
OpenAI-compatible chat endpoint. Both read the same prompt (the tools, the plan format, a few example
requests with their plans, the memory names a follow-up may use) and write the plan's JSON, which
the agent validates like any plan (nothing a model writes is ever evaluated as code).

The SmolLM2 planner can constrain its output to the plan's JSON schema (:func:`plan_schema`, built
from the tool registry: each step's tool and its arguments' types, references as ``"$name"``) with
``lm-format-enforcer``: a pure-Python character-level parser that filters the next token's logits at
each greedy step, so it needs no compiled kernels (``outlines`` and ``xgrammar`` ship native code, and
their wheels pin other transformers / torch versions than this project's). Its transformers
integration module does not import with transformers 5, so the token data it needs is built here
from the tokenizer, and the decoding loop is a plain greedy loop with a KV cache.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol, get_args, get_origin

from PIL import Image

from visionllm.agent.memory import MEMORY_NAMES, Memory
from visionllm.agent.tools import Object, Objects, ToolRegistry, type_name

#: The plan references a model may write: a step (s1, s2, ...) or a memory name.
REFERENCE_PATTERN = r"^\$(?:s[0-9]+|" + "|".join(MEMORY_NAMES) + r")$"


@dataclass
class Feedback:
    """What went wrong with a plan, for the planner's one repair attempt."""

    plan: str | dict
    error: str


class Planner(Protocol):
    """Writes the plan (JSON text or its dict) for a request in a conversation; with ``feedback``, a
    repaired plan for the same request."""

    def plan(self, text: str, memory: Memory | None = None, feedback: Feedback | None = None) -> str | dict:
        """The plan for ``text``."""
        ...


def _arg_schema(kind: Any) -> dict:
    """The JSON schema of one tool argument: images and objects are references, the rest literals."""
    if kind in (Image.Image, Object, Objects):
        return {"type": "string", "pattern": REFERENCE_PATTERN}
    if get_origin(kind) is Literal:
        return {"type": "string", "enum": list(get_args(kind))}
    if get_origin(kind) is list:
        return {"type": "array", "items": _arg_schema(get_args(kind)[0]), "minItems": 1}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if kind in simple:
        return {"type": simple[kind]}
    return {"type": "string", "pattern": REFERENCE_PATTERN}  # a custom tool's own type


def plan_schema(registry: ToolRegistry) -> dict:
    """The JSON schema of a plan for ``registry``'s tools (or of a decline)."""
    steps = [
        {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": r"^s[0-9]+$"},
                "tool": {"type": "string", "enum": [tool.name]},
                "args": {
                    "type": "object",
                    "properties": {name: _arg_schema(kind) for name, kind in tool.inputs.items()},
                    "required": [name for name in tool.inputs if name not in tool.optional],
                    "additionalProperties": False,
                },
            },
            "required": ["id", "tool", "args"],
            "additionalProperties": False,
        }
        for tool in registry.tools.values()
    ]
    plan = {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"anyOf": steps}, "minItems": 1},
            "answer": {
                "type": "array",
                "items": {"type": "string", "pattern": REFERENCE_PATTERN},
                "minItems": 1,
            },
        },
        "required": ["steps", "answer"],
        "additionalProperties": False,
    }
    decline = {
        "type": "object",
        "properties": {"decline": {"type": "string"}},
        "required": ["decline"],
        "additionalProperties": False,
    }
    return {"anyOf": [plan, decline]}


_RULES = """You are a planner for an image tool agent. Answer ONLY with one JSON object, no prose.
A plan is {"steps": [{"id": "s1", "tool": ..., "args": {...}}, ...], "answer": ["$s2", ...]}.
An argument "$s1" refers to step s1's output; "$input" is the user's image; "$last_objects" and
"$last_object" are the objects found in an earlier turn ("them", "it"). Class names are singular nouns.
If no tool can do the request, answer {"decline": "<why>"}.
Tools:
"""

#: Example requests and their plans (the prompt's few-shot turns): (memory names, request, plan).
EXAMPLES: tuple[tuple[tuple[str, ...], str, dict], ...] = (
    (
        ("input",),
        "find the cats and dogs",
        {
            "steps": [
                {"id": "s1", "tool": "detect", "args": {"image": "$input", "classes": ["cat", "dog"]}},
                {"id": "s2", "tool": "draw", "args": {"image": "$input", "objects": "$s1"}},
            ],
            "answer": ["$s1", "$s2"],
        },
    ),
    (
        ("input",),
        "segment the stars, then crop the largest one",
        {
            "steps": [
                {"id": "s1", "tool": "segment", "args": {"image": "$input", "classes": ["star"]}},
                {"id": "s2", "tool": "select", "args": {"objects": "$s1", "by": "largest"}},
                {"id": "s3", "tool": "crop", "args": {"image": "$input", "object": "$s2"}},
            ],
            "answer": ["$s3"],
        },
    ),
    (
        ("input",),
        "where is the man in the red shirt?",
        {
            "steps": [
                {
                    "id": "s1",
                    "tool": "ground",
                    "args": {"image": "$input", "phrase": "the man in the red shirt"},
                },
                {"id": "s2", "tool": "draw", "args": {"image": "$input", "objects": "$s1"}},
            ],
            "answer": ["$s1", "$s2"],
        },
    ),
    (
        ("input", "last_objects"),
        "how many are there?",
        {"steps": [{"id": "s1", "tool": "count", "args": {"objects": "$last_objects"}}], "answer": ["$s1"]},
    ),
    (("input",), "what is the weather like?", {"decline": "No tool can answer that."}),
)


def _memory_line(names: Sequence[str]) -> str:
    return "Memory: " + ", ".join(f"${name} ({type_name(MEMORY_NAMES[name])})" for name in names)


def messages_for(
    text: str, registry: ToolRegistry, memory: Memory | None = None, feedback: Feedback | None = None
) -> list[dict[str, str]]:
    """The chat messages a model planner reads: the rules and tools, the examples, the request."""
    messages = [{"role": "system", "content": _RULES + registry.describe()}]
    for names, request, plan in EXAMPLES:
        messages.append({"role": "user", "content": f"{_memory_line(names)}\nRequest: {request}"})
        messages.append({"role": "assistant", "content": json.dumps(plan)})
    names = list(memory.available()) if memory else ["input"]
    messages.append({"role": "user", "content": f"{_memory_line(names)}\nRequest: {text}"})
    if feedback is not None:
        written = feedback.plan if isinstance(feedback.plan, str) else json.dumps(feedback.plan)
        messages.append({"role": "assistant", "content": written})
        messages.append(
            {"role": "user", "content": f"That plan failed: {feedback.error}\nWrite a corrected plan."}
        )
    return messages


def extract_json(text: str) -> str:
    """The JSON object in a model's reply: from its first ``{`` to its last ``}`` (code fences and
    prose around it dropped); the text itself when it has none (then validation reports it)."""
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text


class LLMPlanner:
    """A planner that asks a chat model: subclasses implement :meth:`complete`."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The model's reply to the chat ``messages``."""
        raise NotImplementedError

    def plan(self, text: str, memory: Memory | None = None, feedback: Feedback | None = None) -> str:
        """The model's plan for ``text`` (JSON text, validated by the agent)."""
        return extract_json(self.complete(messages_for(text, self.registry, memory, feedback)))


@lru_cache(maxsize=2)
def _load_llm(model_dir: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    return tokenizer, model.eval()


@lru_cache(maxsize=2)
def _tokenizer_data(model_dir: str) -> Any:
    """lm-format-enforcer's per-tokenizer data: each regular token's text (with its leading space when
    it starts a word) and the decoder."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    tokenizer, _ = _load_llm(model_dir)
    special = set(tokenizer.all_special_ids)
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    regular = []
    for token in range(len(tokenizer)):
        if token in special:
            continue
        after_zero = tokenizer.decode([zero, token])[1:]  # keeps a word-start token's leading space
        regular.append((token, after_zero, len(after_zero) > len(tokenizer.decode([token]))))

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")

    return TokenEnforcerTokenizerData(regular, decode, tokenizer.eos_token_id, False, len(tokenizer))


class SmolLM2Planner(LLMPlanner):
    """SmolLM2-135M-Instruct (the packaged LLM, offline), greedy; ``constrained`` restricts every
    token to what keeps the output a prefix of a plan matching :func:`plan_schema` (lm-format-enforcer).

    Args:
        registry: the tools the plans may use (and the schema is built from).
        constrained: schema-constrained decoding (True) or plain greedy decoding (False).
        model_dir: a transformers directory (default: ``visionllm.pretrained.smollm2_dir()``).
        max_new_tokens: the longest plan.
    """

    def __init__(
        self,
        registry: ToolRegistry,
        constrained: bool = True,
        model_dir: str | Path | None = None,
        max_new_tokens: int = 256,
    ) -> None:
        super().__init__(registry)
        if model_dir is None:
            from visionllm.pretrained import smollm2_dir

            model_dir = smollm2_dir()
        self.model_dir = str(model_dir)
        self.constrained = constrained
        self.max_new_tokens = max_new_tokens
        self.schema = plan_schema(registry)

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        tokenizer, model = _load_llm(self.model_dir)
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        enforcer = None
        if self.constrained:
            enforcer = TokenEnforcer(_tokenizer_data(self.model_dir), JsonSchemaParser(self.schema))
        generated: list[int] = []
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            for _ in range(self.max_new_tokens):
                logits = out.logits[0, -1]
                if enforcer is not None:
                    allowed = enforcer.get_allowed_tokens(generated).allowed_tokens
                    if not allowed:
                        break
                    masked = torch.full_like(logits, float("-inf"))
                    masked[allowed] = logits[allowed]
                    logits = masked
                token = int(logits.argmax())
                if token == tokenizer.eos_token_id:
                    break
                generated.append(token)
                out = model(input_ids=torch.tensor([[token]]), cache=out.cache, use_cache=True)
        return tokenizer.decode(generated, skip_special_tokens=True)


class OpenAIPlanner(LLMPlanner):
    """Any OpenAI-compatible chat endpoint: ``POST {url}/chat/completions`` (``url`` such as
    ``http://127.0.0.1:8000/v1``; a URL already ending in ``/chat/completions`` is used as it is).

    Args:
        registry: the tools the plans may use.
        url: the endpoint's base URL.
        model: the model name the endpoint serves.
        api_key: sent as ``Authorization: Bearer <key>`` when given.
        timeout: seconds to wait for an answer.
    """

    def __init__(
        self,
        registry: ToolRegistry,
        url: str,
        model: str = "default",
        api_key: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(registry)
        if not re.match(r"https?://", url):
            raise ValueError(f"the planner URL must start with http:// or https://, got {url!r}")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(
                f"the planner endpoint {self.url} answered HTTP {error.code}: {error.reason}"
            ) from error
        except (urllib.error.URLError, TimeoutError) as error:
            raise RuntimeError(f"the planner endpoint {self.url} cannot be reached: {error}") from error
        except json.JSONDecodeError as error:
            raise RuntimeError(f"the planner endpoint {self.url} did not answer JSON: {error}") from error
        try:
            return answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise RuntimeError(
                f"the planner endpoint {self.url} answered no choices[0].message.content"
            ) from error
