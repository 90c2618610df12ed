"""Multi-step requests per planner: plan validity, exact-plan match, step accuracy, final-answer accuracy,
seconds per request, and what kinds of failures each planner makes.

    python bench/agent_plans.py [--planners rules smollm2 smollm2-free] [--url URL --model M]
        [--out bench/results/agent_plans.json] [--write-answers] [--limit N]

The set is ``bench/sets/agent_plans.json``: 42 turns in 19 conversations on synthetic images, each with
its hand-written expected plan (7 are requests no tool can serve: they must be declined) and its expected
final answer. Follow-up turns ("crop the largest one", "how many are there?") run in the conversation's
memory, so a planner that got an earlier turn wrong may get them wrong too. The model tools answer with
the image's ground-truth objects (an oracle in place of the model), so the figures measure the planners,
not the vision model. A turn's plan is its planner's first one; its final answer is the reply after the
agent's one repair. ``--write-answers`` runs the expected plans and stores their answers in the set.
``--limit N`` runs the model planners on the first N conversations only (SmolLM2 takes 5-15 s a plan
on 2 CPU cores).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, argument_parser, table, write_json

from visionllm.agent import Agent, default_registry, make_planner
from visionllm.data.synthetic import COLORS, SIZES, generate_synthetic
from visionllm.structures import ObjectPrediction
from visionllm.tasks.wording import singularize

SET = REPO / "bench" / "sets" / "agent_plans.json"
DECLINE_TEXT = "No tool can do that."


class OraclePredictor:
    """Answers the model tools with the ground truth of the image ``image_id`` (set per conversation):
    detect / segment by class (segment with outlines), ground by the phrase's class, colour, size and
    position words. Scores fall with the drawing order, so "best" is well defined."""

    def __init__(self, coco: dict) -> None:
        names = {c["id"]: c["name"] for c in coco["categories"]}
        self.objects: dict[int, list[tuple[ObjectPrediction, dict]]] = {}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            found = self.objects.setdefault(ann["image_id"], [])
            obj = ObjectPrediction(
                names[ann["category_id"]], 0.99 - 0.01 * len(found), (x, y, x + w, y + h), 0
            )
            found.append((obj, {**ann["attributes"], "polygon": ann["segmentation"][0]}))
        self.image_id = 0

    def predict(self, image, *, task: str, classes=None, phrase=None, score_thr: float = 0.0) -> list:
        pairs = self.objects[self.image_id]
        if task == "ground":
            found = self._ground(phrase)
        else:
            found = [(o, a) for o, a in pairs if o.class_name in classes]
        objects = [
            ObjectPrediction(
                o.class_name, o.score, o.box, 0, polygon=a["polygon"] if task == "segment" else None
            )
            for o, a in found
        ]
        return [SimpleNamespace(objects=objects)]

    def _ground(self, phrase: str) -> list:
        words = set(re.findall(r"[a-z]+", phrase.lower()))
        candidates = [
            (o, a)
            for o, a in self.objects[self.image_id]
            if singularize(o.class_name) in {singularize(w) for w in words}
            and (a["color"] in words or not words & set(COLORS))
            and (a["size"] in words or not words & set(SIZES))
        ]
        for axis, side, sign in ((0, "left", 1), (0, "right", -1), (1, "top", 1), (1, "bottom", -1)):
            if side in words and candidates:
                candidates = [
                    min(candidates, key=lambda p, a=axis, s=sign: s * (p[0].box[a] + p[0].box[a + 2]))
                ]
        return candidates[:1]


class Recording:
    """A planner that remembers the first plan it wrote for each turn."""

    def __init__(self, planner) -> None:
        self.planner = planner
        self.first: list = []
        self.first_error: str | None = None  # why the last turn's first plan went back for repair

    def plan(self, text, memory=None, feedback=None):
        if feedback is None:
            self.first_error = None
        else:
            self.first_error = feedback.error
        plan = self.planner.plan(text, memory, feedback)
        if feedback is None:
            self.first.append(plan)
        return plan


class Scripted:
    """The expected plans, in turn (for --write-answers)."""

    def __init__(self, plans: list) -> None:
        self.plans = plans

    def plan(self, text, memory=None, feedback=None):
        plan = self.plans.pop(0)
        return {"decline": DECLINE_TEXT} if plan == {"decline": True} else plan


def load_images(spec: dict, folder: Path) -> tuple[dict, dict[int, Path]]:
    """The synthetic images of the set and their COCO annotations."""
    paths = generate_synthetic(folder, **spec)
    coco = json.loads(paths["train"].read_text())
    return coco, {img["id"]: folder / "images" / img["file_name"] for img in coco["images"]}


def answer_of(reply) -> dict:
    """A reply as it is compared: declined, or its text and its images' (pixel-hash) names."""
    if "decline" in reply.plan:
        return {"decline": True}
    return {"text": reply.text, "images": [Path(p).name for p in reply.image_paths]}


