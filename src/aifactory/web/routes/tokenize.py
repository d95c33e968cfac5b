"""vLLM-style tokenizer endpoints at the server root, so lm-evaluation-harness needs no tokenizer files.

    GET  /tokenizer_info   eos/bos/pad tokens, the chat template, the context length
    POST /tokenize         {"prompt" | "messages", "add_special_tokens"} -> {"tokens", "count", ...}
    POST /detokenize       {"tokens"} -> {"prompt"}

They use the tokenizer of the model named by `model` (default: the default model), read by the web
process itself (SentencePiece, no torch). `add_special_tokens` adds BOS, as the model was trained;
control tokens never come from text: "</s>" in a prompt is tokenized as the text it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from aifactory.serve import catalog
from aifactory.serve.template import CHAT_TEMPLATE_JINJA, normalize_messages, render_chat
from aifactory.web.auth import ApiKey
from aifactory.web.context import AppContext, Ctx
from aifactory.web.errors import ServingError
from aifactory.web.serving import check_prompt_chars, model_entry

router = APIRouter(tags=["openai"], dependencies=[ApiKey])


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    tokens: list[int] = Field(default_factory=list)


class DetokenizeResponse(BaseModel):
    prompt: str


def tokenizer(ctx: AppContext, name: str | None) -> tuple[Any, catalog.ModelEntry]:
    entry = model_entry(ctx, name)
    try:
        return catalog.tokenizer_for(ctx.settings, entry), entry
    except catalog.ModelNotFound as exc:
        raise ServingError(503, str(exc), "tokenizer_missing") from None


@router.get("/tokenizer_info")
def tokenizer_info(ctx: Ctx, model: str | None = Query(None)) -> dict[str, Any]:
    """What a client needs to tokenize like the server: special tokens, chat template, context."""
    tok, entry = tokenizer(ctx, model)
    return {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_id,
        "add_bos_token": True,
        "add_eos_token": False,
        "chat_template": CHAT_TEMPLATE_JINJA,
        "model_max_length": entry.context_length,
        "vocab_size": tok.vocab_size,
        "tokenizer_hash": tok.hash,
    }


@router.post("/tokenize", response_model=TokenizeResponse)
def tokenize(body: TokenizeRequest, ctx: Ctx) -> TokenizeResponse:
    tok, entry = tokenizer(ctx, body.model)
    if body.messages is not None:
        messages = normalize_messages(body.messages)
        check_prompt_chars(ctx, sum(len(m["content"]) for m in messages))
        try:
            ids = render_chat(tok, messages, generation_prompt=body.add_generation_prompt)
        except (KeyError, ValueError) as exc:
            raise ServingError(422, f"messages: {exc}", "invalid_request", param="messages") from None
        if not body.add_special_tokens:
            ids = ids[1:]
    elif body.prompt is not None:
        check_prompt_chars(ctx, len(body.prompt))
        ids = ([tok.bos_id] if body.add_special_tokens else []) + tok.encode(body.prompt)
    else:
        raise ServingError(422, "prompt: give a prompt or messages", "invalid_request", param="prompt")
    return TokenizeResponse(count=len(ids), max_model_len=entry.context_length, tokens=ids)


@router.post("/detokenize", response_model=DetokenizeResponse)
def detokenize(body: DetokenizeRequest, ctx: Ctx) -> DetokenizeResponse:
    tok, _ = tokenizer(ctx, body.model)
    bad = [t for t in body.tokens if not 0 <= t < tok.vocab_size]
    if bad:
        raise ServingError(
            422,
            f"tokens: ids must lie in 0..{tok.vocab_size - 1}; got {bad[:5]}",
            "invalid_request",
            param="tokens",
        )
    return DetokenizeResponse(prompt=tok.decode(body.tokens))
