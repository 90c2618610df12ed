"""``visionllm serve``: a Gradio demo and an HTTP JSON API over one model, on one FastAPI app.

    app = build_app(ModelService(Predictor.from_checkpoint(None, "iter_600.pth"), "iter_600.pth"))

serves the UI at ``/`` (its Predict and Chat tabs), ``GET /healthz``, ``POST /v1/predict``, ``POST /v1/chat``
and the OpenAPI schema (``/docs``, ``/openapi.json``); :func:`serve` loads a checkpoint and runs that app
with uvicorn.
"""

from __future__ import annotations

import os
import socket

from visionllm.serve.service import Limits, ModelService, PredictParams, RequestError

__all__ = ["Limits", "ModelService", "PredictParams", "RequestError", "build_app", "serve"]


def build_app(service: ModelService):
    """The FastAPI app: the API's routes, then the Gradio UI mounted at ``/`` (routes match first)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    import gradio as gr
    from fastapi import FastAPI

    from visionllm.serve.api import api_router
    from visionllm.serve.app import build_demo

    app = FastAPI(
        title="VisionLLM",
        description="Objects in an image, for an instruction; and chats with the agent that chains the "
        "model's tasks. The web demo is at `/`.",
        version="1",
    )
    app.include_router(api_router(service))
    return gr.mount_gradio_app(
        app, build_demo(service), path="/", max_file_size=service.limits.max_upload_bytes, ssr_mode=False
    )


def serve(
    checkpoint: str | os.PathLike,
    config: str | os.PathLike | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str = "cpu",
    limits: Limits | None = None,
    cfg_options: dict | None = None,
) -> None:
    """Load the checkpoint and serve it until interrupted (``limits``: default :class:`Limits`). Raises
    OSError when the port is taken."""
    import uvicorn

    from visionllm.apis import Predictor

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except (OSError, OverflowError) as error:
            raise OSError(
                f"cannot listen on {host}:{port}: {error} (pick another --host or --port)"
            ) from None
    predictor = Predictor.from_checkpoint(config, checkpoint, device=device, cfg_options=cfg_options)
    app = build_app(ModelService(predictor, str(checkpoint), limits or Limits()))
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach it can use the model (no login)")
    print(
        f"serving {checkpoint} at http://{host}:{port}/ "
        "(API: POST /v1/predict, POST /v1/chat, GET /healthz; docs: /docs)"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
