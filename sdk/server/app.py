"""The ASGI app of `stencil serve`: routes, API key, body limit, errors, and `serve` to run it.

    GET  /v1/models            the served model (answered once the model is loaded)
    POST /v1/chat/completions  sdk.server.chat
    POST /v1/completions       sdk.server.completions
    GET  /health               200 while the server runs
    GET  /metrics              Prometheus text (sdk.server.metrics)

Every error is OpenAI's envelope (`sdk.server.errors`): unknown routes are 404s, an oversized body a
413, a missing or wrong API key a 401; an exception nobody mapped is a 500, logged with its traceback.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import RequestError
from sdk.backends.local import LocalBackend
from sdk.options import SpeculativeOption, speculative_config
from sdk.server.chat import complete_chat, prepare_chat, stream_chat
from sdk.server.completions import complete_text, prepare_completion, stream_completion
from sdk.server.errors import APIError, error_body
from sdk.server.requests import ChatCompletionRequest, CompletionRequest, parse_body
from sdk.server.service import Service
from sdk.server.sse import ClientDisconnected, SSEResponse, cancel_on_disconnect, started

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_CONCURRENT_REQUESTS", "create_app", "model_name", "serve"]

logger = logging.getLogger("stencil.server")

#: Largest request body accepted (413 beyond): a long conversation with schemas fits many times over.
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
#: Requests in flight (waiting or running) before new ones get a 429.
DEFAULT_MAX_CONCURRENT_REQUESTS = 256
#: The name of the embedded default model.
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
#: Status nginx uses for a client that closed the connection first; nobody reads it.
_CLIENT_CLOSED_STATUS = 499
_ENDPOINTS = frozenset({"/v1/models", "/v1/chat/completions", "/v1/completions", "/health", "/metrics"})


def model_name(model: str | os.PathLike[str] | None) -> str:
    """The default served name of a model: the embedded model's name, or the file or folder name."""
    if model is None:
        return DEFAULT_MODEL_NAME
    return Path(model).name.removesuffix(".gguf")


def create_app(
    backend: LocalBackend,
    *,
    served_model_name: str,
    api_key: str | None = None,
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The OpenAI-compatible app over one local backend (the caller closes the backend).

    Args:
        backend: the engine to serve.
        served_model_name: the `model` clients send and `/v1/models` lists.
        api_key: when set, `/v1/*` requires `Authorization: Bearer <api_key>`.
        max_concurrent_requests: requests in flight before new ones get a 429 with `Retry-After`.
        max_body_bytes: largest request body; larger ones get a 413.

    Raises:
        runtime.RequestError: a limit that is not an int >= 1 (`field` names it).
    """
    for field, value in (("max_concurrent_requests", max_concurrent_requests), ("max_body_bytes", max_body_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"must be an int >= 1, got {value!r}", field)
    service = Service(backend, served_model_name=served_model_name, max_concurrent_requests=max_concurrent_requests)
    app = FastAPI(title="Stencil", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(service)]}

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        service.check_model(model_id)
        return _model_card(service)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        arrived = time.perf_counter()
        body = parse_body(ChatCompletionRequest, await _read_json(request, max_body_bytes))
        chat = await prepare_chat(service, body)
        if not body.is_streaming:
            return JSONResponse(await cancel_on_disconnect(request, complete_chat(service, chat, arrived)))
        updates = service.generate(
            chat.backend_request, arrived=arrived, constraint_param=chat.constraint_param, prompt_param="messages"
        )
        return SSEResponse(stream_chat(service, chat, await cancel_on_disconnect(request, started(updates))))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        arrived = time.perf_counter()
        body = parse_body(CompletionRequest, await _read_json(request, max_body_bytes))
        completion = await prepare_completion(service, body)
        if not body.is_streaming:
            return JSONResponse(await cancel_on_disconnect(request, complete_text(service, completion, arrived)))
        updates = service.generate(
            completion.backend_request,
            arrived=arrived,
            constraint_param=completion.constraint_param,
            prompt_param="prompt",
        )
        events = stream_completion(service, completion, await cancel_on_disconnect(request, started(updates)))
        return SSEResponse(events)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(message, error_type), status_code=exc.status_code)

    @app.exception_handler(ClientDisconnected)
    async def client_gone(request: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=_CLIENT_CLOSED_STATUS)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error"), status_code=500)

    app.add_middleware(_Gate, service=service, api_key=api_key)
    return app


def _model_card(service: Service) -> dict[str, Any]:
    return {
        "id": service.served_model_name,
        "object": "model",
        "created": 0,
        "owned_by": "stencil",
        "max_model_len": service.engine.max_model_len,
    }


async def _read_json(request: Request, max_bytes: int) -> object:
    """The decoded JSON body, read up to `max_bytes`.

    Raises:
        APIError: 413 past `max_bytes` (checked on Content-Length first, then while reading); 400
            for a body that is not JSON.
    """
    too_large = APIError(413, f"the request body exceeds {max_bytes} bytes", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError.bad_request(f"the request body is not valid JSON: {exc}", None) from exc


class _Gate:
    """ASGI middleware: the API key check on `/v1/*`, and the request counter by endpoint and status."""

    def __init__(self, app: ASGIApp, *, service: Service, api_key: str | None) -> None:
        self.app = app
        self.service = service
        self.expected = None if api_key is None else f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in _ENDPOINTS else "other"
        if self.expected is not None and path.startswith("/v1/") and not self._authorized(scope):
            error = error_body(
                "invalid API key: send Authorization: Bearer <key>", "invalid_request_error", None, "invalid_api_key"
            )
            self.service.metrics.requests.labels(endpoint, "401").inc()
            await JSONResponse(error, status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, self._counting(send, endpoint))

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        return self.expected is not None and hmac.compare_digest(headers.get(b"authorization", b""), self.expected)

    def _counting(self, send: Send, endpoint: str) -> Callable[[Message], Awaitable[None]]:
        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.service.metrics.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        return counted


def freeze_start_up() -> None:
    """Takes every object start-up made (torch's modules, the model, the app: ~200k of them) out of
    the cyclic collector's reach (`gc.freeze`), after a collection so that nothing freed is kept.

    Full collections walked them all, each a pause of every stream the engine steps: with the model
    loaded, compiling and masking 100 new schemas set off 5, the longest ~175 ms; frozen, their
    pauses summed a third as long, the longest ~40 ms (`benchmarks/gc_pauses.py`). `stencil serve`
    owns its process and freezes once the model and the app are up; an application that loads
    `sdk.LLM` in its own process can do the same (README).
    """
    gc.collect()
    gc.freeze()


def serve(
    model: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    served_model_name: str | None = None,
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
    dtype: str | None = None,
    speculative: SpeculativeOption = None,
) -> None:
    """Load the model, then serve it until interrupted (`stencil serve`).

    `speculative` ("ngram", "auto", an `sdk.Speculative` or None) turns on the fast paths (see `sdk.LLM`).

    The port opens only once the model is loaded, so the first `GET /v1/models` that answers means
    ready.

    Raises:
        runtime.ModelLoadError: the model cannot be loaded.
    """
    import uvicorn  # imported on use: the app itself does not need the server

    backend = LocalBackend.load(model, dtype=dtype, speculative=speculative_config(speculative))
    try:
        app = create_app(
            backend,
            served_model_name=served_model_name or model_name(model),
            api_key=api_key,
            max_concurrent_requests=max_concurrent_requests,
        )
        freeze_start_up()
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        backend.close()
