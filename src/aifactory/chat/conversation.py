"""One conversation, whatever file it came from: the three formats people have, read into one shape.

    OpenAI    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
    ShareGPT  {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}
    Alpaca    {"instruction": "...", "input": "...", "output": "..."}

A file is JSONL (one record a line) or, for ShareGPT and Alpaca as they are usually shared, one JSON
array of records. Every conversation becomes a list of {role, content} messages in the serving
template's roles (serve/template.py): an optional system turn first, then user and assistant turns
taking turns, ending with an assistant turn (the one the model learns to write). Anything else is
refused with the reason, never repaired silently: a training example with its roles mixed up teaches
the model to write user turns.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aifactory.text.language import detect_language

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
}
FORMATS = ("openai", "sharegpt", "alpaca")


class InvalidConversation(ValueError):
    """A record that is not a conversation the factory can train on; the message says why."""


@dataclass(frozen=True)
class Conversation:
    messages: tuple[tuple[str, str], ...]  # (role, content), in the template's roles
    format: str  # openai, sharegpt, alpaca; definition or howto for synthetic ones
    record_id: str = ""  # the record's own id, when it has one (ShareGPT "id")
    source_url: str = ""  # where its text comes from, when known (a record's "url", a synthetic's page)
    synthetic: bool = False
    language: str = "und"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    @property
    def chars(self) -> int:
        return sum(len(content) for _, content in self.messages)

    def content_hash(self) -> bytes:
        """Exact-duplicate key: the roles and texts, whitespace- and case-folded (as documents)."""
        folded = "\x1e".join(
            f"{role}\x1f{' '.join(content.lower().split())}" for role, content in self.messages
        )
        return hashlib.sha256(folded.encode("utf-8", "surrogatepass")).digest()[:16]


def detect_format(record: Any) -> str:
    if not isinstance(record, dict):
        raise InvalidConversation(f"a record must be a JSON object, not {type(record).__name__}")
    if "messages" in record:
        return "openai"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    keys = ", ".join(sorted(record)[:6]) or "none"
    raise InvalidConversation(
        f"unknown format (keys: {keys}): expected messages (OpenAI), conversations (ShareGPT) "
        "or instruction/output (Alpaca)"
    )


def _text(value: Any, what: str) -> str:
    if isinstance(value, list):  # OpenAI's list of content parts
        value = "".join(part.get("text", "") for part in value if isinstance(part, dict))
    if not isinstance(value, str):
        raise InvalidConversation(f"{what} must be text, not {type(value).__name__}")
    return value.strip()


def from_record(record: Any) -> Conversation:
    """The conversation in one record of any of the three formats (not yet validated)."""
    kind = detect_format(record)
    if kind == "openai":
        raw = record["messages"]
        if not isinstance(raw, list):
            raise InvalidConversation("messages must be a list")
        messages = []
        for number, message in enumerate(raw, 1):
            if not isinstance(message, dict) or "role" not in message:
                raise InvalidConversation(f"message {number} has no role")
            role = str(message["role"]).lower()
            if role not in ROLES:
                raise InvalidConversation(
                    f"message {number} has role {message['role']!r}: use {', '.join(ROLES)}"
                )
            messages.append((role, _text(message.get("content") or "", f"message {number}'s content")))
    elif kind == "sharegpt":
        raw = record["conversations"]
        if not isinstance(raw, list):
            raise InvalidConversation("conversations must be a list")
        messages = []
        for number, message in enumerate(raw, 1):
            if not isinstance(message, dict) or "from" not in message:
                raise InvalidConversation(f"turn {number} has no 'from'")
            role = SHAREGPT_ROLES.get(str(message["from"]).lower())
            if role is None:
                raise InvalidConversation(
                    f"turn {number} is from {message['from']!r}: use human, gpt or system"
                )
            messages.append((role, _text(message.get("value") or "", f"turn {number}'s value")))
    else:
        instruction = _text(record.get("instruction") or "", "instruction")
        extra_input = _text(record.get("input") or "", "input")
        question = (
            f"{instruction}\n\n{extra_input}" if instruction and extra_input else instruction or extra_input
        )
        messages = []
        if record.get("system"):
            messages.append(("system", _text(record["system"], "system")))
        messages += [("user", question), ("assistant", _text(record.get("output") or "", "output"))]
    url = record.get("url") or record.get("source_url") or ""
    return Conversation(
        messages=tuple(messages),
        format=kind,
        record_id=str(record.get("id") or "")[:200],
        source_url=str(url)[:2000] if isinstance(url, str) else "",
    )


def validate(
    conversation: Conversation, *, max_chars: int, max_turns: int, languages: list[str]
) -> Conversation:
    """The conversation with its language, or InvalidConversation saying what is wrong with it."""
    messages = conversation.messages
    if len(messages) > max_turns:
        raise InvalidConversation(f"{len(messages)} messages, more than CHAT_MAX_TURNS ({max_turns})")
    turns = list(messages)
    if turns and turns[0][0] == "system":
        turns = turns[1:]
    if len(turns) < 2:
        raise InvalidConversation("needs at least a user turn and an assistant turn")
    for number, (role, content) in enumerate(messages, 1):
        if not content:
            raise InvalidConversation(f"message {number} ({role}) is empty")
    for number, (role, _) in enumerate(turns):
        expected = "user" if number % 2 == 0 else "assistant"
        if role != expected:
            where = number + 1 + (len(messages) - len(turns))
            raise InvalidConversation(
                f"message {where} is {role} where {expected} was expected (turns must alternate, "
                "user first, system only first)"
            )
    if turns[-1][0] != "assistant":
        raise InvalidConversation("the last message must be the assistant's answer")
    if conversation.chars > max_chars:
        raise InvalidConversation(
            f"{conversation.chars:,} characters, more than CHAT_MAX_CHARS ({max_chars:,})"
        )
    language = conversation.language
    if language == "und":
        language = detect_language(" ".join(content for _, content in messages)).code
    # "und": too little text to tell ("Hi!" / "Hello."): short exchanges are still the template.
    if languages and language not in languages and language != "und":
        raise InvalidConversation(f"language {language}, not in TRAIN_LANG_ONLY ({','.join(languages)})")
    return Conversation(
        messages=messages,
        format=conversation.format,
        record_id=conversation.record_id,
        source_url=conversation.source_url,
        synthetic=conversation.synthetic,
        language=language,
    )


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line of a JSONL file, or position in a JSON array
    value: Any = None
    error: str = ""  # not JSON: why


def read_records(text: str) -> Iterator[Record]:
    """Records of a JSONL file, or of a file holding one JSON array; a line that is not JSON is a
    Record with its error (the rest of the file is still read)."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("["):
        try:
            array = json.loads(stripped)
        except json.JSONDecodeError as exc:
            yield Record(
                exc.lineno, error=f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            )
            return
        except (ValueError, RecursionError) as exc:  # nested too deep, a number too long
            yield Record(1, error=f"not valid JSON: {type(exc).__name__}: {str(exc)[:200]}")
            return
        for number, value in enumerate(array, 1):
            yield Record(number, value)
        return
    # Lines end at "\n" only: U+2028, U+2029 and U+0085 may stand unescaped inside JSON strings
    # (json.dumps(ensure_ascii=False) writes them so), and str.splitlines() would cut a record there.
    for number, line in enumerate(io.StringIO(text.lstrip("\ufeff"), newline="\n"), 1):
        if not line.strip():
            continue
        try:
            yield Record(number, json.loads(line))
        except json.JSONDecodeError as exc:
            yield Record(number, error=f"not valid JSON: {exc.msg} at column {exc.colno}")
        except (ValueError, RecursionError) as exc:
            yield Record(number, error=f"not valid JSON: {type(exc).__name__}: {str(exc)[:200]}")
