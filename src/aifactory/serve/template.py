"""The one chat template, and how a prompt is assembled to fit the context.

    <s><|system|>SYSTEM<|end|><|user|>QUESTION<|end|><|assistant|>ANSWER<|end|><|user|>...<|assistant|>

- `<s>` (BOS) is not part of the template: it is added once, by id, as in training (every training
  document is `<s> text </s>`). The markers are the tokenizer's control tokens, inserted by id; the text
  of a message is encoded as text, and SentencePiece never turns text into a control token, so a message
  containing "<|user|>" cannot forge a turn. No newlines or spaces are added around the markers.
- A turn ends with `<|end|>`; generation stops at `<|end|>` or `</s>`.
- Roles are system, user and assistant. Retrieved passages (RAG) go into the system turn.

CHAT_TEMPLATE_JINJA is the same template in Jinja, OLLAMA_TEMPLATE for an Ollama Modelfile;
docs/serving.md shows all three. Exports carry CHAT_TEMPLATE_JINJA with `{{ bos_token }}` in front
(export/template.py says why: transformers' apply_chat_template adds no BOS of its own).

A prompt longer than the context is cut from the left, keeping room for the answer: plain text keeps its
last tokens; a chat drops its oldest turns first (never the system turn or the last message). The number
of tokens cut is reported. With `echo` a cut is refused instead (PromptTooLong): the returned
log-probabilities would no longer line up with the prompt the client sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

ROLES = ("system", "user", "assistant")
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
MARKERS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}

CHAT_TEMPLATE_JINJA = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
OLLAMA_TEMPLATE = "{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}<|end|>{{ end }}<|assistant|>"
STOP_STRINGS = (END, "</s>")  # for tools that stop on text (Ollama PARAMETER stop)
SOURCES_HEADER = "Sources:"


class PromptTooLong(ValueError):
    """An echo prompt does not fit the context (a cut would misalign its log-probabilities)."""


class TokenizerLike(Protocol):
    bos_id: int
    eos_id: int
    special_ids: dict[str, int]

    def encode(self, text: str) -> list[int]: ...


@dataclass
class Passage:
    url: str
    title: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"url": self.url, "title": self.title, "passage": self.text}


@dataclass
class Prompt:
    ids: list[int]
    truncated: int = 0  # tokens cut from the left to fit
    sources: list[Passage] = field(default_factory=list)  # the passages that made it into the prompt
    text: str = ""  # the prompt as text (for echo)


def stop_ids(tokenizer: TokenizerLike) -> set[int]:
    return {tokenizer.eos_id, tokenizer.special_ids[END]}


def passage_block(passages: Sequence[Passage]) -> str:
    """How retrieved passages are shown to the model: numbered, title first, as plain text."""
    lines = [SOURCES_HEADER]
    for number, passage in enumerate(passages, 1):
        title = passage.title.strip() or passage.url
        lines.append(f"[{number}] {title}\n{passage.text.strip()}")
    return "\n\n".join(lines)


def turn_ids(tokenizer: TokenizerLike, role: str, content: str) -> list[int]:
    if role not in MARKERS:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    marker, end = tokenizer.special_ids[MARKERS[role]], tokenizer.special_ids[END]
    return [marker, *tokenizer.encode(content), end]


def render_chat(
    tokenizer: TokenizerLike, messages: Sequence[dict[str, str]], *, generation_prompt: bool = True
) -> list[int]:
    """The template applied to `messages`, BOS first (what CHAT_TEMPLATE_JINJA + add_bos_token gives)."""
    ids = [tokenizer.bos_id]
    for message in messages:
        ids += turn_ids(tokenizer, message["role"], message["content"])
    if generation_prompt:
        ids.append(tokenizer.special_ids[ASSISTANT])
    return ids


def _room(context: int, max_tokens: int) -> int:
    """Prompt tokens that fit while leaving room for the answer (at most half the context for it)."""
    return max(1, context - min(max_tokens, context // 2))


def _choose_passages(
    tokenizer: TokenizerLike, passages: Sequence[Passage], budget: int
) -> tuple[list[Passage], list[int]]:
    """The best-ranked passages whose block fits `budget` tokens (passages come ranked best first)."""
    chosen: list[Passage] = []
    ids: list[int] = []
    for passage in passages:
        candidate = [*chosen, passage]
        encoded = tokenizer.encode(passage_block(candidate))
        if len(encoded) > budget:
            break
        chosen, ids = candidate, encoded
    return chosen, ids


def text_prompt(
    tokenizer: TokenizerLike,
    text: str,
    *,
    context: int,
    max_tokens: int,
    passages: Sequence[Passage] = (),
    echo: bool = False,
) -> Prompt:
    """A completion prompt: BOS, the passages (if any, when they fit), the text; cut from the left."""
    room = context if echo else _room(context, max_tokens)
    body = tokenizer.encode(text)
    budget = max(0, min(room // 2, room - 1 - len(body) - 2))  # the prompt's own text comes first
    sources, block = _choose_passages(tokenizer, passages, budget) if passages else ([], [])
    if block:
        block = block + tokenizer.encode("\n\n")
    ids = [tokenizer.bos_id, *block, *body]
    return _cut_left(ids, room, keep=1, echo=echo, sources=sources, text=text)


def ids_prompt(ids: Sequence[int], *, context: int, max_tokens: int, echo: bool) -> Prompt:
    """Token ids sent by the client, used as they are (no BOS added: the client chose them)."""
    room = context if echo else _room(context, max_tokens)
    return _cut_left(list(ids), room, keep=0, echo=echo, sources=[], text="")


def chat_prompt(
    tokenizer: TokenizerLike,
    messages: Sequence[dict[str, str]],
    *,
    context: int,
    max_tokens: int,
    passages: Sequence[Passage] = (),
) -> Prompt:
    """A chat prompt. The system turn (with the passages that fit) and the last message always stay;
    the oldest other turns are dropped until the rest fits, then the tokens are cut from the left."""
    room = _room(context, max_tokens)
    system = [m["content"] for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    system_text = "\n\n".join(system)
    rendered = [turn_ids(tokenizer, m["role"], m["content"]) for m in turns]
    tail = [tokenizer.special_ids[ASSISTANT]]

    def head(sources_text: str) -> list[int]:
        content = "\n\n".join(part for part in (system_text, sources_text) if part)
        return [tokenizer.bos_id, *(turn_ids(tokenizer, "system", content) if content else [])]

    fixed = len(head("")) + len(tail) + (len(rendered[-1]) if rendered else 0)
    sources: list[Passage] = []
    if passages:
        sources, _ = _choose_passages(tokenizer, passages, max(0, min(room // 2, room - fixed) - 4))
    prefix = head(passage_block(sources) if sources else "")
    dropped = 0
    while len(rendered) > 1 and len(prefix) + sum(map(len, rendered)) + len(tail) > room:
        dropped += len(rendered.pop(0))
    ids = [*prefix, *(token for turn in rendered for token in turn), *tail]
    prompt = _cut_left(ids, room, keep=len(prefix), echo=False, sources=sources, text="")
    prompt.truncated += dropped
    return prompt


def _cut_left(
    ids: list[int], room: int, *, keep: int, echo: bool, sources: list[Passage], text: str
) -> Prompt:
    if len(ids) <= room:
        return Prompt(ids=ids, sources=sources, text=text)
    if echo:
        raise PromptTooLong(
            f"the prompt has {len(ids)} tokens but the model's context holds {room}; with echo it "
            "cannot be shortened (the log-probabilities would not match the prompt sent)"
        )
    keep = min(keep, room - 1) if room > 1 else 0
    cut = len(ids) - room
    return Prompt(ids=ids[:keep] + ids[keep + cut :], truncated=cut, sources=sources, text=text)


def normalize_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """Messages as {role, content} with text content (OpenAI's list-of-parts content is joined)."""
    out = []
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(
                part.get("text", "")
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        out.append({"role": role, "content": str(content)})
    return out
