"""What the web demo and the HTTP API share: one :class:`Predictor` in a thread of its own, the upload limits,
the request's parameters and their checks, the drawing of the user's markers, and the agent's chats.

Both front ends call :meth:`ModelService.answer` (and :meth:`ModelService.chat`), so an upload, an
instruction or a marker that one of them refuses the other refuses with the same message (a
:class:`RequestError` carrying its HTTP status).
"""

from __future__ import annotations

import atexit
import base64
import io
import shutil
import tempfile
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from visionllm.agent import Agent, Reply, default_registry, make_planner
from visionllm.apis import Prediction, Predictor, load_rgb
from visionllm.evaluation.results import prediction_to_coco
from visionllm.tasks.base import check_inputs

#: The colour user regions and points are drawn in (they are also the region / point tasks' inputs).
MARKER_COLOUR = (255, 0, 255)


class RequestError(ValueError):
    """A request the server refuses (bad image, instruction, marker or field), with its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may hold: the upload's bytes, the image's pixels, the markers' count; and how
    many chats the server remembers (the least recently used one is forgotten first)."""

    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    max_markers: int = 16
    max_conversations: int = 100


class RequestParams(BaseModel):
    """A request's fields other than the image, checked by :meth:`parse`."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def parse(cls, fields: dict[str, Any]) -> RequestParams:
        """Validated parameters, or a 400 :class:`RequestError` naming each bad field."""
        try:
            return cls.model_validate(fields)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()
            )
            raise RequestError(f"invalid request: {problems}") from None


class PredictParams(RequestParams):
    """A prediction request's parameters, the image aside (the API's JSON body adds it as base64)."""

    instruction: str | None = Field(
        None, max_length=2000, description='free-form, e.g. "find all the circles and squares"'
    )
    task: str | None = Field(
        None, max_length=64, description="overrides the task the instruction asks for (a task name)"
    )
    classes: list[str] | None = Field(None, description="overrides the instruction's class names")
    phrase: str | None = Field(None, max_length=500, description="a grounding request's referring phrase")
    regions: list[tuple[float, float, float, float]] = Field(
        default_factory=list, description="boxes [x1, y1, x2, y2] in image pixels: the <region> inputs"
    )
    points: list[tuple[float, float]] = Field(
        default_factory=list, description="points [x, y] in image pixels: the <point> inputs"
    )
    score_thr: float = Field(0.3, ge=0.0, le=1.0, description="leave out objects scoring less")
    decode: Literal["parallel", "autoregressive", "tokens"] | None = Field(
        None, description="the decoder (default: the model's)"
    )


class ChatParams(RequestParams):
    """A chat turn's parameters, the image aside (a new conversation needs one; a later turn may send a
    new image, or none to go on with the conversation's)."""

    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)] = Field(
        description='the request, e.g. "find the circles, then crop the largest one"'
    )
    conversation: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{32}$",
        description="the id an earlier answer gave (its memory: what 'it' and 'them' refer to); "
        "none: a new conversation",
    )
    score_thr: float = Field(
        0.3, ge=0.0, le=1.0, description="the model tools leave out objects scoring less"
    )


