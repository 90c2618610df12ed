"""``visionllm serve``: the HTTP API and the Gradio demo, driven over a real loopback socket against a
server process with the tiny random-weight model, the demo in headless Debian chromium via playwright.

The browser test saves its screenshot in its tmp folder; with ``VISIONLLM_SCREENSHOTS=1`` it also writes
``docs/images/serve_demo.png`` (the README's picture).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, TINY_CLASSES
from visionllm.agent import Reply, TraceEntry
from visionllm.cli import main
from visionllm.serve.app import MAX_CHAT_IMAGES, add_click, chat_messages, empty_markers, list_markers
from visionllm.serve.service import ChatParams, Limits, ModelService, RequestError

#: The server's limits in these tests: small, so that refusing an oversized upload is quick.
MAX_UPLOAD_MB, MAX_PIXELS = 1, 500_000
COCO_KEYS = {"file_name", "image_id", "category_name", "bbox", "score"}


def load_bench():
    """bench/serve_load.py (a script, not a package): its server start, upload picture and load loop."""
    spec = importlib.util.spec_from_file_location("serve_load", REPO / "bench/serve_load.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


SERVE_LOAD = load_bench()


def shapes_png(width: int = 160, height: int = 120) -> bytes:
    return SERVE_LOAD.shapes_png(width, height)


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``visionllm serve`` in a subprocess on a free loopback port; its base URL once /healthz answers."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    options = ["--max-upload-mb", str(MAX_UPLOAD_MB), "--max-pixels", str(MAX_PIXELS)]
    with log.open("w") as out:
        try:
            process, url = SERVE_LOAD.start_server(
                tiny_checkpoint, "configs/visionllm_tiny_synthetic.py", options, log=out
            )
        except RuntimeError as error:
            pytest.fail(f"{error}:\n{log.read_text()}")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_clicks_make_points_and_boxes():
    markers = add_click(empty_markers(), "point", 5, 6)
    markers = add_click(markers, "box", 40, 50)
    assert markers["corner"] == (40, 50) and markers["regions"] == []
    markers = add_click(markers, "box", 10, 60)  # any two opposite corners
    assert markers["regions"] == [(10, 50, 40, 60)] and markers["corner"] is None
    assert list_markers(markers) == "P1 (5, 6); R1 (10, 50, 40, 60)"


def test_serve_without_checkpoint_names_make_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no work_dirs/demo here
    assert main(["serve"]) == 2
    assert "make demo" in capsys.readouterr().err


def test_api_predicts_in_the_predictions_json_schema(server: str):
    health = httpx.get(f"{server}/healthz").json()
    assert health["status"] == "ok" and health["classes"] == TINY_CLASSES

    reply = httpx.post(
        f"{server}/v1/predict",
        files={"image": ("shapes.png", shapes_png(), "image/png")},
        data={"instruction": "find all the circles and squares", "score_thr": "0"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["task"], body["classes"]) == ("detect", ["circle", "square"])
    assert (body["width"], body["height"], body["points"]) == (160, 120, [])
    assert "text" not in body  # objects, not words
    clicked = httpx.post(  # a click is a <point> input: detection takes none
        f"{server}/v1/predict",
        files={"image": ("shapes.png", shapes_png(), "image/png")},
        data={"instruction": "find all the circles", "points": "[[30, 40]]"},
        timeout=60,
    )
    assert clicked.status_code == 400 and "with 0 region(s) and 1 point(s)" in clicked.json()["error"]
    assert body["objects"], "score_thr 0 keeps every decoded object"
    for obj in body["objects"]:
        assert set(obj) == COCO_KEYS and obj["file_name"] == "shapes.png" and obj["image_id"] == 0
        assert obj["category_name"] in body["classes"] and len(obj["bbox"]) == 4

    # JSON with a base64 image; segmentation adds the polygon and its RLE, as predictions.json does
    image = base64.b64encode(shapes_png()).decode()
    reply = httpx.post(
        f"{server}/v1/predict",
        json={"image": image, "instruction": "segment every circle", "score_thr": 0, "decode": "parallel"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    objects = reply.json()["objects"]
    assert objects and all(set(obj) == COCO_KEYS | {"polygon", "segmentation"} for obj in objects)

    schema = httpx.get(f"{server}/openapi.json").json()
    assert set(schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]) == {
        "multipart/form-data",
        "application/json",
    }


def test_api_refuses_bad_requests_with_a_message(server: str):
    def post(status: int, data: dict | None = None, image: bytes | None = None, **kwargs) -> str:
        files = None if image is None else {"image": ("upload", image, "application/octet-stream")}
        reply = httpx.post(f"{server}/v1/predict", data=data, files=files, timeout=60, **kwargs)
        assert reply.status_code == status, reply.text
        return reply.json()["error"]

    find = {"instruction": "find all the circles"}
    assert "not an image" in post(400, find, b"GIF89a, or so it says")
    assert "cannot tell which task" in post(400, {"instruction": "hello there"}, shapes_png())
    assert "region 1" in post(400, {**find, "regions": "[[50, 50, 10, 10]]"}, shapes_png())
    assert "point 1 (500, 5) is not inside" in post(400, {**find, "points": "[[500, 5]]"}, shapes_png())
    assert "score_thr" in post(400, {**find, "score_thr": "2"}, shapes_png())
    reply = httpx.post(f"{server}/v1/predict", json=find, timeout=60)
    assert reply.status_code == 400 and '"image"' in reply.json()["error"]
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")  # ~1.4 MiB of incompressible pixels
    assert "MiB" in post(413, find, buffer.getvalue())
    assert "megapixels" in post(413, find, shapes_png(1000, 600))
    assert "content type" in post(415, content=b"{}", headers={"content-type": "text/plain"})
    assert httpx.get(f"{server}/healthz").status_code == 200  # still up


def png_size(encoded: str) -> tuple[int, int]:
    """The size of a base64 PNG from the chat API."""
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert image.format == "PNG"
    return image.size


def test_api_chat_remembers_what_it_found_across_turns(server: str):
    """A conversation over POST /v1/chat: find, then "how many are there?" and "crop the largest one",
    which refer to the first turn's objects through the conversation's memory."""
    reply = httpx.post(
        f"{server}/v1/chat",
        files={"image": ("shapes.png", shapes_png(), "image/png")},
        data={"text": "find the circles and squares", "score_thr": "0"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    first = reply.json()
    conversation = first["conversation"]
    assert re.fullmatch("[0-9a-f]{32}", conversation) and first["error"] is None
    assert [step["tool"] for step in first["steps"]] == ["detect", "draw"]
    assert first["steps"][0]["args"] == {"image": "$input", "classes": ["circle", "square"]}
    assert first["steps"][0]["artifact"].startswith("objects/")
    boxes = [tuple(map(int, box)) for box in re.findall(r"\[(\d+), (\d+), (\d+), (\d+)\]", first["text"])]
    found = int(first["text"].split(" found:")[0])
    assert found == len(boxes) > 0, first["text"]  # score_thr 0 keeps every decoded object
    [drawing] = first["images"]
    width, height = png_size(drawing)
    assert width * 120 == height * 160  # drawn over the 160x120 upload

    def turn(text: str) -> dict:
        reply = httpx.post(
            f"{server}/v1/chat", json={"conversation": conversation, "text": text, "score_thr": 0}, timeout=60
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["conversation"] == conversation and reply.json()["error"] is None
        return reply.json()

    second = turn("how many are there?")  # "there": the objects the first turn found
    assert second["text"] == str(found) and second["images"] == []
    assert [(s["tool"], s["args"]) for s in second["steps"]] == [("count", {"objects": "$last_objects"})]

    third = turn("crop the largest one")
    assert [s["tool"] for s in third["steps"]] == ["select", "crop"]
    assert third["steps"][0]["args"] == {"objects": "$last_objects", "by": "largest"}
    [crop] = third["images"]
    crop_w, crop_h = png_size(crop)
    largest = max((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in boxes)
    assert any(  # the largest box's size (the text rounds boxes to whole pixels)
        abs(crop_w - (x2 - x1)) <= 2
        and abs(crop_h - (y2 - y1)) <= 2
        and (x2 - x1) * (y2 - y1) >= 0.9 * largest
        for x1, y1, x2, y2 in boxes
    ), (crop_w, crop_h, boxes)

    declined = turn("sing a song")  # no tool serves it: declined, not guessed
    assert declined["steps"] == [] and "cannot" in declined["text"] and "decline" in declined["plan"]


def test_api_chat_refuses_bad_requests_with_a_message(server: str):
    def post(status: int, **kwargs) -> str:
        reply = httpx.post(f"{server}/v1/chat", timeout=60, **kwargs)
        assert reply.status_code == status, reply.text
        return reply.json()["error"]

    png = {"image": ("shapes.png", shapes_png(), "image/png")}
    assert "no image" in post(400, json={"text": "find the circles"})
    assert "no image" in post(400, files={"text": (None, "find the circles")})  # multipart, text only
    assert "not an image" in post(
        400, data={"text": "find"}, files={"image": ("x.png", b"GIF89a", "image/png")}
    )
    assert "text" in post(400, data={"text": "   "}, files=png)
    assert "text" in post(400, json={"image": base64.b64encode(shapes_png()).decode()})
    assert '"image"' in post(400, json={"text": "find the circles", "image": 5})
    assert "conversation" in post(400, json={"text": "hi", "conversation": "../../etc"})
    assert "no conversation" in post(404, json={"text": "how many?", "conversation": "0" * 32})
    assert "megapixels" in post(
        413, data={"text": "find"}, files={"image": ("big.png", shapes_png(1000, 600))}
    )
    schema = httpx.get(f"{server}/openapi.json").json()["paths"]["/v1/chat"]["post"]
    assert set(schema["requestBody"]["content"]) == {"multipart/form-data", "application/json"}


def test_service_forgets_the_least_recent_chat_and_ended_ones():
    """The service keeps ``max_conversations`` chats (a turn makes one the most recent) and forgets an
    ended one with its images; declined requests need no model, so a stub predictor serves."""
    stub = SimpleNamespace(model=SimpleNamespace(class_names=TINY_CLASSES))
    service = ModelService(stub, "stub", Limits(max_conversations=2))
    pixels = np.zeros((8, 8, 3), np.uint8)

    def turn(conversation: str | None) -> str:
        params = ChatParams.parse({"text": "sing a song", "conversation": conversation})
        reply, response = service.chat(pixels if conversation is None else None, params)
        assert "cannot" in reply.text and response["steps"] == []
        return response["conversation"]

    first, second = turn(None), turn(None)
    turn(first)  # first is now the most recent: a third chat evicts second
    third = turn(None)
    with pytest.raises(RequestError, match="no conversation") as error:
        turn(second)
    assert error.value.status == 404
    folder = service._chats[third].memory.folder
    assert folder.is_dir()  # the input image is kept there
    service.end_chat(third)
    turn(first)  # runs after end_chat in the model's thread
    assert not folder.exists() and third not in service._chats
    with pytest.raises(RequestError, match="no image"):
        service.chat(None, ChatParams.parse({"text": "find the circles"}))


def test_chat_messages_collapse_the_plan_under_the_answer(tmp_path: Path):
    trace = [
        TraceEntry("s1", "detect", {"image": "$input", "classes": ["star"]}, "objects/1a2b3c4d", 0.25),
        TraceEntry("s2", "crop_each", {"image": "$input", "objects": "$s1"}, "image/0f0f0f0f.png", 0.5),
    ]
    paths = [str(tmp_path / f"{k}.png") for k in range(MAX_CHAT_IMAGES + 2)]
    messages = chat_messages("crop each star", Reply("Here is the result.", paths[-1], paths, trace=trace))
    request, plan, answer, *images, more = messages
    assert request == {"role": "user", "content": "crop each star"}
    assert plan["metadata"] == {"title": "Plan: detect → crop_each", "status": "done", "duration": 0.75}
    assert plan["content"].splitlines() == [
        "- s1 `detect(image=$input, classes=['star'])` → objects/1a2b3c4d (0.25 s)",
        "- s2 `crop_each(image=$input, objects=$s1)` → image/0f0f0f0f.png (0.50 s)",
    ]
    assert answer["content"] == "Here is the result."
    assert [m["content"] for m in images] == [{"path": p} for p in paths[:MAX_CHAT_IMAGES]]
    assert more["content"] == "(and 2 more images)"
    declined = chat_messages("sing", Reply("I cannot do 'sing'."))
    assert [m["content"] for m in declined] == ["sing", "I cannot do 'sing'."]  # no plan, no images


def test_load_bench_counts_requests_and_errors(server: str):
    """bench/serve_load.py's measuring loop, shrunk: every request answered, the numbers consistent."""
    bench = SERVE_LOAD
    fields = {"instruction": bench.INSTRUCTION, "score_thr": "0.3"}
    row = bench.run_level(server, bench.shapes_png(), requests=6, concurrency=3, fields=fields)
    assert (row["requests"], row["errors"]) == (6, 0)
    assert 0 < row["p50_ms"] <= row["p95_ms"] and row["throughput"] > 0
    assert bench.rss_mib(os.getpid()) > 10


