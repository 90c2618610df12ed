"""The HTTP JSON API: ``GET /healthz``, ``POST /v1/predict`` (a multipart upload, or JSON with the
image in base64), answering ``predictions.json``'s object schema, and ``POST /v1/chat`` (a turn of a
conversation with the agent), or ``{"error": "..."}`` with a 4xx.

    curl -F image=@photo.png -F instruction="find all the circles" http://127.0.0.1:7860/v1/predict
    curl -F image=@photo.png -F text="find the circles, then crop the largest one" http://127.0.0.1:7860/v1/chat
    curl -F conversation=<its id> -F text="how many are there?" http://127.0.0.1:7860/v1/chat
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from visionllm.serve.service import (
    ChatParams,
    ModelService,
    PredictParams,
    RequestError,
    RequestParams,
    decode_image,
)

#: JSON-valued multipart fields (a form field is text).
_JSON_FIELDS = ("regions", "points")


class PredictJSON(PredictParams):
    """The JSON body of ``POST /v1/predict``."""

    image: str = Field(description="the image file's bytes in base64 (a data: URL prefix is allowed)")


class PredictResponse(BaseModel):
    """What ``POST /v1/predict`` answers (``note`` only when regions or points were sent)."""

    task: str
    classes: list[str]
    decode: str
    score_thr: float
    width: int
    height: int
    regions: list[list[float]]
    points: list[list[float]]
    objects: list[dict[str, Any]] = Field(
        description="as in predictions.json: file_name, image_id, category_name, bbox [x, y, w, h] in "
        "pixels, score, and for segmentation polygon (flat x, y, ...) and segmentation (COCO RLE)"
    )
    note: str | None = None


class ChatJSON(ChatParams):
    """The JSON body of ``POST /v1/chat``."""

    image: str | None = Field(
        None, description="the image file's bytes in base64; needed to start a conversation"
    )


class ChatStep(BaseModel):
    """One step of the plan as it ran."""

    step: str
    tool: str
    args: dict[str, Any] = Field(description="as the plan wrote them ($name: an earlier output)")
    artifact: str | None = Field(description="the name of its output in the conversation's memory")
    seconds: float
    error: str | None


class ChatResponse(BaseModel):
    """What ``POST /v1/chat`` answers."""

    conversation: str = Field(description="send it with the next turn")
    text: str
    images: list[str] = Field(description="the answer's images (drawings, crops, ...): PNG files in base64")
    plan: dict[str, Any]
    steps: list[ChatStep]
    error: str | None = Field(description="why the request was not done (the text says it too)")
    attempts: int = Field(description="2 when the first plan failed and the planner repaired it")


class ErrorResponse(BaseModel):
    error: str


def _multipart_schema(params: type[RequestParams], image_required: bool) -> dict[str, Any]:
    """The OpenAPI schema of a multipart body: the image file and each parameter as a text field."""
    return {
        "type": "object",
        "required": ["image"] if image_required else [],
        "properties": {
            "image": {"type": "string", "format": "binary"},
            **{
                name: {"type": "string", "description": f"{field.description} (JSON, e.g. [[10, 20]])"}
                if name in _JSON_FIELDS
                else {"type": "string", "description": field.description}
                for name, field in params.model_fields.items()
            },
        },
    }


def _request_body(params: type[RequestParams], body: type[BaseModel], image_required: bool) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _multipart_schema(params, image_required)},
                "application/json": {"schema": body.model_json_schema()},
            },
        }
    }


def api_router(service: ModelService) -> APIRouter:
    """The API's routes over ``service``."""
    router = APIRouter()

    @router.get("/healthz", summary="liveness, and the model being served")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", **service.info()}

    @router.post(
        "/v1/predict",
        summary="objects in an image, for an instruction",
        response_model=PredictResponse,
        responses={code: {"model": ErrorResponse} for code in (400, 411, 413, 415)},
        openapi_extra=_request_body(PredictParams, PredictJSON, image_required=True),
    )
    async def predict(request: Request) -> JSONResponse:
        try:
            data, params, file_name = await _read_request(request, service, PredictParams)
            pixels = decode_image(data, service.limits)
            _, response = await run_in_threadpool(service.answer, pixels, params, file_name)
        except RequestError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        return JSONResponse(response)

    @router.post(
        "/v1/chat",
        summary="a turn of a conversation with the agent about an image",
        description="A new conversation (no `conversation`) needs an image; later turns send the id the "
        "answer gave and may send a new image. The rule planner writes the plan, the model's tools run it.",
        response_model=ChatResponse,
        responses={code: {"model": ErrorResponse} for code in (400, 404, 411, 413, 415)},
        openapi_extra=_request_body(ChatParams, ChatJSON, image_required=False),
    )
    async def chat(request: Request) -> JSONResponse:
        try:
            data, params, _ = await _read_request(request, service, ChatParams, image_required=False)
            pixels = None if data is None else decode_image(data, service.limits)
            _, response = await run_in_threadpool(service.chat, pixels, params)
        except RequestError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        return JSONResponse(response)

    return router


