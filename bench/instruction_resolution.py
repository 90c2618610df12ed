"""Single-step instruction resolution per planner: does a free-form request become the right task and
the exact class list (or referring phrase)?

    python bench/instruction_resolution.py [--planners resolver rules smollm2 smollm2-free]
        [--url http://127.0.0.1:8000/v1 --model M] [--halves rules heldout] [--limit N]
        [--out bench/results/instruction_resolution.json]

The set is ``bench/sets/instructions_{rules,heldout}.json`` (80 + 80 requests): the rules half is the one
the rule-based resolver was improved on, the held-out half was written first and never tuned on. A
request is a one-step plan: each planner writes its plan, and its first model step (detect, segment or
ground) gives the task and the names. Planners: ``resolver`` (``resolve_instruction``, what
``visionllm predict --instruction`` uses), ``rules`` (the agent's rule planner), ``smollm2`` (SmolLM2-135M,
constrained to the plan schema), ``smollm2-free`` (the same, unconstrained), ``openai`` (``--url``). A plan
that does not validate counts as wrong (``invalid``). No model weights are needed except SmolLM2's.
``--limit N`` scores the model planners on the first N requests of each half only (SmolLM2 takes
5-15 s a request on 2 CPU cores).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, argument_parser, table, write_json  # noqa: E402
from PIL import Image  # noqa: E402

from visionllm.agent import default_registry, make_planner, parse_plan  # noqa: E402
from visionllm.instructions import resolve_instruction  # noqa: E402

SETS = REPO / "bench" / "sets"
MODEL_TOOLS = ("detect", "segment", "ground")


def load_set(half: str) -> list[dict]:
    """The items of one half (``rules`` or ``heldout``)."""
    return json.loads((SETS / f"instructions_{half}.json").read_text())["items"]


def resolver(planner_name: str, url: str | None = None, model: str = "default", max_new_tokens: int = 160):
    """A function text -> (task, names) or (None, reason) for one planner."""
    registry = default_registry()
    if planner_name == "resolver":

        def resolve(text: str) -> tuple[str | None, list[str] | str]:
            try:
                request = resolve_instruction(text)
            except ValueError as error:
                return None, f"error: {str(error).splitlines()[0]}"
            return request.task, request.classes

        return resolve
    if planner_name.startswith("smollm2"):
        planner = make_planner(
            "smollm2", registry, constrained=planner_name == "smollm2", max_new_tokens=max_new_tokens
        )
    elif planner_name == "openai":
        planner = make_planner("openai", registry, url=url, model=model)
    else:
        planner = make_planner(planner_name, registry)

    def resolve(text: str) -> tuple[str | None, list[str] | str]:
        try:
            plan = parse_plan(planner.plan(text), registry, {"input": Image.Image})
        except ValueError as error:
            return None, f"invalid: {error}"
        if plan.decline is not None:
            return None, "declined"
        for step in plan.steps:
            if step.tool in MODEL_TOOLS:
                names = step.args.get("classes") or [step.args.get("phrase")]
                return step.tool, names if all(isinstance(n, str) for n in names) else "reference"
        return None, "no model step"

    return resolve


def score(resolve, items: list[dict]) -> dict:
    """Task accuracy, task + exact names accuracy, seconds per request, and the misses."""
    task_ok = exact_ok = 0
    misses = []
    start = time.perf_counter()
    for item in items:
        task, names = resolve(item["text"])
        task_ok += task == item["task"]
        exact = task == item["task"] and names == item["names"]
        exact_ok += exact
        if not exact:
            misses.append(
                {"text": item["text"], "expected": [item["task"], item["names"]], "got": [task, names]}
            )
    seconds = time.perf_counter() - start
    n = len(items)
    return {
        "n": n,
        "task": task_ok / n,
        "exact": exact_ok / n,
        "s_per_request": seconds / n,
        "misses": misses,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser(__doc__)
    parser.add_argument("--planners", nargs="+", default=["resolver", "rules", "smollm2", "smollm2-free"])
    parser.add_argument("--halves", nargs="+", default=["rules", "heldout"], choices=["rules", "heldout"])
    parser.add_argument("--url", help="the openai planner's endpoint")
    parser.add_argument("--model", default="default", help="the openai planner's model name")
    parser.add_argument(
        "--limit", type=int, help="the model planners: only the first N requests of each half"
    )
    parser.add_argument("--max-new-tokens", type=int, default=160, help="smollm2: the longest plan")
    parser.add_argument("--out", type=Path, help="write the results (with every miss) as JSON")
    args = parser.parse_args(argv)
    results = {}
    for name in args.planners:
        resolve = resolver(name, args.url, args.model, args.max_new_tokens)
        limit = args.limit if name not in ("resolver", "rules") else None
        results[name] = {half: score(resolve, load_set(half)[:limit]) for half in args.halves}
        for half, result in results[name].items():
            print(f"{name} / {half}: task {result['task']:.3f}, exact {result['exact']:.3f}", file=sys.stderr)
    rows = [
        [
            name,
            *(f"{r[h]['task']:.3f} / {r[h]['exact']:.3f} (n={r[h]['n']})" for h in args.halves),
            f"{r[args.halves[0]]['s_per_request']:.3f}",
        ]
        for name, r in results.items()
    ]
    header = " | ".join(
        ["planner", *(f"{h} half: task / task + exact names" for h in args.halves), "s / request"]
    )
    print(table(header, "", rows, "l" + "r" * (len(args.halves) + 1)))
    if args.out:
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
