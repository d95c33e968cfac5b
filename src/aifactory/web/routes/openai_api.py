"""The OpenAI-compatible API under /v1, for the openai SDK, LangChain, Open WebUI, lm-evaluation-harness.

    GET  /v1/models                 the models a client can name (latest, best, production when promoted)
    POST /v1/completions            prompt: a string, a list of strings, token ids or a batch of token-id
                                    lists; logprobs (with top_logprobs) and echo; max_tokens 0 only with echo
    POST /v1/chat/completions       messages through the chat template; logprobs / top_logprobs

Streaming is SSE: `data: {chunk}` ... `data: [DONE]`, the usage chunk when `stream_options.include_usage`.
max_tokens above MAX_GENERATE_TOKENS (or absent) is clamped to it and the answer ends with
finish_reason "length", as clients such as lm-evaluation-harness ask for 256 by default. Errors are
OpenAI's error object; an error after the stream began is one `data: {"error": ...}` event.
Extensions: `top_k` and `repetition_penalty` (as vLLM), `rag` on chat (RAG_ON_COMPATIBLE_APIS by
default, never on completions), `sources` in chat answers grounded on the corpus, and the checkpoint
that answered in `system_fingerprint`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from aifactory.serve import catalog
from aifactory.web.auth import ApiKey
from aifactory.web.context import Ctx
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

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[ApiKey])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
OWNER = "aifactory"


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    """Fields both endpoints share. Unknown fields (user, logit_bias on old clients...) are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1, le=100000, description="vLLM extension; 0 or -1 = off.")
    n: int = Field(1, ge=1, le=1, description="One choice per prompt.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="vLLM extension; 1 = off.")
    logit_bias: dict[str, float] | None = None

    def sampling(self) -> dict[str, Any]:
        bias = {}
        for token, value in (self.logit_bias or {}).items():
            if not token.lstrip("-").isdigit() or not -100 <= value <= 100:
                raise ServingError(
                    422,
                    "logit_bias: keys are token ids, values lie in -100..100",
                    "invalid_request",
                    param="logit_bias",
                )
            bias[int(token)] = value
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": max(0, self.top_k),
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty,
            "logit_bias": bias,
        }

    def stops(self) -> list[str]:
        items = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [item for item in items if item][:16]


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    rag: bool | None = Field(None, description="Extension: ground the answer on the corpus.")


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = OWNER
    meta: dict[str, Any] = {}


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


def card(entry: catalog.ModelEntry) -> ModelCard:
    return ModelCard(
        id=entry.name,
        created=int(entry.saved_at),
        meta={
            "checkpoint": entry.checkpoint,
            "step": entry.step,
            "n_params": entry.parameters,
            "n_ctx_train": entry.context_length,
            "size": entry.size_bytes,
        },
    )


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def clamp(ctx: Any, max_tokens: int | None) -> int:
    limit = token_limit(ctx)
    return limit if max_tokens is None else min(max_tokens, limit)


