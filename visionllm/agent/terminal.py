"""``visionllm chat IMAGE``: a conversation about one image in the terminal.

Each line read from stdin is one turn; the answer is printed, then the files of the images it drew
(crops, drawings, blurs), saved in the conversation's memory folder (``--memory-dir``, else a new
temporary one). ``:image PATH`` switches to another image, ``:plan`` prints the last plan, ``:quit`` (or
end of input) ends the conversation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from visionllm.agent.chat import PLANNERS, Agent


def add_chat_parser(commands: argparse._SubParsersAction, default_checkpoint: str) -> argparse.ArgumentParser:
    """Register the ``chat`` subcommand on the ``visionllm`` command's subparsers."""
    chat = commands.add_parser("chat", help="a multi-turn chat about an image (reads requests from stdin)")
    chat.add_argument("image", help="the image to talk about")
    chat.add_argument("--checkpoint", default=default_checkpoint, help=f"default: {default_checkpoint}")
    chat.add_argument("--config", help="default: the config saved in the checkpoint")
    chat.add_argument("--planner", choices=PLANNERS, default="rules", help="default: rules")
    chat.add_argument("--url", help="--planner openai: the endpoint, e.g. http://127.0.0.1:8000/v1")
    chat.add_argument("--model", default="default", help="--planner openai: the model name")
    chat.add_argument(
        "--unconstrained",
        action="store_true",
        help="--planner smollm2: plain greedy decoding, no JSON schema",
    )
    chat.add_argument("--memory-dir", help="where the conversation's images go (default: a temporary folder)")
    chat.add_argument("--score-thr", type=float, default=0.3, help="leave out objects scoring less")
    chat.add_argument("--device", default="cpu")
    return chat


def planner_options(args: argparse.Namespace) -> dict:
    """The chosen planner's options from the command line."""
    if args.planner == "openai":
        return {"url": args.url, "model": args.model}
    if args.planner == "smollm2":
        return {"constrained": not args.unconstrained}
    return {}


def chat_command(args: argparse.Namespace, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """``visionllm chat``: load the model, then answer each line of ``stdin`` until it ends."""
    from visionllm.apis import Predictor

    if not Path(args.image).is_file():
        raise FileNotFoundError(f"no image at {args.image}")
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(
            f"no checkpoint at {args.checkpoint}: `make demo` trains one, or pass --checkpoint"
        )
    predictor = Predictor.from_checkpoint(args.config, args.checkpoint, device=args.device)
    agent = Agent(
        predictor,
        args.planner,
        planner_options=planner_options(args),
        memory_dir=args.memory_dir,
        score_thr=args.score_thr,
    )
    return converse(agent, args.image, stdin, stdout)


def converse(agent: Agent, image: str, stdin: TextIO, stdout: TextIO) -> int:
    """The read-answer loop over ``stdin``'s lines (see the module docstring)."""
    print(f"Chatting about {image} (planner: {type(agent.planner).__name__}); :quit to end.", file=stdout)
    current: str | None = image
    plan: dict = {}
    for line in stdin:
        text = line.strip()
        if not text:
            continue
        if text in (":quit", ":q", ":exit"):
            break
        if text == ":plan":
            print(json.dumps(plan), file=stdout)
            continue
        if text.startswith(":image "):
            current = text.split(None, 1)[1]
            print(f"Now chatting about {current}.", file=stdout)
            continue
        try:
            reply = agent.chat(current, text)
        except (OSError, ValueError) as error:  # an unreadable image: say so, keep chatting
            print(f"error: {error}", file=stdout)
            current = None if "input" in agent.memory.current else current
            continue
        current, plan = None, reply.plan
        print(f"> {reply.text}", file=stdout)
        for path in reply.image_paths:
            print(f"  saved {path}", file=stdout)
        stdout.flush()
    return 0
