"""The Gradio demo. The **Predict** tab: upload an image, click on it (a point, or a box from two
clicks), ask, and see the objects drawn over it, as JSON, and in a history that keeps every turn's
drawing. The **Chat** tab: upload an image and chat with the agent (``visionllm.agent``), one request
after another, each answer with its images and its plan's steps; the conversation (what "it" and "them"
refer to) lasts as long as the browser session.

Clicks land in image pixels (Gradio reports them in the upload's own size): the input image is
redrawn with the markers at its original size, and the upload itself is kept in the session's state.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from visionllm.agent import Reply, TraceEntry
from visionllm.apis import draw_predictions
from visionllm.serve.service import (
    ChatParams,
    ModelService,
    PredictParams,
    RequestError,
    decode_image,
    draw_markers,
)

#: The task presets (those the model was trained for are offered); "auto": the instruction's task.
TASK_PRESETS = ("detect", "segment", "ground")
#: Turns kept in a session's history (each holds one drawing).
MAX_TURNS = 20
#: Images shown per chat answer (``crop each`` may answer many).
MAX_CHAT_IMAGES = 8


def empty_markers() -> dict[str, Any]:
    """A session's markers: points, regions, and a box's first corner while it waits for the second."""
    return {"points": [], "regions": [], "corner": None}


def add_click(markers: dict[str, Any], mode: str, x: float, y: float) -> dict[str, Any]:
    """The markers after a click at (x, y): a point, a box's first corner, or the box it completes."""
    markers = {**markers, "points": list(markers["points"]), "regions": list(markers["regions"])}
    if mode == "point":
        markers["points"].append((x, y))
    elif markers["corner"] is None:
        markers["corner"] = (x, y)
    else:
        (x0, y0), markers["corner"] = markers["corner"], None
        if x0 != x and y0 != y:
            markers["regions"].append((min(x0, x), min(y0, y), max(x0, x), max(y0, y)))
    return markers


def list_markers(markers: dict[str, Any]) -> str:
    """``P1 (12, 30); R1 (5, 5, 40, 60)``: the markers as their labels in the drawings."""
    parts = [f"P{k} ({x:.0f}, {y:.0f})" for k, (x, y) in enumerate(markers["points"], 1)]
    parts += [f"R{k} ({', '.join(f'{v:.0f}' for v in box)})" for k, box in enumerate(markers["regions"], 1)]
    return "; ".join(parts)


def describe_markers(markers: dict[str, Any]) -> str:
    """The line under the image: the markers, and whether a box waits for its second corner."""
    text = f"Markers: {list_markers(markers) or 'none'}."
    return text + (" Box: click its second corner." if markers["corner"] is not None else "")


def format_step(entry: TraceEntry) -> str:
    """A line of a plan's trace, e.g. ``s1 `detect(image=$input, classes=['star'])` → objects/1a2b3c4d
    (0.12 s)``."""
    args = ", ".join(
        f"{name}={value}" if isinstance(value, str) and value.startswith("$") else f"{name}={value!r}"
        for name, value in entry.args.items()
    )
    outcome = f"failed: {entry.error}" if entry.error else f"→ {entry.artifact}"
    return f"{entry.step} `{entry.tool}({args})` {outcome} ({entry.seconds:.2f} s)"


