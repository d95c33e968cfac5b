"""A tiny model trained briefly with conversations in the mix answers in the chat template: it ends its
answers with <|end|> far more often than the same model trained on documents alone, and its document
validation loss stays within DOC_LOSS_MARGIN (10%) of the documents-only model's."""

from __future__ import annotations

from typing import Any

import pytest

from aifactory.chat import store
from aifactory.chat.evaluate import chat_evaluation, chat_part, growth_answers
from aifactory.chat.mix import with_chat_mix
from aifactory.dataset.builder import build
from aifactory.dataset.source import open_source
from aifactory.dataset.tokenizer import Tokenizer
from aifactory.db.database import Database
from aifactory.settings import Settings
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer
from tests.chat.helpers import add_conversations, conversation_set
from tests.dataset.helpers import SMALL
from tests.train.tiny import TINY

# Measured: with a fifth of the windows conversations, 500 steps of this model end every held-out answer
# with <|end|> (within BUDGET: its 600-piece tokenizer spends up to 24 tokens on an English answer);
# documents only, none. That is what the serving and evaluation tests use (STEPS, CHAT_TINY).
STEPS = 500
RATIO = 0.2
BUDGET = 40
CHAT_TINY: dict[str, Any] = {**SMALL, **TINY, "train_lr": 1e-2, "train_seq_len": 64, "train_n_embd": 64}
# The document loss is compared once both models have settled: after 500 steps at 1e-2 the mixed model
# has simply seen a fifth fewer document windows (its loss 7-20% higher, depending on the draws); after
# 1000 steps at 5e-3 the two are within 1% of each other (measured on three seeds). The margin: 10%.
SETTLED_STEPS = 1000
SETTLED: dict[str, Any] = {**CHAT_TINY, "train_lr": 5e-3}
DOC_LOSS_MARGIN = 1.10


def trained(settings: Settings, db: Database, ratio: float) -> Trainer:
    source = with_chat_mix(settings, open_source(settings, db), ratio=ratio)
    trainer = Trainer.create(settings, source, setup_runtime(settings, "cpu"), None)
    for _ in range(SETTLED_STEPS):
        trainer.train_step()
    return trainer


# Training, not storage, is under test here: SQLite only (the conversations' storage is tested on both).
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_conversations_in_the_mix_teach_the_template(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    add_conversations(corpus_db, conversation_set(240))
    held_out = [c.messages for c in store.load(corpus_db, split=store.VAL)]
    assert len(held_out) >= 25
    tiny = make_settings(database_url=corpus_db.url, eval_max_tokens=BUDGET, **SETTLED)
    without, with_chat = trained(tiny, corpus_db, 0.0), trained(tiny, corpus_db, RATIO)
    plain = chat_evaluation(without.model, tokenizer, held_out, budget=BUDGET)
    tuned = chat_part(tiny, corpus_db, with_chat.model, tokenizer)  # what the evaluation suite calls
    assert tuned is not None and tuned.conversations == len(held_out) and tuned.budget == BUDGET
    assert tuned.template_adherence >= 0.8 and plain.template_adherence <= 0.2, (plain, tuned)
    assert tuned.assistant_loss < plain.assistant_loss - 1.0
    growth = growth_answers(with_chat.model, tokenizer, BUDGET)
    assert {sample["language"] for sample in growth} == {"en", "ja"}
    doc_without, doc_with = without.evaluate()[0], with_chat.evaluate()[0]
    assert doc_with <= doc_without * DOC_LOSS_MARGIN, (doc_with, doc_without)
