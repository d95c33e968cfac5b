"""Small conversation sets for the chat tests and the benchmark: short questions with short answers,
in English and Japanese, varied enough that the held-out ones are new to the model."""

from __future__ import annotations

import random

from aifactory.chat import store
from aifactory.chat.conversation import Conversation
from aifactory.db import policies as policy_db
from aifactory.db.database import Database

THINGS_EN = "river bird garden bridge market teacher forest mountain lake harbour train library".split()
COLOURS_EN = "red blue green yellow white black brown grey".split()
THINGS_JA = ["川", "鳥", "庭", "橋", "森", "山", "湖", "港", "駅", "図書館"]
COLOURS_JA = ["赤", "青", "緑", "黄色", "白", "黒"]


def conversation_set(count: int, seed: int = 0) -> list[Conversation]:
    rng = random.Random(seed)
    out = []
    for number in range(count):
        if number % 4 == 3:
            thing, colour = rng.choice(THINGS_JA), rng.choice(COLOURS_JA)
            question, answer, language = f"{thing}は何色ですか？", f"{thing}は{colour}です。", "ja"
        else:
            thing, colour = rng.choice(THINGS_EN), rng.choice(COLOURS_EN)
            other = rng.choice(THINGS_EN)
            if number % 2:
                question, answer = f"What colour is the {thing}?", f"The {thing} is {colour}."
            else:
                question, answer = f"Where is the {thing}?", f"The {thing} is near the {other}."
            language = "en"
        out.append(
            Conversation(
                messages=(("user", question), ("assistant", answer)), format="openai", language=language
            )
        )
    return out


def add_conversations(
    db: Database, conversations: list[Conversation], *, val_fraction: float = 0.2, origin: str = "test.jsonl"
) -> None:
    items = [store.Keyed(f"{origin}#line:{n}", origin, c) for n, c in enumerate(conversations, 1)]
    store.store(db, items, policy_db.load(db), val_fraction=val_fraction)