def chat_messages(text: str, reply: Reply) -> list[dict[str, Any]]:
    """A chat turn as Chatbot messages: the request; the plan's steps, collapsed (a declined request
    has none); the answer's text; and its images (at most :data:`MAX_CHAT_IMAGES`)."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": text}]
    if reply.trace:
        tools = " → ".join(entry.tool for entry in reply.trace)
        retried = ", after one repair" if reply.attempts > 1 else ""
        messages.append(
            {
                "role": "assistant",
                "content": "\n".join(f"- {format_step(entry)}" for entry in reply.trace),
                "metadata": {
                    "title": f"Plan: {tools}{retried}",
                    "status": "done",
                    "duration": sum(entry.seconds for entry in reply.trace),
                },
            }
        )
    messages.append({"role": "assistant", "content": reply.text})
    shown = reply.image_paths[:MAX_CHAT_IMAGES]
    messages += [{"role": "assistant", "content": {"path": path}} for path in shown]
    if len(reply.image_paths) > len(shown):
        messages.append(
            {"role": "assistant", "content": f"(and {len(reply.image_paths) - len(shown)} more images)"}
        )
    return messages


def build_demo(service: ModelService) -> gr.Blocks:
    """The Blocks app over ``service`` (its queue lets one request reach the model at a time)."""
    info = service.info()
    presets = [task for task in TASK_PRESETS if task in info["tasks"]]
    drawings = Path(tempfile.mkdtemp(prefix="visionllm-serve-"))  # the history's images
    atexit.register(shutil.rmtree, drawings, ignore_errors=True)

    def on_upload(path: str | None):
        """Keep the upload (its RGB pixels and file name) in the session, or say why it is refused."""
        if path is None:
            return None, empty_markers(), describe_markers(empty_markers()), ""
        try:
            pixels = decode_image(Path(path).read_bytes(), service.limits)
        except RequestError as error:
            return None, empty_markers(), describe_markers(empty_markers()), f"**Error:** {error}"
        height, width = pixels.shape[:2]
        upload = {"pixels": pixels, "name": Path(path).name}
        return upload, empty_markers(), describe_markers(empty_markers()), f"Image: {width}x{height} pixels."

    def on_click(upload: dict | None, markers: dict, mode: str, event: gr.SelectData):
        if upload is None:
            return gr.skip(), markers, describe_markers(markers), "**Error:** upload an image first."
        x, y = (float(v) for v in event.index)
        markers = add_click(markers, mode, x, y)
        shown = draw_markers(Image.fromarray(upload["pixels"]), markers["regions"], markers["points"])
        if markers["corner"] is not None:
            shown = draw_markers(shown, [], [markers["corner"]])
        return shown, markers, describe_markers(markers), ""

    def on_clear(upload: dict | None):
        shown = gr.skip() if upload is None else Image.fromarray(upload["pixels"])
        return shown, empty_markers(), describe_markers(empty_markers())

    def on_submit(
        upload: dict | None,
        markers: dict,
        instruction: str,
        task: str,
        score_thr: float,
        decode: str,
        history: list[dict],
    ):
        try:
            if upload is None:
                raise RequestError("upload an image first")
            params = PredictParams.parse(
                dict(
                    instruction=instruction.strip() or None,
                    task=None if task == "auto" else task,
                    regions=markers["regions"],
                    points=markers["points"],
                    score_thr=score_thr,
                    decode=decode,
                )
            )
            pixels = upload["pixels"]
            prediction, response = service.answer(pixels, params, upload["name"])
        except RequestError as error:
            return gr.skip(), gr.skip(), history, history, f"**Error:** {error}"
        drawn = draw_predictions(pixels, prediction)
        drawn = draw_markers(drawn, params.regions, params.points, scale=drawn.width / pixels.shape[1])
        path = drawings / f"turn-{len(list(drawings.iterdir())):06d}.png"
        drawn.save(path)
        counts = Counter(obj["category_name"] for obj in response["objects"])
        found = ", ".join(f"{n} {name}" for name, n in counts.most_common()) or "nothing"
        answer = f"{response['task']} ({', '.join(response['classes'])}): {found}"
        if "text" in response:
            answer = f"{response['task']}: {response['text']}"
        asked = instruction.strip() or f"({task})"
        if params.regions or params.points:
            asked += f" [{list_markers(markers)}]"
        history = [
            *history,
            {"role": "user", "content": asked},
            {"role": "assistant", "content": answer},
            {"role": "assistant", "content": {"path": str(path)}},
        ][-3 * MAX_TURNS :]
        return drawn, response, history, history, ""

    def on_chat_upload(path: str | None):
        """Keep the upload's pixels for the next request (a new image: "it" and "them" start afresh)."""
        if path is None:
            return None, ""
        try:
            pixels = decode_image(Path(path).read_bytes(), service.limits)
        except RequestError as error:
            return None, f"**Error:** {error}"
        height, width = pixels.shape[:2]
        return pixels, f"Image: {width}x{height} pixels. Ask about it."

    def on_chat(pixels, conversation: str | None, text: str, score_thr: float, history: list[dict]):
        note = ""
        try:
            if not text.strip():
                raise RequestError("type a request first")
            params = ChatParams.parse(dict(text=text, conversation=conversation, score_thr=score_thr))
            try:
                reply, response = service.chat(pixels, params)
            except RequestError as error:
                if error.status != 404 or pixels is None:
                    raise
                note = "The server had forgotten this conversation: a new one started. "
                reply, response = service.chat(pixels, params.model_copy(update={"conversation": None}))
        except RequestError as error:
            return conversation, gr.skip(), history, history, f"**Error:** {error}"
        history = [*history, *chat_messages(text.strip(), reply)][-4 * MAX_TURNS :]
        status = note + (f"**Could not do it:** {reply.error}" if reply.error else "")
        return response["conversation"], "", history, history, status

    def on_new_chat(conversation: str | None):
        service.end_chat(conversation)
        return None, [], [], ""

    # delete_cache: uploads and drawings in Gradio's cache go after an hour, checked hourly
    with gr.Blocks(title="VisionLLM", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            f"# VisionLLM\nModel `{Path(info['checkpoint']).name}`: tasks {', '.join(info['tasks'])}; "
            f"classes {', '.join(info['classes'])}. The same model answers `POST /v1/predict` and "
            "`POST /v1/chat` (see `/docs`)."
        )
        with gr.Tab("Predict", id="predict"):
            gr.Markdown(
                f'Upload an image, ask ("find all the {info["classes"][0]}s"), press **Ask**. A click on '
                f'the image adds a point; in box mode two clicks add a box: "what is this?" with a box, '
                '"segment what I clicked" with a point, if the model was trained with those tasks.'
            )
            upload = gr.State(None)  # {pixels, name} of the uploaded image
            markers = gr.State(empty_markers())
            history = gr.State([])
            with gr.Row():
                with gr.Column():
                    image = gr.Image(
                        label="Image (click to add a marker)",
                        type="filepath",
                        sources=["upload", "clipboard"],
                        format="png",
                        elem_id="input-image",
                    )
                    with gr.Row():
                        mode = gr.Radio(
                            ["point", "box"], value="point", label="A click adds a", elem_id="mode"
                        )
                        clear = gr.Button("Clear markers", elem_id="clear")
                    marker_list = gr.Markdown(describe_markers(empty_markers()), elem_id="markers")
                    task = gr.Radio(["auto", *presets], value="auto", label="Task", elem_id="task")
                    instruction = gr.Textbox(
                        label="Instruction",
                        placeholder=f"find all the {' and '.join(info['classes'][:2])}",
                        elem_id="instruction",
                    )
                    with gr.Row():
                        score_thr = gr.Slider(
                            0, 1, value=0.3, step=0.05, label="Score threshold", elem_id="thr"
                        )
                        decode = gr.Dropdown(
                            ["parallel", "autoregressive", "tokens"],
                            value=info["decode"],
                            label="Decoder",
                            elem_id="decode",
                        )
                    submit = gr.Button("Ask", variant="primary", elem_id="submit")
                    status = gr.Markdown(elem_id="status")
                with gr.Column():
                    result = gr.Image(label="Result", format="png", interactive=False, elem_id="result")
                    objects = gr.JSON(label="Objects (predictions.json schema)", elem_id="objects")
            chat = gr.Chatbot(label="History", elem_id="history", height=480)

            image.upload(on_upload, [image], [upload, markers, marker_list, status])
            image.clear(lambda: (None, empty_markers(), describe_markers(empty_markers())), None,
                        [upload, markers, marker_list])  # fmt: skip
            image.select(on_click, [upload, markers, mode], [image, markers, marker_list, status])
            clear.click(on_clear, [upload], [image, markers, marker_list])
            inputs = [upload, markers, instruction, task, score_thr, decode, history]
            outputs = [result, objects, history, chat, status]
            submit.click(on_submit, inputs, outputs)
            instruction.submit(on_submit, inputs, outputs)
        with gr.Tab("Chat", id="chat"):
            gr.Markdown(
                "Upload an image and ask, one request after another: "
                f'"find the {info["classes"][0]}s, then crop the largest one", then "how many are there?" '
                'or "describe it". A planner (rules) turns each request into steps over the model\'s tasks '
                "and image tools; the conversation remembers what was found, for as long as this page is "
                "open. Open **Plan** under an answer to see its steps."
            )
            chat_pixels = gr.State(None)  # the image the next request is about
            conversation = gr.State(None, delete_callback=service.end_chat)  # its id in the service
            chat_history = gr.State([])
            with gr.Row():
                with gr.Column(scale=1):
                    chat_image = gr.Image(
                        label="Image",
                        type="filepath",
                        sources=["upload", "clipboard"],
                        format="png",
                        elem_id="chat-image",
                    )
                    chat_thr = gr.Slider(
                        0, 1, value=0.3, step=0.05, label="Score threshold", elem_id="chat-thr"
                    )
                    new_chat = gr.Button("New conversation", elem_id="chat-new")
                with gr.Column(scale=2):
                    chatbot = gr.Chatbot(label="Conversation", elem_id="chat-history", height=560)
                    chat_text = gr.Textbox(
                        label="Request",
                        placeholder=f"find the {info['classes'][0]}s, then crop the largest one",
                        elem_id="chat-text",
                    )
                    send = gr.Button("Send", variant="primary", elem_id="chat-send")
                    chat_status = gr.Markdown(elem_id="chat-status")
        chat_image.upload(on_chat_upload, [chat_image], [chat_pixels, chat_status])
        chat_image.clear(lambda: (None, ""), None, [chat_pixels, chat_status])
        chat_inputs = [chat_pixels, conversation, chat_text, chat_thr, chat_history]
        chat_outputs = [conversation, chat_text, chat_history, chatbot, chat_status]
        send.click(on_chat, chat_inputs, chat_outputs)
        chat_text.submit(on_chat, chat_inputs, chat_outputs)
        new_chat.click(on_new_chat, [conversation], [conversation, chat_history, chatbot, chat_status])
    demo.queue(default_concurrency_limit=1)
    return demo
