"""What the generation routes share: errors in each API's shape, limits, RAG, and talking to the engine.

The routes (web/routes/generate.py, openai_api.py, ollama_api.py, tokenize.py) turn their API's request
into one payload for the inference engine (serve/protocol.py), and its events back into their API's
response. Everything that waits on the engine is async and reads the socket with asyncio, so a
thousand open streams cost the event loop nothing; a client that disconnects is noticed at once (the
ASGI `http.disconnect` message), which closes the socket and frees the decoding slot.

Errors: a ServingError carries an HTTP status and a message, rendered as
    native  {"status": "error", "message": ..., "code": ...}
    /v1     {"error": {"message", "type", "param", "code"}}      (OpenAI's error object)
    /ollama {"error": "..."}                                      (Ollama's)
with `Retry-After` on 503s that will pass (queue full, engine starting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aifactory.autotune import resolve_profile
from aifactory.cluster import engine_state as engine_db
from aifactory.serve import catalog, client, rag
from aifactory.serve.metrics import ServingMetrics
from aifactory.web.context import AppContext
from aifactory.web.errors import ServingError

log = logging.getLogger("aifactory.web")

GENERATION_PATHS = ("/api/generate", "/v1", "/ollama", "/tokenize", "/detokenize", "/tokenizer_info")
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


def api_of(path: str) -> str:
    if path.startswith("/v1") or path.startswith(("/tokenize", "/detokenize", "/tokenizer_info")):
        return "openai"
    return "ollama" if path.startswith("/ollama") else "native"


def is_generation_path(path: str) -> bool:
    return path.startswith(GENERATION_PATHS)


def error_body(api: str, error: ServingError) -> dict[str, Any]:
    if api == "openai":
        kind = OPENAI_TYPES.get(
            error.status, "server_error" if error.status >= 500 else "invalid_request_error"
        )
        return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}
    if api == "ollama":
        return {"error": error.message}
    return {"status": "error", "message": error.message, "code": error.code}


def metrics_of(app: Any) -> ServingMetrics:
    """The generation series of this app (kept per app, shown by /metrics)."""
    if not hasattr(app.state, "serving_metrics"):
        app.state.serving_metrics = ServingMetrics()
    return app.state.serving_metrics


def error_response(api: str, error: ServingError, app: Any = None) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    if app is not None:
        metrics_of(app).request(api, error.status)
    return JSONResponse(error_body(api, error), status_code=error.status, headers=headers)


def validation_error(exc: RequestValidationError) -> ServingError:
    """422 naming the field: `max_tokens: Input should be less than or equal to 64`."""
    problems, first = [], None
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body",))
        first = first or where or None
        problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return ServingError(422, "; ".join(problems) or "invalid request", "invalid_request", param=first)


class BodyLimit:
    """413 for a generation request body above SERVE_MAX_BODY_BYTES, before it is buffered whole.

    A declared Content-Length is checked at once; a body without one (chunked) is read here up to the
    limit and handed to the route as it came."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_generation_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        api = api_of(scope["path"])
        too_large = ServingError(413, f"the request body exceeds {self.limit:,} bytes", "body_too_large")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.limit:
                await error_response(api, too_large, scope.get("app"))(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await error_response(api, too_large, scope.get("app"))(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def install(app: FastAPI, ctx: AppContext) -> None:
    """Error rendering for the generation routes and the body limit."""

    @app.exception_handler(ServingError)
    async def _serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return error_response(api_of(request.url.path), exc, request.app)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Any:
        if not is_generation_path(request.url.path):
            return await request_validation_exception_handler(request, exc)
        return error_response(api_of(request.url.path), validation_error(exc), request.app)

    app.add_middleware(BodyLimit, limit=ctx.settings.serve_max_body_bytes)


# --- limits and model checks ----------------------------------------------------------------------
def token_limit(ctx: AppContext) -> int:
    """MAX_GENERATE_TOKENS in force (auto-tune may choose it)."""
    return resolve_profile(ctx.settings).max_generate_tokens


def check_prompt_chars(ctx: AppContext, chars: int) -> None:
    limit = ctx.settings.serve_max_prompt_chars
    if chars > limit:
        raise ServingError(
            413,
            f"the prompt has {chars:,} characters; SERVE_MAX_PROMPT_CHARS allows {limit:,}",
            "prompt_too_long",
        )


def _engine_rows(ctx: AppContext) -> dict[str, dict[str, Any]]:
    return {row["engine"]: row for row in engine_db.list_states(ctx.db, ctx.node.node_id)}


def no_model_message(ctx: AppContext) -> str:
    """Why there is no model yet, and how far training is (for the 503)."""
    parts = ["no model yet: training has not produced a checkpoint"]
    try:
        rows = _engine_rows(ctx)
    except Exception:  # the database is down: say what we know
        return parts[0]
    for name in ("dataset", "trainer"):
        row = rows.get(name)
        if row is not None:
            parts.append(f"{name}: {row['phase']}" + (f" ({row['detail'][:300]})" if row["detail"] else ""))
    trainer = rows.get("trainer")
    if trainer is not None and trainer["desired"] != "running":
        parts.append('press Ignite (POST /api/control {"action": "start"}) to collect data and train')
    return "; ".join(parts)


def unavailable_message(ctx: AppContext) -> str:
    message = "the inference engine is not running"
    try:
        row = _engine_rows(ctx).get("inference")
    except Exception:
        row = None
    if row is not None:
        message += f" (phase {row['phase']}" + (
            f": {row['last_error'][-300:].strip()}" if row["last_error"] else ""
        )
        message += ")"
        if row["desired"] != "running":
            message += '; start it with POST /api/engines/inference/control {"action": "start"}'
        else:
            message += "; it is started with the node and restarted when it fails: retry shortly"
    return message


async def resolve_model(ctx: AppContext, name: str | None) -> catalog.ModelEntry:
    """The checkpoint `name` means, or a ServingError (404 unknown, 503 no model yet with progress)."""
    try:
        return catalog.resolve(ctx.settings, name)
    except catalog.ModelNotFound as exc:
        raise ServingError(404, str(exc), "model_not_found", param="model") from None
    except catalog.NoModelYet:
        message = await run_in_threadpool(no_model_message, ctx)
        raise ServingError(503, message, "no_model", retry_after=30) from None


def model_entry(ctx: AppContext, name: str | None) -> catalog.ModelEntry:
    """resolve_model for plain `def` routes (they run in the thread pool)."""
    try:
        return catalog.resolve(ctx.settings, name)
    except catalog.ModelNotFound as exc:
        raise ServingError(404, str(exc), "model_not_found", param="model") from None
    except catalog.NoModelYet:
        raise ServingError(503, no_model_message(ctx), "no_model", retry_after=30) from None


async def retrieve(ctx: AppContext, query: str) -> list[dict[str, str]]:
    """The RAG passages for `query` (empty if RAG is off or the search fails: the answer goes on)."""
    if not ctx.settings.enable_rag or not query.strip():
        return []
    try:
        hits = await run_in_threadpool(rag.search, ctx.db, query, ctx.settings.rag_passages)
    except Exception as exc:  # an index problem must not cost the answer
        log.warning("RAG search failed: %s", exc)
        return []
    return [hit.as_passage() for hit in hits]


# --- generation -----------------------------------------------------------------------------------
@dataclass
class Choice:
    """One sequence's result, assembled from the engine's events."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    start: dict[str, Any] = field(default_factory=dict)
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # prompt (echo) then generated tokens
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    generated_ids: list[int] = field(default_factory=list)

    def take(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            self.start = event
            self.logprobs += event.get("logprobs") or []
        elif kind == "token":
            self.text += event["text"]
            self.logprobs += event.get("logprobs") or []
        elif kind == "end":
            self.text = event["text"]
            self.finish_reason = event["finish_reason"]
            self.usage, self.timings = event["usage"], event["timings"]
            self.generated_ids = event.get("generated_ids") or []


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class Generation:
    """One request to the inference engine. `await start()` reads the first event, so an error that
    happens before any output (queue full, unknown model) is still an HTTP error status."""

    def __init__(self, request: Request, ctx: AppContext, payload: dict[str, Any], api: str) -> None:
        self.request, self.ctx, self.payload, self.api = request, ctx, payload, api
        self._stack = contextlib.AsyncExitStack()
        self._frames: AsyncIterator[dict[str, Any]] | None = None
        self._first: dict[str, Any] | None = None
        self._watch: asyncio.Future[None] | None = None
        self.started_at = time.monotonic()
        self.first_token_at: float | None = None
        self.choices: dict[int, Choice] = {}

    async def start(self) -> None:
        try:
            stream = await self._stack.enter_async_context(
                client.open_stream(self.ctx.settings, self.payload)
            )
        except client.InferenceUnavailable:
            message = await run_in_threadpool(unavailable_message, self.ctx)
            raise ServingError(503, message, "inference_unavailable", retry_after=5) from None
        self._frames = stream.__aiter__()
        self._watch = asyncio.ensure_future(_disconnected(self.request))
        self._first = await self._next()
        if self._first is None:
            raise ServingError(499, "the client disconnected", "client_closed")
        if self._first["event"] == "error":
            await self.close()
            raise ServingError.from_event(self._first)

    async def _next(self) -> dict[str, Any] | None:
        """The next event, or None when the client went away (the connection is then closed)."""
        assert self._frames is not None and self._watch is not None
        step = asyncio.ensure_future(self._frames.__anext__())
        try:
            done, _ = await asyncio.wait({step, self._watch}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            step.cancel()
            raise
        if step not in done:
            step.cancel()
            await self.close()
            return None
        try:
            return step.result()
        except StopAsyncIteration:
            return None
        except client.InferenceCrashed as exc:
            raise ServingError(503, f"{exc}; retry the request", "inference_crashed", retry_after=5) from None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The events after start(); an error event mid-stream raises ServingError."""
        event = self._first
        self._first = None
        while event is not None:
            if event["event"] == "error":
                raise ServingError.from_event(event)
            index = int(event.get("index", 0))
            if event["event"] in ("start", "token", "end"):
                self.choices.setdefault(index, Choice(index)).take(event)
            if event["event"] == "token" and self.first_token_at is None:
                self.first_token_at = time.monotonic()
            yield event
            if event.get("final"):
                self._record()
                return
            event = await self._next()

    async def collect(self) -> list[Choice]:
        """All choices, in index order, once every sequence has finished."""
        async for _ in self.events():
            pass
        return [self.choices[index] for index in sorted(self.choices)]

    def _record(self) -> None:
        prompt = sum(c.usage.get("prompt_tokens", 0) for c in self.choices.values())
        tokens = sum(c.usage.get("completion_tokens", 0) for c in self.choices.values())
        first = None if self.first_token_at is None else self.first_token_at - self.started_at
        series = metrics_of(self.request.app)
        series.usage(self.api, prompt, tokens, first, time.monotonic() - self.started_at)
        series.request(self.api, 200)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self._stack.aclose()


async def begin(request: Request, ctx: AppContext, payload: dict[str, Any], api: str) -> Generation:
    generation = Generation(request, ctx, payload, api)
    await generation.start()
    return generation


def usage_fields(choices: list[Choice]) -> dict[str, Any]:
    """Usage summed over the choices, with the time to first token and the total time."""
    prompt = sum(c.usage.get("prompt_tokens", 0) for c in choices)
    completion = sum(c.usage.get("completion_tokens", 0) for c in choices)
    timings = choices[0].timings if choices else {}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "truncated_tokens": sum(c.usage.get("truncated_tokens", 0) for c in choices),
        "time_to_first_token_ms": timings.get("time_to_first_token_ms"),
        "total_ms": max((c.timings.get("total_ms", 0.0) for c in choices), default=None),
    }
