"""The Ollama-compatible API under /ollama: point an Ollama client at http://HOST:PORT/ollama.

    GET  /ollama, HEAD /ollama     "Ollama is running" (clients probe it)
    GET  /ollama/api/version       {"version"}
    GET  /ollama/api/tags          the models, as aifactory:latest, aifactory:best (name and model)
    POST /ollama/api/show          details, template, parameters, model_info
    GET  /ollama/api/ps            the models loaded by the inference engine
    POST /ollama/api/generate      prompt through the chat template (raw: as it is), NDJSON stream
    POST /ollama/api/chat          messages, NDJSON stream

Streaming is on by default, as in Ollama; durations are nanoseconds; the last line carries done_reason
and the counters (prompt_eval_count, eval_count, *_duration, total_duration). Bodies are read as JSON
whatever their content type, as `curl -d` in Ollama's own documentation sends them. max_tokens
(`num_predict`, -1 = unlimited) is clamped to MAX_GENERATE_TOKENS, ending with done_reason "length".
RAG is off unless RAG_ON_COMPATIBLE_APIS=1 (or `"rag": true` in the body, an extension).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aifactory.serve import catalog
from aifactory.serve.template import OLLAMA_TEMPLATE, STOP_STRINGS
from aifactory.train import sharing
from aifactory.web.auth import ApiKey
from aifactory.web.context import AppContext, Ctx
from aifactory.web.serving import (
    Choice,
    Generation,
    ServingError,
    begin,
    check_prompt_chars,
    error_body,
    resolve_model,
    retrieve,
    token_limit,
)

OLLAMA_VERSION = "0.12.6"  # the Ollama API version whose shapes these follow
router = APIRouter(prefix="/ollama", tags=["ollama"])
api = APIRouter(prefix="/ollama/api", tags=["ollama"], dependencies=[ApiKey])
NDJSON = "application/x-ndjson"


class Options(BaseModel):
    """Ollama's per-request options; unknown ones are accepted and ignored, as Ollama does."""

    model_config = ConfigDict(extra="allow")

    temperature: float = Field(0.8, ge=0, le=2)
    top_k: int = Field(40, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    repeat_penalty: float = Field(1.0, gt=0, le=10)
    repeat_last_n: int = Field(64, ge=-1)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    num_predict: int = Field(-1, ge=-2)
    seed: int | None = None
    stop: list[str] | str | None = None
    num_ctx: int | None = Field(None, ge=1)


class Base(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    stream: bool = True
    options: Options = Field(default_factory=Options)
    format: str | dict[str, Any] | None = None
    keep_alive: float | str | None = None
    rag: bool | None = None


class GenerateBody(Base):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    context: list[int] | None = None
    images: list[str] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant"]
    content: str = ""


class ChatBody(Base):
    messages: list[Message] = Field(default_factory=list)


class ShowBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    name: str | None = None  # what older clients send


async def parse(request: Request, model: type[BaseModel]) -> Any:
    """The body as JSON whatever its content type (curl -d sends form-urlencoded)."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ServingError(400, f"the body is not valid JSON: {exc}", "invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()
        ]
        raise ServingError(422, "; ".join(problems), "invalid_request") from None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def tag(name: str) -> str:
    return f"{catalog.BASE_NAME}:{name}"


def human_size(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def details(entry: catalog.ModelEntry, settings: Any) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "safetensors",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": human_size(entry.parameters),
        "quantization_level": "INT8" if settings.enable_cpu_quantization else "F32",
    }


def model_item(entry: catalog.ModelEntry, settings: Any) -> dict[str, Any]:
    return {
        "name": tag(entry.name),
        "model": tag(entry.name),
        "modified_at": dt.datetime.fromtimestamp(entry.saved_at, dt.UTC).isoformat(),
        "size": entry.size_bytes,
        "digest": entry.digest,
        "details": details(entry, settings),
    }


def options_payload(ctx: AppContext, options: Options) -> dict[str, Any]:
    limit = token_limit(ctx)
    stops = [options.stop] if isinstance(options.stop, str) else list(options.stop or [])
    return {
        "max_tokens": limit if options.num_predict < 0 else min(options.num_predict, limit),
        "num_ctx": options.num_ctx,
        "stop": [s for s in stops if s][:16],
        "sampling": {
            "temperature": options.temperature,
            "top_k": options.top_k,
            "top_p": options.top_p,
            "repetition_penalty": options.repeat_penalty,
            "repeat_last_n": options.repeat_last_n,
            "presence_penalty": options.presence_penalty,
            "frequency_penalty": options.frequency_penalty,
            "seed": None if options.seed is None or options.seed < 0 else options.seed,
        },
    }


def check_unsupported(body: Base) -> None:
    if body.format:
        raise ServingError(422, "format: structured output is not supported", "unsupported")
    if getattr(body, "images", None):
        raise ServingError(422, "images: this model reads text only", "unsupported")


def stats(choice: Choice) -> dict[str, Any]:
    timings = choice.timings
    ns = 1_000_000
    return {
        "done_reason": choice.finish_reason,
        "total_duration": int(timings.get("total_ms", 0) * ns),
        "load_duration": 0,
        "prompt_eval_count": choice.usage.get("prompt_tokens", 0),
        "prompt_eval_duration": int(timings.get("prompt_ms", 0) * ns),
        "eval_count": choice.usage.get("completion_tokens", 0),
        "eval_duration": int(timings.get("decode_ms", 0) * ns),
        "truncated_tokens": choice.usage.get("truncated_tokens", 0),  # prompt cut to fit the context
    }


def line(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False) + "\n"


async def respond(
    generation: Generation,
    stream: bool,
    piece: Callable[[str], dict[str, Any]],
    final: Callable[[Choice, bool], dict[str, Any]],
) -> Any:
    """One JSON answer, or NDJSON: `piece(text)` per piece of text, then `final(choice, streamed)`;
    an error after the stream began is one more line {"error": ...}."""
    if not stream:
        try:
            [choice] = await generation.collect()
        finally:
            await generation.close()
        return final(choice, False)

    async def lines() -> AsyncIterator[str]:
        try:
            async for event in generation.events():
                if event["event"] == "token" and event["text"]:
                    yield line(piece(event["text"]))
                elif event.get("final"):
                    yield line(final(generation.choices[0], True))
        except ServingError as exc:
            yield line(error_body("ollama", exc))
        finally:
            await generation.close()

    return StreamingResponse(lines(), media_type=NDJSON)


# --- model information ----------------------------------------------------------------------------
@router.get("", response_class=PlainTextResponse, include_in_schema=False)
@router.head("", response_class=PlainTextResponse, include_in_schema=False)
@router.get("/", response_class=PlainTextResponse)
def alive() -> str:
    """Liveness, as Ollama answers it."""
    return "Ollama is running"


@api.get("/version")
def version() -> dict[str, str]:
    return {"version": OLLAMA_VERSION}


@api.get("/tags")
def tags(ctx: Ctx) -> dict[str, Any]:
    """The factory's models as Ollama lists local models (empty until the first checkpoint)."""
    return {"models": [model_item(entry, ctx.settings) for entry in catalog.available(ctx.settings)]}


@api.get("/ps")
def ps(ctx: Ctx) -> dict[str, Any]:
    """The models the inference engine has loaded."""
    loaded = sharing.read_load(ctx.settings).get("loaded", [])
    far = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)).isoformat()
    models = []
    for model in loaded:
        name = tag(model.get("name") or "latest")
        models.append(
            {
                "name": name,
                "model": name,
                "size": model.get("size_bytes", 0),
                "digest": model.get("digest", ""),
                "details": {
                    "parent_model": "",
                    "format": "safetensors",
                    "family": "llama",
                    "families": ["llama"],
                    "parameter_size": human_size(int(model.get("parameters", 0))),
                    "quantization_level": "INT8" if model.get("quantized") else "F32",
                },
                "expires_at": far,
                "size_vram": 0,
                "context_length": model.get("context_length", 0),
            }
        )
    return {"models": models}


