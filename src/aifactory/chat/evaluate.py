"""The chat part of the evaluation, on held-out conversations (the frozen validation split).

- assistant_loss: the loss (nats per token) on the assistant's tokens of each held-out conversation,
  given everything before them: what chat tuning lowers.
- template_adherence: the share of held-out prompts (the conversation up to its last user turn, then
  `<|assistant|>`, exactly as serving builds it) whose greedy answer ends with `<|end|>` within the
  budget and never writes a turn of its own (`<|user|>`, `<|system|>`, `<|assistant|>` or a BOS)
  before it. A model that has never seen the template continues the text instead and fails this.
- growth prompts: fixed chat prompts in each language (CHAT_GROWTH_PROMPTS), answered greedily at every
  evaluation in the suite's growth-sample shape, so they show the model learning to answer.

`chat_evaluation` runs all three; the evaluation suite (issue #12) calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from aifactory.chat import store
from aifactory.chat.encode import encode_conversation
from aifactory.db.database import Database
from aifactory.model.llama import KVCache, Transformer
from aifactory.serve.template import ASSISTANT, END, SYSTEM, USER, TokenizerLike, render_chat
from aifactory.settings import Settings

HELD_OUT_LIMIT = 50  # conversations per evaluation: their greedy answers are the part's cost

# Chat growth samples: (id, language, question), answered greedily in the chat template at every
# evaluation beside the evaluation suite's text growth prompts (the same record shape). Never edited.
CHAT_GROWTH_PROMPTS: tuple[tuple[str, str, str], ...] = (
    ("growth-chat-ja-1", "ja", "日本の首都はどこですか？"),
    ("growth-chat-ja-2", "ja", "川について教えてください。"),
    ("growth-chat-en-1", "en", "What is the capital of Japan?"),
    ("growth-chat-en-2", "en", "Tell me about rivers."),
)


@dataclass
class ChatEvaluation:
    conversations: int  # held-out conversations evaluated
    assistant_loss: float  # nats per assistant token
    assistant_tokens: int
    template_adherence: float  # 0..1
    ended: int  # answers that ended with <|end|> within the budget
    wrote_turn: int  # answers that wrote a turn marker (a user turn, mostly) first
    budget: int
    growth: list[dict[str, str]] = field(default_factory=list)  # the chat growth prompts' answers

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@torch.no_grad()
def assistant_loss(
    model: Transformer, tokenizer: TokenizerLike, conversations: Sequence[Sequence[dict[str, str]]]
) -> tuple[float, int]:
    """(mean loss over the assistant tokens, how many), each conversation cut to the model's context."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    model.eval()
    for messages in conversations:
        ids, mask = encode_conversation(tokenizer, messages)
        ids, mask = ids[: model.config.max_seq_len + 1], mask[: model.config.max_seq_len + 1]
        tokens = torch.from_numpy(ids.astype("int64")).to(device)[None]
        learn = torch.from_numpy(mask[1:]).to(device)[None]
        if not bool(learn.any()):
            continue
        targets = tokens[:, 1:].masked_fill(~learn, -1)
        losses = model(tokens[:, :-1], targets, reduction="none").float()
        total += float(losses[learn].sum())
        count += int(learn.sum())
    return (total / count if count else float("nan")), count


@torch.no_grad()
def greedy(model: Transformer, prompt: list[int], budget: int, stop: set[int]) -> list[int]:
    """Up to `budget` greedily chosen tokens after `prompt`, stopping after a token in `stop`."""
    device = next(model.parameters()).device
    room = model.config.max_seq_len
    prompt = prompt[-max(1, room - budget) :]
    cache = KVCache(model.config, 1, len(prompt) + budget, device)
    model.eval()
    logits = model(torch.tensor([prompt], device=device), cache=cache)
    out: list[int] = []
    for _ in range(budget):
        token = int(logits[0, -1].argmax())
        out.append(token)
        if token in stop:
            break
        logits = model(torch.tensor([[token]], device=device), cache=cache)
    return out