def find_chromium() -> str | None:
    """Debian's chromium (``make test`` installs it as root), or $CHROMIUM."""
    candidates = [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    return next((shutil.which(c) for c in candidates if c and shutil.which(c)), None)


@pytest.mark.slow
def test_browser_click_ask_and_see_the_overlay(server: str, tmp_path: Path):
    """A person's session: upload, click a point, type, ask; the drawn result and its objects appear.
    Then the Chat tab: an upload, a request and a follow-up about what it found."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium found (apt-get install chromium, or set $CHROMIUM)")
    upload = tmp_path / "shapes.png"
    upload.write_bytes(shapes_png())
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(server)
            page.locator("#input-image input[type=file]").set_input_files(upload)
            expect(page.locator("#status")).to_contain_text("160x120", timeout=30_000)
            shown = page.locator("#input-image img").first
            box = shown.bounding_box()
            shown.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.35})
            expect(page.locator("#markers")).to_contain_text("P1", timeout=30_000)
            page.get_by_label("box", exact=True).check()  # box mode: two clicks are a box's opposite corners
            shown.click(position={"x": box["width"] * 0.6, "y": box["height"] * 0.3})
            expect(page.locator("#markers")).to_contain_text("second corner", timeout=30_000)
            shown.click(position={"x": box["width"] * 0.9, "y": box["height"] * 0.9})
            expect(page.locator("#markers")).to_contain_text("R1", timeout=30_000)
            page.locator("#instruction textarea").fill("find all the circles and squares")
            page.locator("#thr input[type=number]").fill("0")
            page.locator("#submit").click()  # a box and a point for a detection request: it takes none
            expect(page.locator("#status")).to_contain_text("with 1 region(s) and 1 point(s)", timeout=60_000)
            page.locator("#clear").click()
            expect(page.locator("#markers")).not_to_contain_text("R1", timeout=30_000)
            page.locator("#submit").click()
            result = page.locator("#result img").first
            expect(result).to_be_visible(timeout=60_000)
            expect(page.locator("#objects")).to_contain_text("category_name", timeout=30_000)
            expect(page.locator("#objects")).to_contain_text("shapes.png")
            drawn = Image.open(io.BytesIO(page.request.get(result.get_attribute("src")).body()))
            assert drawn.size == (512, 384)  # drawn over the upload, scaled up for its labels
            page.screenshot(path=tmp_path / "serve_demo.png", full_page=True)
            if os.environ.get("VISIONLLM_SCREENSHOTS") == "1":
                shutil.copy(tmp_path / "serve_demo.png", REPO / "docs/images/serve_demo.png")

            page.locator("#instruction textarea").fill("hello there")  # a bad instruction: a message
            page.locator("#submit").click()
            expect(page.locator("#status")).to_contain_text("cannot tell which task", timeout=30_000)

            # the Chat tab: two turns, the second about what the first found; each plan collapsed
            page.get_by_role("tab", name="Chat").click()
            page.locator("#chat-text textarea").fill("crop the largest one")  # before any image
            page.locator("#chat-send").click()
            expect(page.locator("#chat-status")).to_contain_text("no image", timeout=30_000)
            page.locator("#chat-image input[type=file]").set_input_files(upload)
            expect(page.locator("#chat-status")).to_contain_text("160x120", timeout=30_000)
            page.locator("#chat-thr input[type=number]").fill("0")
            page.locator("#chat-text textarea").fill("find the circles and squares")
            page.locator("#chat-send").click()
            history = page.locator("#chat-history")
            expect(history).to_contain_text("Plan: detect → draw", timeout=60_000)
            expect(history).to_contain_text("found:")
            expect(history.locator("img")).to_have_count(1)  # the drawing
            page.locator("#chat-text textarea").fill("crop the largest one")
            page.locator("#chat-text textarea").press("Enter")
            expect(history).to_contain_text("Plan: select → crop", timeout=60_000)
            expect(history.locator("img")).to_have_count(2)  # and the crop
            step = history.get_by_text("by='largest'")
            expect(step).to_be_hidden()  # the plan's steps are collapsed under their title
            history.get_by_text("Plan: select → crop").click()
            expect(step).to_be_visible(timeout=10_000)
            page.screenshot(path=tmp_path / "serve_chat.png", full_page=True)
        finally:
            browser.close()
