"""The FastAPI application: routes, error answers, the page and the API reference.

``create_app(engine, settings)`` builds it; :mod:`pgmm_serve.command` runs it under uvicorn, and
tests may run it the same way on a free port. Routes:

* ``POST /v1/caption``, ``POST /v1/ask`` — JSON (image as base64) or multipart (file part
  ``image``); ``"stream": true`` answers as server-sent events (``piece`` events, then ``done``);
* ``GET /v1/health``, ``GET /v1/model``;
* ``GET /`` — the web page (``static/``, served by this package: no CDN);
* ``GET /docs`` — the API reference, rendered from ``/openapi.json`` by a page of this package
  (FastAPI's own ``/docs`` loads Swagger UI from a CDN, so it is turned off).
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pgmm_core.errors import PgmmError
from pgmm_serve.batcher import Batcher, QueueFull
from pgmm_serve.engine import Engine, ask_key, caption_key
from pgmm_serve.guard import BodyTooLarge, Guard
from pgmm_serve.inputs import (
    ApiError,
    AskRequest,
    CaptionRequest,
    Limits,
    check_text,
    decode_image,
    form_to_dict,
    generation_settings,
    image_bytes_from_base64,
    parse_request,
)

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServeSettings:
    """How the server batches and what it accepts; ``max_batch_size=1`` turns batching off."""

    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    queue_size: int = 64
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


def _body_schema(model: type) -> dict[str, Any]:
    """The request body in the OpenAPI schema: JSON with a base64 image, or multipart with a file."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    form = {"type": "object", "properties": {
        **{k: v for k, v in schema["properties"].items() if k not in ("image", "history")},
        "image": {"type": "string", "format": "binary", "description": "the image file"},
        **({"history": {"type": "string", "description": "JSON list of {role, content} turns"}}
           if "history" in schema["properties"] else {})}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema}, "multipart/form-data": {"schema": form}}}}