def prompt_of(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation up to (not including) its last assistant turn."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return list(messages[:last])


def template_adherence(
    model: Transformer,
    tokenizer: TokenizerLike,
    conversations: Sequence[Sequence[dict[str, str]]],
    budget: int,
    progress: Callable[[float], None] | None = None,
) -> tuple[float, int, int]:
    """(share of adherent answers, answers ending with <|end|>, answers that wrote a turn first)."""
    end = tokenizer.special_ids[END]
    turns = {tokenizer.special_ids[m] for m in (USER, SYSTEM, ASSISTANT)} | {tokenizer.bos_id}
    ended = wrote = 0
    for number, messages in enumerate(conversations):
        if progress is not None:
            progress(number / len(conversations))  # may raise: the suite's stop and time budget
        answer = greedy(
            model, render_chat(tokenizer, prompt_of(messages)), budget, turns | {end, tokenizer.eos_id}
        )
        if answer and answer[-1] == end:
            ended += 1
        elif answer and answer[-1] in turns:
            wrote += 1
    return (ended / len(conversations) if conversations else float("nan")), ended, wrote


def growth_answers(model: Transformer, tokenizer: Any, budget: int) -> list[dict[str, str]]:
    """Each chat growth prompt with its greedy answer: {id, language, prompt, output} (`tokenizer`
    also decodes)."""
    end = tokenizer.special_ids[END]
    out = []
    for prompt_id, language, question in CHAT_GROWTH_PROMPTS:
        prompt = render_chat(tokenizer, [{"role": "user", "content": question}])
        ids = greedy(model, prompt, budget, {end, tokenizer.eos_id})
        text = tokenizer.decode([i for i in ids if i not in (end, tokenizer.eos_id)])
        out.append({"id": prompt_id, "language": language, "prompt": question, "output": text})
    return out


def chat_evaluation(
    model: Transformer,
    tokenizer: TokenizerLike,
    conversations: Sequence[Sequence[dict[str, str]]],
    *,
    budget: int,
    growth: bool = True,
    progress: Callable[[float], None] | None = None,
) -> ChatEvaluation:
    loss, tokens = assistant_loss(model, tokenizer, conversations)
    adherence, ended, wrote = template_adherence(model, tokenizer, conversations, budget, progress)
    return ChatEvaluation(
        conversations=len(conversations),
        assistant_loss=loss,
        assistant_tokens=tokens,
        template_adherence=adherence,
        ended=ended,
        wrote_turn=wrote,
        budget=budget,
        growth=growth_answers(model, tokenizer, budget) if growth else [],
    )


def held_out_conversations(db: Database, limit: int = HELD_OUT_LIMIT) -> list[list[dict[str, str]]]:
    """The validation split's conversations (ingested first: they are what the user asked for)."""
    ingested = store.load(db, split=store.VAL, synthetic=False, limit=limit)
    synthetic = store.load(db, split=store.VAL, synthetic=True, limit=max(0, limit - len(ingested)))
    return [c.messages for c in [*ingested, *synthetic]]


def has_chat_tokens(tokenizer: Any) -> bool:
    """Whether the tokenizer has the template's control tokens (a byte-level stand-in has none)."""
    special = getattr(tokenizer, "special_ids", {})
    return all(isinstance(special.get(m), int) and special[m] >= 0 for m in (USER, ASSISTANT, END))


def chat_part(
    settings: Settings,
    db: Database,
    model: Transformer,
    tokenizer: Any,
    limit: int = HELD_OUT_LIMIT,
    progress: Callable[[float], None] | None = None,
) -> ChatEvaluation | None:
    """The evaluation suite's chat part (without growth samples: the suite asks `growth_answers` for
    those); None while there are no held-out conversations."""
    conversations = held_out_conversations(db, limit)
    if not conversations or not has_chat_tokens(tokenizer):
        return None
    return chat_evaluation(
        model, tokenizer, conversations, budget=settings.eval_max_tokens, growth=False, progress=progress
    )