@api.post("/show")
async def show(request: Request, ctx: Ctx) -> dict[str, Any]:
    body = await parse(request, ShowBody)
    name = body.model or body.name
    if not name:
        raise ServingError(422, "model: required", "invalid_request")
    entry = await resolve_model(ctx, name)
    config = entry.meta.get("model", {})
    parameters = "\n".join(f'stop "{stop}"' for stop in STOP_STRINGS)
    return {
        "modelfile": f"# Modelfile of {tag(catalog.canonical(name))}\nFROM {entry.directory}\n"
        f'TEMPLATE """{OLLAMA_TEMPLATE}"""\n' + "\n".join(f"PARAMETER {p}" for p in parameters.splitlines()),
        "parameters": parameters,
        "template": OLLAMA_TEMPLATE,
        "details": details(entry, ctx.settings),
        "model_info": {
            "general.architecture": "llama",
            "general.parameter_count": entry.parameters,
            "llama.context_length": config.get("max_seq_len"),
            "llama.embedding_length": config.get("n_embd"),
            "llama.block_count": config.get("n_layer"),
            "llama.feed_forward_length": config.get("intermediate_size"),
            "llama.attention.head_count": config.get("n_head"),
            "llama.attention.head_count_kv": config.get("n_kv_head"),
            "llama.rope.freq_base": config.get("rope_theta"),
            "llama.attention.layer_norm_rms_epsilon": config.get("norm_eps"),
            "tokenizer.ggml.model": "llama",
        },
        "capabilities": ["completion"],
        "modified_at": dt.datetime.fromtimestamp(entry.saved_at, dt.UTC).isoformat(),
    }