def create_app(engine: Engine, settings: ServeSettings | None = None) -> Any:
    settings = settings or ServeSettings()
    limits = settings.limits
    batcher = Batcher(engine.run_batch, max_batch_size=settings.max_batch_size,
                      max_wait=settings.max_wait_ms / 1000, max_queue=settings.queue_size)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="pgmm serve", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Captions and answers from a trained pgmm run. Errors are "
                  '`{"error": {"code", "message", "fields"}}` with a 4xx status; 503 with Retry-After '
                  "when the queue is full.")
    app.state.batcher = batcher
    app.state.engine = engine
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(ApiError(413, "too_large", str(exc)).body(), status_code=413)

    @app.exception_handler(PgmmError)
    async def _refused_by_model(_: Request, exc: PgmmError) -> JSONResponse:
        # what pgmm-core refuses with a message for the user (settings that contradict the run's own)
        return JSONResponse(ApiError(422, "invalid_generation", str(exc)).body(), status_code=422)

    @app.exception_handler(Exception)
    async def _failed(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc,
                     exc_info=exc)
        return JSONResponse(ApiError(500, "generation_failed", f"{type(exc).__name__}: {exc}").body(),
                            status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own refusals (no such route, wrong method, a malformed multipart body) in the
        same JSON shape as the API's."""
        if exc.status_code == 404:
            error = ApiError(404, "not_found", f"no such page: {request.url.path}")
        elif exc.status_code == 405:
            error = ApiError(405, "method_not_allowed", f"{request.method} is not accepted by {request.url.path}")
        else:
            error = ApiError(exc.status_code, "bad_request", f"body: {exc.detail}")
        return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def read(request: Request, model: type[CaptionRequest]) -> tuple[CaptionRequest, Any]:
        """The validated body and the decoded image (decoded off the event loop)."""
        try:
            batcher.refuse_if_full()
        except QueueFull as exc:
            raise queue_full(exc) from None
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                data = json.loads(await request.body())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ApiError(400, "bad_json", f"body: not valid JSON ({exc})") from None
            if not isinstance(data, dict):
                raise ApiError(422, "invalid_field", "body: a JSON object is expected")
            raw = None
        elif kind == "multipart/form-data":
            form = await request.form(max_files=2, max_fields=32, max_part_size=limits.max_upload_bytes)
            try:
                data, raw = form_to_dict(form)
            finally:
                await form.close()
        else:
            raise ApiError(415, "unsupported_media_type", "send application/json (image as base64) or "
                           f"multipart/form-data (file part 'image'), not {kind or 'no content type'}")
        body = parse_request(model, data, from_form=kind != "application/json")
        if raw is None:
            if body.image is None:
                raise ApiError(422, "invalid_field", "image: required (a multipart file part 'image' or a base64 "
                               "string in 'image')", ["image"])
            raw = image_bytes_from_base64(body.image)
        elif body.image is not None:
            raise ApiError(422, "invalid_field", "image: given both as a file and as base64", ["image"])
        check_text(body, limits)
        image = await run_in_threadpool(decode_image, raw, limits)
        return body, image

    async def answer(request: Request, work: Any) -> Any:
        """Await ``work`` unless the client goes away first; then cancel it (freeing its slot)."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if task not in done:
            task.cancel()
            raise ClientGone()
        return task.result()

    def queue_full(exc: QueueFull) -> ApiError:
        return ApiError(503, "queue_full", str(exc), headers={"Retry-After": str(exc.retry_after)})

    def events(produce: Any, final_name: str) -> StreamingResponse:
        try:
            pieces = batcher.stream(produce)
        except QueueFull as exc:
            raise queue_full(exc) from None

        async def stream() -> Any:
            text = ""
            try:
                async for piece in pieces:
                    text += piece
                    yield _event("piece", {"text": piece})
                yield _event("done", {final_name: text.strip()})
            except Exception as exc:  # the stream has started: report in-band, the server goes on
                logger.exception("streaming failed")
                yield _event("error", {"code": "generation_failed", "message": f"{type(exc).__name__}: {exc}"})

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"},
                                 background=BackgroundTask(pieces.close))  # runs even if the client left

    @app.post("/v1/caption", summary="Caption an image", openapi_extra=_body_schema(CaptionRequest),
              responses={200: {"description": '{"caption": str, "captions": [str]} (or SSE with stream)'}})
    async def caption(request: Request) -> Any:
        body, image = await read(request, CaptionRequest)
        settings_ = generation_settings(body, engine.generation_defaults, limits)
        if body.stream:
            settings_.pop("num_return_sequences", None)
            return events(lambda: engine.caption_stream(image, body.prompt, settings_), "caption")
        try:
            captions = await answer(request, batcher.submit(caption_key(body.prompt, settings_), image))
        except QueueFull as exc:
            raise queue_full(exc) from None
        except ClientGone:
            return Response(status_code=499)
        return {"caption": captions[0], "captions": captions}

    @app.post("/v1/ask", summary="Answer a question about an image", openapi_extra=_body_schema(AskRequest),
              responses={200: {"description": '{"answer": str} (or SSE with stream)'}})
    async def ask(request: Request) -> Any:
        body, image = await read(request, AskRequest)
        if engine.assistant is None:
            raise ApiError(501, "ask_unavailable", f"questions are not available: {engine.ask_unavailable}")
        if body.num_return_sequences is not None:
            raise ApiError(422, "invalid_field", "num_return_sequences: captions only (one answer per question)",
                           ["num_return_sequences"])
        settings_ = generation_settings(body, engine.ask_defaults, limits)
        settings_.pop("num_return_sequences", None)
        history = [turn.model_dump() for turn in body.history] if body.history else None
        if body.stream:
            return events(lambda: engine.ask_stream(image, body.question, history, settings_), "answer")
        try:
            text = await answer(request, batcher.submit(ask_key(settings_), (image, body.question, history)))
        except QueueFull as exc:
            raise queue_full(exc) from None
        except ClientGone:
            return Response(status_code=499)
        return {"answer": text}

    @app.get("/v1/health", summary="Liveness and queue state")
    async def health() -> dict[str, Any]:
        stats = batcher.stats
        return {"status": "ok", "queued": batcher.admitted, "queue_size": settings.queue_size,
                "batches": stats.batches, "requests": stats.jobs, "largest_batch": stats.largest}

    @app.get("/v1/model", summary="The run, checkpoint, components and limits being served")
    async def model() -> dict[str, Any]:
        return {**engine.describe(), "batching": {"max_batch_size": settings.max_batch_size,
                                                  "max_wait_ms": settings.max_wait_ms,
                                                  "queue_size": settings.queue_size},
                "limits": limits.__dict__}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    return Guard(app, api_key=settings.api_key, max_body=limits.max_upload_bytes * 4 // 3 + 64 * 1024)


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