def usage(choices: list[Choice]) -> dict[str, Any]:
    prompt = sum(c.usage.get("prompt_tokens", 0) for c in choices)
    completion = sum(c.usage.get("completion_tokens", 0) for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def timings(choices: list[Choice]) -> dict[str, Any]:
    """llama.cpp-style timings (milliseconds): queue, prompt, first token, decode, total."""
    if not choices:
        return {}
    first = choices[0].timings
    return {
        "prompt_n": sum(c.usage.get("prompt_tokens", 0) for c in choices),
        "prompt_ms": first.get("prompt_ms"),
        "predicted_n": sum(c.usage.get("completion_tokens", 0) for c in choices),
        "predicted_ms": first.get("decode_ms"),
        "time_to_first_token_ms": first.get("time_to_first_token_ms"),
        "total_ms": max(c.timings.get("total_ms", 0.0) for c in choices),
        "truncated_tokens": sum(c.usage.get("truncated_tokens", 0) for c in choices),
    }


@router.get("/models", response_model=ModelList)
def list_models(ctx: Ctx) -> ModelList:
    """The models a client can ask for now; an empty list until training has written a checkpoint."""
    return ModelList(data=[card(entry) for entry in catalog.available(ctx.settings)])


@router.get("/models/{model}", response_model=ModelCard)
async def get_model(model: str, ctx: Ctx) -> ModelCard:
    entry = await resolve_model(ctx, model)
    return card(catalog.ModelEntry(catalog.canonical(model), entry.directory, entry.meta))


# --- completions ----------------------------------------------------------------------------------
def completion_logprobs(entries: list[dict[str, Any]], offset: int = 0) -> dict[str, Any]:
    """OpenAI's legacy logprobs object; the first prompt token has no log-probability (None)."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    position = offset
    for entry in entries:
        tokens.append(entry["text"])
        token_logprobs.append(entry["logprob"])
        if entry["logprob"] is None:
            top.append(None)
        else:
            ranked: dict[str, float] = {}
            for text, logprob, _ in entry["top"]:
                ranked[text] = max(logprob, ranked.get(text, logprob))
            top.append(ranked)
        offsets.append(position)
        position += len(entry.get("span", entry["text"]))
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


def prompts_of(body: CompletionRequest) -> list[str | list[int]]:
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise ServingError(422, "prompt: must not be empty", "invalid_request", param="prompt")
    if all(isinstance(item, int) for item in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


@router.post("/completions", responses={200: {"content": {"text/event-stream": {}}}})
async def completions(body: CompletionRequest, request: Request, ctx: Ctx) -> Any:
    """Text completion (what lm-evaluation-harness's local-completions model calls)."""
    if body.max_tokens == 0 and not body.echo:
        raise ServingError(
            422, "max_tokens: 0 is allowed only with echo", "invalid_request", param="max_tokens"
        )
    if body.suffix:
        raise ServingError(422, "suffix: insertion is not supported", "invalid_request", param="suffix")
    prompts = prompts_of(body)
    if any(isinstance(p, list) and not p for p in prompts):
        raise ServingError(422, "prompt: a token list must not be empty", "invalid_request", param="prompt")
    check_prompt_chars(ctx, sum(len(p) for p in prompts if isinstance(p, str)))
    name = body.model
    await resolve_model(ctx, name)
    payload = {
        "model": name,
        "prompts": prompts,
        "max_tokens": clamp(ctx, body.max_tokens),
        "sampling": body.sampling(),
        "stop": body.stops(),
        "echo": body.echo,
        "logprobs": body.logprobs,
    }
    generation = await begin(request, ctx, payload, "openai")
    ident, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    model = name or "latest"
    if not body.stream:
        try:
            choices = await generation.collect()
        finally:
            await generation.close()
        return {
            "id": ident,
            "object": "text_completion",
            "created": created,
            "model": choices[0].start.get("model", model) if choices else model,
            "system_fingerprint": choices[0].start.get("checkpoint") if choices else None,
            "choices": [completion_choice(choice, body) for choice in choices],
            "usage": usage(choices),
            "timings": timings(choices),
        }
    return StreamingResponse(
        stream_completion(generation, body, ident, created, model),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


def completion_choice(choice: Choice, body: CompletionRequest) -> dict[str, Any]:
    prompt_text = choice.start.get("prompt_text", "") if body.echo else ""
    logprobs = completion_logprobs(choice.logprobs) if body.logprobs is not None else None
    return {
        "index": choice.index,
        "text": prompt_text + choice.text,
        "logprobs": logprobs,
        "finish_reason": choice.finish_reason,
    }


async def stream_completion(
    generation: Generation, body: CompletionRequest, ident: str, created: int, model: str
) -> AsyncIterator[str]:
    base = {"id": ident, "object": "text_completion", "created": created, "model": model}
    offsets: dict[int, int] = {}  # text already sent per choice: where the next token's offset starts
    try:
        async for event in generation.events():
            kind, index = event["event"], event.get("index", 0)
            text, entries = "", event.get("logprobs") or []
            if kind == "start":
                base["model"] = event["model"]
                if not body.echo:
                    continue
                text = event.get("prompt_text", "")
            elif kind == "token":
                text = event["text"]
            elif kind == "end":
                yield sse(
                    {
                        **base,
                        "choices": [
                            {
                                "index": index,
                                "text": "",
                                "logprobs": None,
                                "finish_reason": event["finish_reason"],
                            }
                        ],
                    }
                )
                continue
            elif event.get("final"):
                if body.stream_options and body.stream_options.include_usage:
                    done = list(generation.choices.values())
                    yield sse({**base, "choices": [], "usage": usage(done), "timings": timings(done)})
                continue
            else:
                continue
            logprobs = None
            if body.logprobs is not None:
                logprobs = completion_logprobs(entries, offsets.get(index, 0))
            offsets[index] = offsets.get(index, 0) + len(text)
            if text or logprobs:
                yield sse(
                    {
                        **base,
                        "choices": [
                            {"index": index, "text": text, "logprobs": logprobs, "finish_reason": None}
                        ],
                    }
                )
        yield sse("[DONE]")
    except ServingError as exc:
        yield sse(error_body("openai", exc))
    finally:
        await generation.close()


# --- chat -----------------------------------------------------------------------------------------
def chat_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    def one(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {
        "content": [
            {**one(e["text"], e["logprob"]), "top_logprobs": [one(t, lp) for t, lp, _ in e["top"]]}
            for e in entries
        ]
    }


@router.post("/chat/completions", responses={200: {"content": {"text/event-stream": {}}}})
async def chat_completions(body: ChatRequest, request: Request, ctx: Ctx) -> Any:
    """Chat through the documented template (docs/serving.md); optionally grounded on the corpus."""
    messages = []
    for message in body.messages:
        content = message.content or ""
        if isinstance(content, list):
            content = "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        messages.append(
            {"role": "system" if message.role == "developer" else message.role, "content": content}
        )
    check_prompt_chars(ctx, sum(len(m["content"]) for m in messages))
    name = body.model
    await resolve_model(ctx, name)
    use_rag = ctx.settings.rag_on_compatible_apis if body.rag is None else body.rag
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    payload = {
        "model": name,
        "messages": messages,
        "max_tokens": clamp(ctx, body.max_completion_tokens or body.max_tokens),
        "sampling": body.sampling(),
        "stop": body.stops(),
        "logprobs": (body.top_logprobs or 0) if body.logprobs else None,
        "passages": await retrieve(ctx, question) if use_rag else [],
    }
    generation = await begin(request, ctx, payload, "openai")
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    model = name or "latest"
    if not body.stream:
        try:
            [choice] = await generation.collect()
        finally:
            await generation.close()
        answer: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": choice.start.get("model", model),
            "system_fingerprint": choice.start.get("checkpoint"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": choice.text},
                    "logprobs": chat_logprobs(choice.logprobs) if body.logprobs else None,
                    "finish_reason": choice.finish_reason,
                }
            ],
            "usage": usage([choice]),
            "timings": timings([choice]),
        }
        if choice.start.get("sources"):
            answer["sources"] = choice.start["sources"]
        return answer
    return StreamingResponse(
        stream_chat(generation, body, ident, created, model),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def stream_chat(
    generation: Generation, body: ChatRequest, ident: str, created: int, model: str
) -> AsyncIterator[str]:
    base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    try:
        async for event in generation.events():
            kind = event["event"]
            if kind == "start":
                base["model"] = event["model"]
                first = {
                    **base,
                    "system_fingerprint": event["checkpoint"],
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
                if event.get("sources"):
                    first["sources"] = event["sources"]
                yield sse(first)
            elif kind == "token":
                entries = event.get("logprobs") or []
                if event["text"] or (body.logprobs and entries):
                    yield sse(
                        {
                            **base,
                            "choices": [
                                {
                                    "index": 0,
                                    "delta": {"content": event["text"]},
                                    "logprobs": chat_logprobs(entries) if body.logprobs else None,
                                    "finish_reason": None,
                                }
                            ],
                        }
                    )
            elif kind == "end":
                yield sse(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {},
                                "logprobs": None,
                                "finish_reason": event["finish_reason"],
                            }
                        ],
                    }
                )
            elif event.get("final") and body.stream_options and body.stream_options.include_usage:
                done = list(generation.choices.values())
                yield sse({**base, "choices": [], "usage": usage(done), "timings": timings(done)})
        yield sse("[DONE]")
    except ServingError as exc:
        yield sse(error_body("openai", exc))
    finally:
        await generation.close()
