"""The three conversation formats read into one internal conversation, and what is refused."""

from __future__ import annotations

import json

import pytest

from aifactory.chat.conversation import InvalidConversation, from_record, read_records, validate

QUESTION = "What is the capital of France? Please answer in one short sentence."
ANSWER = "The capital of France is Paris, which is also its largest city."
SYSTEM = "You are a helpful assistant who answers briefly."

OPENAI = {
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": ANSWER},
    ]
}
SHAREGPT = {
    "id": "c1",
    "conversations": [
        {"from": "system", "value": SYSTEM},
        {"from": "human", "value": QUESTION},
        {"from": "gpt", "value": ANSWER},
    ],
}
ALPACA = {"system": SYSTEM, "instruction": QUESTION, "input": "", "output": ANSWER}


def checked(record: dict) -> object:
    return validate(from_record(record), max_chars=10_000, max_turns=16, languages=["en", "ja"])


def test_each_format_round_trips_to_the_same_conversation() -> None:
    openai, sharegpt, alpaca = checked(OPENAI), checked(SHAREGPT), checked(ALPACA)
    assert openai.messages == sharegpt.messages == alpaca.messages
    assert openai.as_messages() == OPENAI["messages"]
    assert {openai.format, sharegpt.format, alpaca.format} == {"openai", "sharegpt", "alpaca"}
    assert openai.content_hash() == sharegpt.content_hash() == alpaca.content_hash()
    assert sharegpt.record_id == "c1" and openai.language == "en"
    # Written back as OpenAI messages and read again: the same conversation.
    again = checked({"messages": alpaca.as_messages()})
    assert again.messages == alpaca.messages


def test_a_short_exchange_of_no_telling_language_is_kept() -> None:
    conversation = checked(
        {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}]}
    )
    assert conversation.language == "und"


def test_alpaca_input_follows_the_instruction() -> None:
    record = {
        "instruction": "Translate this sentence into French please.",
        "input": "Good morning to you.",
        "output": "Bonjour à vous.",
    }
    conversation = from_record(record)
    assert conversation.messages[0] == (
        "user",
        "Translate this sentence into French please.\n\nGood morning to you.",
    )


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"text": "a document"}, "unknown format"),
        ({"messages": [{"role": "user", "content": QUESTION}]}, "at least a user turn and an assistant"),
        (
            {"messages": [{"role": "assistant", "content": ANSWER}, {"role": "user", "content": QUESTION}]},
            "where user was expected",
        ),
        (
            {"messages": [{"role": "user", "content": QUESTION}, {"role": "robot", "content": ANSWER}]},
            "role 'robot'",
        ),
        (
            {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": " "}]},
            "is empty",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": QUESTION},
                    {"from": "gpt", "value": ANSWER},
                    {"from": "human", "value": QUESTION},
                ]
            },
            "last message must be the assistant",
        ),
        (
            {
                "instruction": "Quelle est la capitale de la France, s'il vous plaît ?",
                "output": "La capitale de la France est Paris, bien sûr.",
            },
            "language fr",
        ),
        ({"instruction": QUESTION, "output": "x" * 20_000}, "CHAT_MAX_CHARS"),
    ],
)
def test_invalid_conversations_are_refused_with_the_reason(record: dict, reason: str) -> None:
    with pytest.raises(InvalidConversation, match=reason):
        checked(record)


def test_records_of_jsonl_and_of_a_json_array() -> None:
    lines = "\n".join([json.dumps(OPENAI), "{not json", "", json.dumps(ALPACA)])
    records = list(read_records(lines))
    assert [r.line for r in records] == [1, 2, 4]
    assert records[1].error.startswith("not valid JSON") and records[0].value == OPENAI
    array = list(read_records(json.dumps([SHAREGPT, ALPACA])))
    assert [r.value for r in array] == [SHAREGPT, ALPACA]
