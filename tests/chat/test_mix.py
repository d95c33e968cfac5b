"""Conversation windows in the trainer's batches: the serving template, the loss on assistant tokens
only, the mix ratio and the synthetic share, the mix recorded in checkpoints."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aifactory.chat.conversation import Conversation
from aifactory.chat.encode import encode_conversation
from aifactory.chat.mix import ChatMixSource, with_chat_mix
from aifactory.dataset.builder import build
from aifactory.dataset.source import open_source
from aifactory.dataset.tokenizer import Tokenizer
from aifactory.db.database import Database
from aifactory.serve.template import END, render_chat
from aifactory.settings import Settings
from aifactory.train.loader import Batch
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer
from tests.chat.helpers import add_conversations, conversation_set
from tests.dataset.helpers import SMALL
from tests.train.tiny import TINY

MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is a river?"},
    {"role": "assistant", "content": "Water that flows to the sea."},
    {"role": "user", "content": "And a lake?"},
    {"role": "assistant", "content": "Water that stays in one place."},
]


def test_the_loss_mask_covers_assistant_tokens_only(tokenizer: Tokenizer) -> None:
    ids, mask = encode_conversation(tokenizer, MESSAGES)
    assert ids.tolist() == render_chat(tokenizer, MESSAGES, generation_prompt=False)  # serving's template
    expected: list[bool] = [False]  # BOS
    for message in MESSAGES:
        content = tokenizer.encode(message["content"])
        learn = message["role"] == "assistant"
        expected += [False] + [learn] * len(content) + [learn]  # marker, content, <|end|>
    assert mask.tolist() == expected
    learnt = ids[mask].tolist()
    end = tokenizer.special_ids[END]
    assert learnt.count(end) == 2 and tokenizer.decode([t for t in learnt if t != end]) == (
        "Water that flows to the sea.Water that stays in one place."
    )
    # As the trainer sees it: targets the loss ignores are -1, the rest are the assistant's tokens.
    batch = Batch(torch.from_numpy(ids.astype(np.int64))[None], torch.from_numpy(mask)[None, 1:])
    targets = batch.targets[0]
    assert targets[targets >= 0].tolist() == learnt


def mixed_settings(make_settings: Any, db: Database, **overrides: Any) -> Settings:
    return make_settings(database_url=db.url, **{**SMALL, **TINY, **overrides})


def test_batches_mix_conversations_at_the_ratio_and_bound_the_synthetic_share(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    add_conversations(corpus_db, conversation_set(20))
    synthetic = [
        Conversation((("user", f"Tell me: {c.messages[0][1]}"), c.messages[1]), "definition", synthetic=True)
        for c in conversation_set(180, seed=1)
    ]
    add_conversations(corpus_db, synthetic, origin="corpus")
    tiny = mixed_settings(make_settings, corpus_db, chat_mix_ratio=0.25, chat_synthetic_max_share=0.3)
    source = with_chat_mix(tiny, open_source(tiny, corpus_db))
    assert isinstance(source, ChatMixSource) and source.synthetic_share() == 0.3
    batch = source.train_batch(4000, 32, torch.Generator().manual_seed(0))
    bos = tokenizer.bos_id
    chat = ~batch.loss_mask.all(1)
    assert abs(float(chat.float().mean()) - 0.25) < 0.03
    assert bool((batch.tokens[chat, 0] == bos).all())  # a conversation window starts at its start
    again = source.train_batch(4000, 32, torch.Generator().manual_seed(0))
    assert torch.equal(again.tokens, batch.tokens) and torch.equal(again.loss_mask, batch.loss_mask)
    # A DDP rank builds only its rows, and they are exactly those rows of the whole batch.
    generator = torch.Generator().manual_seed(0)
    mine = source.train_batch(4000, 32, generator, rows=slice(1000, 2000))
    assert torch.equal(mine.tokens, batch.tokens[1000:2000])
    assert torch.equal(mine.loss_mask, batch.loss_mask[1000:2000])
    whole = torch.Generator().manual_seed(0)
    source.train_batch(4000, 32, whole)
    assert torch.equal(generator.get_state(), whole.get_state())  # every rank's generator moves alike
    counts = {"synthetic": 0, "ingested": 0}
    for row in torch.nonzero(chat).flatten().tolist():
        ids = batch.tokens[row].tolist()
        question = tokenizer.decode(ids[2 : ids.index(tokenizer.special_ids[END])])
        counts["synthetic" if question.startswith("Tell me:") else "ingested"] += 1
    share = counts["synthetic"] / sum(counts.values())
    assert abs(share - 0.3) < 0.05  # 9 in 10 conversations are synthetic, yet 3 in 10 windows


def test_checkpoints_record_the_mix(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    add_conversations(corpus_db, conversation_set(30))
    tiny = mixed_settings(make_settings, corpus_db, chat_mix_ratio=0.5)
    source = with_chat_mix(tiny, open_source(tiny, corpus_db))
    trainer = Trainer.create(tiny, source, setup_runtime(tiny, "cpu"), None)
    assert trainer.train_step() is not None
    meta = trainer.checkpoint_payload()[1]
    assert meta["data_mix"]["chat_ratio"] == 0.5 and meta["data_mix"]["conversations"] > 10
    assert meta["dataset_version"] == source.version and "+chat0.5-" in source.version
    assert (
        with_chat_mix(mixed_settings(make_settings, corpus_db, chat_mix_ratio=0), source.base) is source.base
    )


def test_synthetic_conversations_alone_stay_within_their_share(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    only = [Conversation(c.messages, "definition", synthetic=True) for c in conversation_set(50)]
    add_conversations(corpus_db, only, origin="corpus")
    tiny = mixed_settings(make_settings, corpus_db, chat_mix_ratio=0.5, chat_synthetic_max_share=0.4)
    batch = with_chat_mix(tiny, open_source(tiny, corpus_db)).train_batch(
        4000, 32, torch.Generator().manual_seed(1)
    )
    chat = ~batch.loss_mask.all(1)
    assert abs(float(chat.float().mean()) - 0.5 * 0.4) < 0.03  # the rest are documents
