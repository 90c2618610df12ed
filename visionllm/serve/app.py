"""The Gradio demo: upload an image, click on it (a point, or a box from two clicks), ask, and see the
objects drawn over it, as JSON, and in a history that keeps every turn's drawing.

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

from visionllm.apis import draw_predictions
from visionllm.serve.service import (
    MARKERS_NOTE,
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
        asked = instruction.strip() or f"({task})"
        if params.regions or params.points:
            asked += f" [{list_markers(markers)}]"
        history = [
            *history,
            {"role": "user", "content": asked},
            {"role": "assistant", "content": answer},
            {"role": "assistant", "content": {"path": str(path)}},
        ][-3 * MAX_TURNS :]
        status = f"**Note:** {MARKERS_NOTE}." if "note" in response else ""
        return drawn, response, history, history, status

    # delete_cache: uploads and drawings in Gradio's cache go after an hour, checked hourly
    with gr.Blocks(title="VisionLLM", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            f"# VisionLLM\nModel `{Path(info['checkpoint']).name}`: tasks {', '.join(info['tasks'])}; "
            f'classes {", ".join(info["classes"])}. Upload an image, ask ("find all the '
            f'{info["classes"][0]}s"), press **Ask**. A click on the image adds a point; in box mode '
            f"two clicks add a box. *{MARKERS_NOTE.capitalize()}.* The same model answers "
            "`POST /v1/predict` (see `/docs`)."
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
                    mode = gr.Radio(["point", "box"], value="point", label="A click adds a", elem_id="mode")
                    clear = gr.Button("Clear markers", elem_id="clear")
                marker_list = gr.Markdown(describe_markers(empty_markers()), elem_id="markers")
                task = gr.Radio(["auto", *presets], value="auto", label="Task", elem_id="task")
                instruction = gr.Textbox(
                    label="Instruction",
                    placeholder=f"find all the {' and '.join(info['classes'][:2])}",
                    elem_id="instruction",
                )
                with gr.Row():
                    score_thr = gr.Slider(0, 1, value=0.3, step=0.05, label="Score threshold", elem_id="thr")
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
    demo.queue(default_concurrency_limit=1)
    return demo