async def _read_request(
    request: Request, service: ModelService, params: type[RequestParams], image_required: bool = True
) -> tuple[bytes | None, Any, str | None]:
    """The image's bytes (None when there is none and none is required), the ``params`` and the upload's
    file name, from a multipart or JSON body whose declared length is within the upload limit (base64's
    third more, for JSON)."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise RequestError("send a Content-Length header", 411)
    if int(length) > service.limits.max_upload_bytes * 4 // 3 + 2**16:
        raise RequestError(
            f"the request is {int(length) / 2**20:.1f} MiB; uploads are limited to "
            f"{service.limits.max_upload_bytes / 2**20:g} MiB (visionllm serve --max-upload-mb)",
            413,
        )
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _read_multipart(request, params, image_required)
    if content_type.startswith("application/json"):
        return await _read_json(request, params, image_required)
    raise RequestError(
        f"unsupported content type {content_type or 'none'!r}: send multipart/form-data or application/json",
        415,
    )


async def _read_multipart(
    request: Request, params: type[RequestParams], image_required: bool
) -> tuple[bytes | None, Any, str | None]:
    form = await request.form(max_files=1, max_fields=32)
    fields: dict[str, Any] = {}
    upload = None
    for name, value in form.multi_items():
        if name == "image" and not isinstance(value, str):
            upload = value
        elif name == "classes":
            fields.setdefault("classes", []).append(value)
        elif name in _JSON_FIELDS:
            try:
                fields[name] = json.loads(value)
            except json.JSONDecodeError:
                raise RequestError(f"{name} must be JSON, e.g. [[10, 20, 50, 60]], got {value!r}") from None
        else:
            fields[name] = value
    if upload is None and image_required:
        raise RequestError("no image: send the file as the multipart field 'image'")
    parsed = params.parse(fields)
    if upload is None:
        return None, parsed, None
    return await upload.read(), parsed, upload.filename


async def _read_json(
    request: Request, params: type[RequestParams], image_required: bool
) -> tuple[bytes | None, Any, str | None]:
    try:
        body = await request.json()
    except ValueError:
        raise RequestError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError("the JSON body must be an object")
    if image_required and not isinstance(body.get("image"), str):
        raise RequestError('the JSON body needs "image": the image file in base64')
    encoded = body.pop("image", None)
    if encoded is not None and not isinstance(encoded, str):
        raise RequestError('"image" must be the image file in base64 (a string)')
    parsed = params.parse(body)
    if encoded is None:
        return None, parsed, None
    try:
        data = base64.b64decode(encoded.split(",", 1)[1] if encoded.startswith("data:") else encoded)
    except (binascii.Error, ValueError):
        raise RequestError('"image" is not valid base64') from None
    return data, parsed, None