def as_json(plan) -> dict | None:
    """A planner's plan as a dict, None when it is not JSON."""
    if isinstance(plan, dict):
        return plan
    try:
        parsed = json.loads(plan)
    except (json.JSONDecodeError, TypeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def normalise(plan: dict | None) -> dict | None:
    """Declines all alike; the answer always a list."""
    if plan is None or "decline" in plan:
        return {"decline": True} if plan is not None else None
    answer = plan.get("answer")
    return {**plan, "answer": answer if isinstance(answer, list) else [answer]}


def step_accuracy(produced: dict | None, expected: dict) -> float:
    """The expected steps found at their place in the produced plan, over the longer plan's length."""
    if produced is None:
        return 0.0
    if "decline" in expected or "decline" in produced:
        return float(("decline" in expected) == ("decline" in produced))
    got = produced.get("steps") if isinstance(produced.get("steps"), list) else []
    want = expected["steps"]
    return sum(i < len(got) and got[i] == step for i, step in enumerate(want)) / max(len(want), len(got))


def failure_kind(raw, produced: dict | None, expected: dict, error: str | None) -> str:
    """What went wrong with a turn's first plan (``ok`` when it is the expected one)."""
    if produced is None:
        return "not JSON"
    if "decline" in expected:
        return "ok" if "decline" in produced else "did not decline"
    if "decline" in produced:
        return "declined a request it could serve"
    if error and error.startswith("invalid plan"):
        for pattern, kind in (
            ("unknown tool", "unknown tool"),
            ("forward reference|no earlier step|refers to", "bad reference"),
            ("argument", "wrong or missing argument"),
        ):
            if re.search(pattern, error):
                return f"invalid: {kind}"
        return "invalid: malformed plan"
    if produced == expected:
        return "ok"
    tools = [s.get("tool") for s in produced.get("steps", []) if isinstance(s, dict)]
    if tools != [s["tool"] for s in expected["steps"]]:
        return "valid, wrong tools"
    return "valid, wrong arguments"


def run_planner(
    name: str, data: dict, coco: dict, images: dict, url: str | None, model: str, limit: int | None = None
) -> dict:
    """Every conversation with one planner: per-turn records and the totals."""
    oracle = OraclePredictor(coco)
    registry = default_registry()
    if name.startswith("smollm2"):
        base = make_planner("smollm2", registry, constrained=name == "smollm2", max_new_tokens=200)
    elif name == "openai":
        base = make_planner("openai", registry, url=url, model=model)
    else:
        base = make_planner(name, registry)
    turns = []
    conversations = data["conversations"] if name == "rules" else data["conversations"][:limit]
    for conversation in conversations:
        oracle.image_id = conversation["image"]
        planner = Recording(base)
        with tempfile.TemporaryDirectory() as memory_dir:
            agent = Agent(oracle, planner, registry=registry, memory_dir=memory_dir)
            for position, turn in enumerate(conversation["turns"]):
                start = time.perf_counter()
                reply = agent.chat(images[conversation["image"]] if position == 0 else None, turn["text"])
                seconds = time.perf_counter() - start
                raw = planner.first[-1]
                produced = normalise(as_json(raw))
                first_error = planner.first_error or reply.error
                turns.append(
                    {
                        "text": turn["text"],
                        "plan": raw,
                        "valid": first_error is None or not first_error.startswith("invalid plan"),
                        "exact": produced == turn["plan"],
                        "steps": step_accuracy(produced, turn["plan"]),
                        "answer_ok": answer_of(reply) == turn.get("answer"),
                        "kind": failure_kind(raw, produced, turn["plan"], first_error),
                        "reply": reply.text,
                        "seconds": seconds,
                    }
                )
    n = len(turns)
    totals = {
        key: sum(t[key] for t in turns) / n for key in ("valid", "exact", "steps", "answer_ok", "seconds")
    }
    return {"n": n, **totals, "kinds": dict(Counter(t["kind"] for t in turns)), "turns": turns}


def write_answers(data: dict, coco: dict, images: dict) -> None:
    """Run the expected plans on the ground truth and store their answers in the set."""
    oracle = OraclePredictor(coco)
    for conversation in data["conversations"]:
        oracle.image_id = conversation["image"]
        scripted = Scripted([turn["plan"] for turn in conversation["turns"]])
        with tempfile.TemporaryDirectory() as memory_dir:
            agent = Agent(oracle, scripted, memory_dir=memory_dir)
            for position, turn in enumerate(conversation["turns"]):
                reply = agent.chat(images[conversation["image"]] if position == 0 else None, turn["text"])
                if reply.error:
                    raise RuntimeError(f"the expected plan of {turn['text']!r} failed: {reply.error}")
                turn["answer"] = answer_of(reply)
    SET.write_text(json.dumps(data, indent=1) + "\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser(__doc__)
    parser.add_argument("--planners", nargs="+", default=["rules", "smollm2", "smollm2-free"])
    parser.add_argument("--url", help="the openai planner's endpoint")
    parser.add_argument("--model", default="default", help="the openai planner's model name")
    parser.add_argument("--out", type=Path, help="write the results (every turn's plan and reply) as JSON")
    parser.add_argument("--write-answers", action="store_true", help="store the expected plans' answers")
    parser.add_argument("--limit", type=int, help="the model planners: only the first N conversations")
    args = parser.parse_args(argv)
    data = json.loads(SET.read_text())
    with tempfile.TemporaryDirectory() as folder:
        coco, images = load_images(data["synthetic"], Path(folder))
        if args.write_answers:
            write_answers(data, coco, images)
            return {}
        results = {
            name: run_planner(name, data, coco, images, args.url, args.model, args.limit)
            for name in args.planners
        }
    rows = [
        [
            name,
            r["n"],
            f"{r['valid']:.3f}",
            f"{r['exact']:.3f}",
            f"{r['steps']:.3f}",
            f"{r['answer_ok']:.3f}",
            f"{r['seconds']:.2f}",
        ]
        for name, r in results.items()
    ]
    header = "planner | turns | plan validity | exact plan | step accuracy | final answer | s / request"
    print(table(header, "", rows, "lrrrrrr"))
    kinds = sorted({kind for r in results.values() for kind in r["kinds"]})
    print()
    print(
        table(
            " | ".join(["first plan", *results]),
            "",
            [[k, *(r["kinds"].get(k, 0) for r in results.values())] for k in kinds],
            "l" + "r" * len(results),
        )
    )
    if args.out:
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