def decode_image(data: bytes, limits: Limits) -> np.ndarray:
    """An uploaded file's bytes -> (H, W, 3) uint8 RGB, upright per its EXIF orientation. Refuses (413)
    a file or an image over the limits, checking the pixel count from the header before decoding, and
    (400) anything that is not a readable image."""
    if len(data) > limits.max_upload_bytes:
        raise RequestError(
            f"the upload is {len(data) / 2**20:.1f} MiB; the limit is "
            f"{limits.max_upload_bytes / 2**20:g} MiB (visionllm serve --max-upload-mb)",
            413,
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > limits.max_pixels:
                raise RequestError(
                    f"the image is {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is "
                    f"{limits.max_pixels / 1e6:g} (visionllm serve --max-pixels): scale it down",
                    413,
                )
            return load_rgb(image)
    except RequestError:
        raise
    except UnidentifiedImageError:
        raise RequestError("the upload is not an image (send a PNG, JPEG, WebP, BMP or GIF file)") from None
    except Image.DecompressionBombError as error:
        raise RequestError(f"the image is too large: {error}", 413) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise RequestError(f"the image cannot be decoded (truncated or corrupt?): {error}") from None


def check_marker_count(params: PredictParams, limits: Limits) -> None:
    """Refuse (400) more regions and points than the limits allow (``check_inputs`` checks each one)."""
    if len(params.regions) + len(params.points) > limits.max_markers:
        raise RequestError(f"at most {limits.max_markers} regions and points together")


def draw_markers(
    image: Image.Image,
    regions: list[tuple[float, float, float, float]],
    points: list[tuple[float, float]],
    scale: float = 1.0,
) -> Image.Image:
    """``image`` with the user's regions (``R1``, ...) and points (``P1``, ...) drawn in magenta;
    ``scale`` maps image pixels to ``image``'s (a drawing made larger than the upload)."""
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    size = max(3, round(max(image.size) / 80))
    font = ImageFont.load_default(size=max(12, 3 * size))
    for k, box in enumerate(regions, 1):
        x1, y1, x2, y2 = (v * scale for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=MARKER_COLOUR, width=max(2, size // 2))
        draw.text((x1 + size, y1 + size), f"R{k}", fill=MARKER_COLOUR, font=font)
    for k, (x, y) in enumerate(points, 1):
        x, y = x * scale, y * scale
        draw.ellipse((x - size, y - size, x + size, y + size), fill=MARKER_COLOUR, outline=(255, 255, 255))
        draw.text((x + size + 2, y - 2 * size), f"P{k}", fill=MARKER_COLOUR, font=font)
    return image


class ModelService:
    """One model in memory, answering one request at a time, with the limits every upload is checked
    against. The model runs in one thread of its own, where the UI's and the API's requests queue: that
    serializes them, and keeps the model's working memory in one thread's allocator arenas (a thread per
    concurrent request grew the server's memory with the concurrency).

    Chats (:meth:`chat`) run there too: each conversation is an :class:`~visionllm.agent.Agent` over the
    same predictor, with one planner (``planner``, ``planner_options``: see
    :func:`~visionllm.agent.make_planner`) shared by all, and its memory in a folder of its own."""

    def __init__(
        self,
        predictor: Predictor,
        name: str,
        limits: Limits | None = None,
        *,
        planner: str = "rules",
        planner_options: dict | None = None,
    ) -> None:
        self.predictor = predictor
        self.name = name
        self.limits = limits or Limits()
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visionllm-model")
        self._registry = default_registry()
        self._planner = make_planner(
            planner, self._registry, list(predictor.model.class_names), **(planner_options or {})
        )
        self._chats: OrderedDict[str, Agent] = OrderedDict()  # least recently used first
        self._chat_root = Path(tempfile.mkdtemp(prefix="visionllm-chats-"))
        atexit.register(shutil.rmtree, self._chat_root, ignore_errors=True)

    @property
    def model(self):
        return self.predictor.model

    def info(self) -> dict[str, Any]:
        """What ``/healthz`` and the UI's header tell about the model."""
        return {
            "checkpoint": self.name,
            "classes": list(self.model.class_names),
            "tasks": sorted(self.model.tasks),
            "decode": self.model.decode_mode,
        }

    def answer(
        self, pixels: np.ndarray, params: PredictParams, file_name: str | None = None
    ) -> tuple[Prediction, dict[str, Any]]:
        """Predict on an RGB image; the :class:`Prediction` and the response: the request's task and
        classes, the markers, and ``objects`` in the ``predictions.json`` schema (``image_id`` 0)."""
        height, width = pixels.shape[:2]
        check_marker_count(params, self.limits)
        try:
            check_inputs(params.regions, params.points, (width, height))
            request = self.predictor.resolve(
                params.instruction or None,
                task=params.task,
                classes=params.classes,
                phrase=params.phrase,
                regions=params.regions,
                points=params.points,
            )
        except ValueError as error:
            raise RequestError(str(error)) from None
        [prediction] = self._model_thread.submit(
            self.predictor.predict, pixels, request, decode=params.decode, score_thr=params.score_thr
        ).result()
        response = {
            "task": request.task,
            "classes": request.classes,
            "decode": prediction.decode_mode,
            "score_thr": params.score_thr,
            "width": width,
            "height": height,
            "regions": [list(box) for box in params.regions],
            "points": [list(point) for point in params.points],
            "objects": [
                {"file_name": file_name, **entry} for entry in prediction_to_coco(prediction, image_id=0)
            ],
        }
        if prediction.text is not None:  # an answer in words
            response["text"] = prediction.text
        return prediction, response

    def chat(self, pixels: np.ndarray | None, params: ChatParams) -> tuple[Reply, dict[str, Any]]:
        """One turn of a conversation (a new one when ``params.conversation`` is None), in the model's
        thread; the agent's :class:`~visionllm.agent.Reply` and the response: the conversation's id, the
        answer's text, its images as base64 PNG, the plan and its steps. Refuses (400) a new
        conversation without an image and (404) a conversation the server does not remember."""
        return self._model_thread.submit(self._chat, pixels, params).result()

    def end_chat(self, conversation: str | None) -> None:
        """Forget a conversation and its images (nothing when it is unknown or None)."""
        if conversation is not None:
            self._model_thread.submit(self._forget, conversation)

    def _forget(self, conversation: str) -> None:
        agent = self._chats.pop(conversation, None)
        if agent is not None:
            shutil.rmtree(agent.memory.folder, ignore_errors=True)

    def _chat(self, pixels: np.ndarray | None, params: ChatParams) -> tuple[Reply, dict[str, Any]]:
        conversation = params.conversation
        if conversation is None:
            if pixels is None:
                raise RequestError("no image: a new conversation starts with an image to talk about")
            conversation = uuid.uuid4().hex
            self._chats[conversation] = Agent(
                self.predictor,
                self._planner,
                registry=self._registry,
                memory_dir=self._chat_root / conversation,
            )
            while len(self._chats) > self.limits.max_conversations:
                self._forget(next(iter(self._chats)))
        elif conversation not in self._chats:
            raise RequestError(
                f"no conversation {conversation}: it ended, or the server forgot it (it keeps the last "
                f"{self.limits.max_conversations}); start a new one with an image",
                404,
            )
        self._chats.move_to_end(conversation)
        agent = self._chats[conversation]
        agent.executor.context.score_thr = params.score_thr
        reply = agent.chat(pixels, params.text)
        response = {
            "conversation": conversation,
            "text": reply.text,
            "images": [base64.b64encode(Path(path).read_bytes()).decode() for path in reply.image_paths],
            "plan": reply.plan,
            "steps": [asdict(entry) for entry in reply.trace],
            "error": reply.error,
            "attempts": reply.attempts,
        }
        return reply, response
