"""The native API (the original's): POST /api/generate, with RAG on by default and SSE streaming.

    POST /api/generate {prompt, max_tokens, temperature, top_k, top_p, repetition_penalty, rag, stream,
                        seed, stop, model}
    -> {status, text, sources, usage, model, checkpoint, finish_reason}

With `stream: true` the answer is Server-Sent Events: `{"type": "start", sources, model, ...}`, then
`{"type": "token", "text": ...}` per piece of text, then `{"type": "done", ...the full answer...}`;
an error after the stream began is `{"type": "error", "message": ...}`. Unlike the OpenAI and Ollama
APIs, max_tokens outside 1..MAX_GENERATE_TOKENS is a 422 (the original's contract).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from aifactory.web.auth import ApiKey
from aifactory.web.context import Ctx
from aifactory.web.serving import (
    Choice,
    ServingError,
    begin,
    check_prompt_chars,
    error_body,
    resolve_model,
    retrieve,
    token_limit,
    usage_fields,
)

router = APIRouter(tags=["generate"], dependencies=[ApiKey])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1, description="The text to continue.")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Tokens to generate, 1..MAX_GENERATE_TOKENS (default SERVE_DEFAULT_MAX_TOKENS).",
    )
    temperature: float = Field(0.8, ge=0, le=2, description="0 = greedy (always the most likely token).")
    top_k: int = Field(50, ge=0, le=1000, description="Sample among the k most likely tokens; 0 = all.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling: the smallest set with this mass.")
    repetition_penalty: float = Field(1.08, ge=1, le=2, description="1 = off; >1 discourages repeating.")
    rag: bool | None = Field(None, description="Ground the answer on the corpus (default: ENABLE_RAG).")
    stream: bool = Field(False, description="Server-Sent Events of the text as it is generated.")
    seed: int | None = Field(None, ge=0, description="Same seed and settings = same text.")
    stop: list[str] | str | None = Field(None, description="Stop before any of these strings.")
    model: str | None = Field(None, description="latest, best, production or vN (default: see docs).")


class Source(BaseModel):
    url: str
    title: str
    passage: str


class GenerateUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    truncated_tokens: int = Field(description="Prompt tokens cut from the left to fit the context.")
    time_to_first_token_ms: float | None
    total_ms: float | None


class GenerateResponse(BaseModel):
    status: str = "success"
    text: str
    sources: list[Source]
    usage: GenerateUsage
    model: str
    checkpoint: str = Field(description="The checkpoint that answered (changes when the model is switched).")
    finish_reason: str | None = Field(description="stop (end of text or a stop string) or length.")


def stops(value: list[str] | str | None) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    return [item for item in items if item][:16]


def result(choice: Choice) -> dict[str, Any]:
    return GenerateResponse(
        text=choice.text,
        sources=[Source(**s) for s in choice.start.get("sources", [])],
        usage=GenerateUsage(**usage_fields([choice])),
        model=choice.start.get("model", ""),
        checkpoint=choice.start.get("checkpoint", ""),
        finish_reason=choice.finish_reason,
    ).model_dump()


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post(
    "/api/generate",
    response_model=GenerateResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 422: {}, 503: {}},
)
async def generate(body: GenerateRequest, request: Request, ctx: Ctx) -> Any:
    """Continue `prompt`, grounded on the most relevant passages of the corpus when `rag` is on."""
    limit = token_limit(ctx)
    if body.max_tokens is not None and body.max_tokens > limit:
        raise ServingError(
            422,
            f"max_tokens: must be at most {limit} (MAX_GENERATE_TOKENS)",
            "invalid_request",
            param="max_tokens",
        )
    check_prompt_chars(ctx, len(body.prompt))
    await resolve_model(ctx, body.model)
    use_rag = ctx.settings.enable_rag if body.rag is None else body.rag
    payload = {
        "model": body.model,
        "prompts": [body.prompt],
        "max_tokens": body.max_tokens or min(ctx.settings.serve_default_max_tokens, limit),
        "sampling": {
            "temperature": body.temperature,
            "top_k": body.top_k,
            "top_p": body.top_p,
            "repetition_penalty": body.repetition_penalty,
            "seed": body.seed,
        },
        "stop": stops(body.stop),
        "passages": await retrieve(ctx, body.prompt) if use_rag else [],
    }
    generation = await begin(request, ctx, payload, "native")
    if not body.stream:
        try:
            [choice] = await generation.collect()
        finally:
            await generation.close()
        return result(choice)

    async def events() -> AsyncIterator[str]:
        try:
            async for event in generation.events():
                if event["event"] == "start":
                    yield sse(
                        {
                            "type": "start",
                            "model": event["model"],
                            "checkpoint": event["checkpoint"],
                            "sources": event["sources"],
                        }
                    )
                elif event["event"] == "token" and event["text"]:
                    yield sse({"type": "token", "text": event["text"]})
                elif event.get("final"):
                    yield sse({"type": "done", **result(generation.choices[0])})
        except ServingError as exc:
            yield sse({"type": "error", **error_body("native", exc)})
        finally:
            await generation.close()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
