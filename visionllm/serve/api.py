"""The HTTP JSON API: ``GET /healthz`` and ``POST /v1/predict`` (a multipart upload, or JSON with the
image in base64), answering ``predictions.json``'s object schema or ``{"error": "..."}`` with a 4xx.

    curl -F image=@photo.png -F instruction="find all the circles" http://127.0.0.1:7860/v1/predict
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

from visionllm.serve.service import ModelService, PredictParams, RequestError, decode_image

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


class ErrorResponse(BaseModel):
    error: str


_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {"type": "string", "format": "binary"},
        **{
            name: {"type": "string", "description": f"{field.description} (JSON, e.g. [[10, 20]])"}
            if name in _JSON_FIELDS
            else {"type": "string", "description": field.description}
            for name, field in PredictParams.model_fields.items()
        },
    },
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
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
                    "application/json": {"schema": PredictJSON.model_json_schema()},
                },
            }
        },
    )
    async def predict(request: Request) -> JSONResponse:
        try:
            data, params, file_name = await _read_request(request, service)
            pixels = decode_image(data, service.limits)
            _, response = await run_in_threadpool(service.answer, pixels, params, file_name)
        except RequestError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        return JSONResponse(response)

    return router


async def _read_request(request: Request, service: ModelService) -> tuple[bytes, PredictParams, str | None]:
    """The image's bytes, the parameters and the upload's file name, from a multipart or JSON body whose
    declared length is within the upload limit (base64's third more, for JSON)."""
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
        return await _read_multipart(request)
    if content_type.startswith("application/json"):
        return await _read_json(request)
    raise RequestError(
        f"unsupported content type {content_type or 'none'!r}: send multipart/form-data or application/json",
        415,
    )


async def _read_multipart(request: Request) -> tuple[bytes, PredictParams, str | None]:
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
    if upload is None:
        raise RequestError("no image: send the file as the multipart field 'image'")
    params = PredictParams.parse(fields)
    return await upload.read(), params, upload.filename


async def _read_json(request: Request) -> tuple[bytes, PredictParams, str | None]:
    try:
        body = await request.json()
    except ValueError:
        raise RequestError("the body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        raise RequestError('the JSON body needs "image": the image file in base64')
    encoded = body.pop("image")
    params = PredictParams.parse(body)
    try:
        data = base64.b64decode(encoded.split(",", 1)[1] if encoded.startswith("data:") else encoded)
    except (binascii.Error, ValueError):
        raise RequestError('"image" is not valid base64') from None
    return data, params, None