# --- generation -----------------------------------------------------------------------------------
@api.post("/generate")
async def generate(request: Request, ctx: Ctx) -> Any:
    """Ollama's generate: the prompt (and `system`) through the chat template, or as it is with `raw`."""
    body = await parse(request, GenerateBody)
    check_unsupported(body)
    await resolve_model(ctx, body.model)
    if not body.prompt:  # Ollama's way to load (or, with keep_alive 0, unload) a model
        reason = "unload" if str(body.keep_alive) in ("0", "0.0", "0s") else "load"
        return {
            "model": body.model,
            "created_at": now_iso(),
            "response": "",
            "done": True,
            "done_reason": reason,
        }
    check_prompt_chars(ctx, len(body.prompt) + len(body.system or ""))
    use_rag = ctx.settings.rag_on_compatible_apis if body.rag is None else body.rag
    payload: dict[str, Any] = {
        "model": body.model,
        "return_prompt_ids": True,
        **options_payload(ctx, body.options),
    }
    if body.raw:
        payload["prompts"] = [body.prompt]
    else:
        messages = [{"role": "system", "content": body.system}] if body.system else []
        payload["messages"] = [*messages, {"role": "user", "content": body.prompt}]
        payload["context_ids"] = body.context or []
    if use_rag and not body.raw:
        payload["passages"] = await retrieve(ctx, body.prompt)
    generation = await begin(request, ctx, payload, "ollama")

    def final(choice: Choice, streamed: bool) -> dict[str, Any]:
        out = {
            "model": body.model,
            "created_at": now_iso(),
            "response": "" if streamed else choice.text,
            "done": True,
            **stats(choice),
        }
        if not body.raw:
            out["context"] = (choice.start.get("prompt_ids") or []) + choice.generated_ids
        return out

    return await respond(
        generation,
        body.stream,
        lambda text: {"model": body.model, "created_at": now_iso(), "response": text, "done": False},
        final,
    )


@api.post("/chat")
async def chat(request: Request, ctx: Ctx) -> Any:
    body = await parse(request, ChatBody)
    check_unsupported(body)
    await resolve_model(ctx, body.model)
    if not body.messages:
        reason = "unload" if str(body.keep_alive) in ("0", "0.0", "0s") else "load"
        return {
            "model": body.model,
            "created_at": now_iso(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reason,
        }
    messages = [{"role": m.role, "content": m.content} for m in body.messages]
    check_prompt_chars(ctx, sum(len(m["content"]) for m in messages))
    use_rag = ctx.settings.rag_on_compatible_apis if body.rag is None else body.rag
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    payload = {
        "model": body.model,
        "messages": messages,
        "passages": await retrieve(ctx, question) if use_rag else [],
        **options_payload(ctx, body.options),
    }
    generation = await begin(request, ctx, payload, "ollama")

    def final(choice: Choice, streamed: bool) -> dict[str, Any]:
        out = {
            "model": body.model,
            "created_at": now_iso(),
            "message": {"role": "assistant", "content": "" if streamed else choice.text},
            "done": True,
            **stats(choice),
        }
        if choice.start.get("sources"):
            out["sources"] = choice.start["sources"]
        return out

    return await respond(
        generation,
        body.stream,
        lambda text: {
            "model": body.model,
            "created_at": now_iso(),
            "message": {"role": "assistant", "content": text},
            "done": False,
        },
        final,
    )


# Registered last: every other /ollama/api path (embed, pull, create...) is a clear 501.
@api.api_route("/{unsupported:path}", methods=["GET", "POST", "DELETE", "HEAD"], include_in_schema=False)
def unsupported(unsupported: str) -> None:
    raise ServingError(
        501,
        f"/api/{unsupported} is not supported: this server serves the factory's own models",
        "unsupported",
    )
