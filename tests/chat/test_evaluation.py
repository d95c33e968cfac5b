"""The evaluation suite's chat part: held-out conversations' assistant loss and template adherence,
stored with the run's parts, and the chat growth prompts among the growth samples."""

from __future__ import annotations

from typing import Any

from aifactory.chat.mix import with_chat_mix
from aifactory.dataset.source import open_source
from aifactory.db.database import Database
from aifactory.evaluate import store
from aifactory.evaluate.commands import format_report, run_and_store
from aifactory.settings import Settings
from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.engine import checkpoint_dir
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer
from tests.chat.helpers import add_conversations, conversation_set
from tests.chat.test_tuning import BUDGET, CHAT_TINY, RATIO, STEPS
from tests.evaluate.helpers import EVAL, build_factory


def train_with_chat_and_save(settings: Settings, db: Database, steps: int) -> None:
    source = with_chat_mix(settings, open_source(settings, db), ratio=RATIO)
    trainer = Trainer.create(settings, source, setup_runtime(settings, "cpu"), None)
    for _ in range(steps):
        trainer.train_step()
    weights, meta, _ = trainer.checkpoint_payload()
    CheckpointStore(checkpoint_dir(settings)).save(weights, meta, None, pointers=("latest", "best"))


def test_the_evaluation_shows_the_model_answering_in_the_template(make_settings: Any, db: Database) -> None:
    settings = make_settings(database_url=db.url, **{**CHAT_TINY, **EVAL, "eval_max_tokens": BUDGET})
    build_factory(settings, db)
    add_conversations(db, conversation_set(240))
    train_with_chat_and_save(settings, db, 0)
    untrained = run_and_store(settings, db, "latest")
    train_with_chat_and_save(settings, db, STEPS)
    tuned = run_and_store(settings, db, "latest")

    assert untrained["chat"]["template_adherence"] <= 0.2 and tuned["chat"]["template_adherence"] >= 0.8
    assert tuned["chat"]["assistant_loss"] < untrained["chat"]["assistant_loss"] - 1.0
    assert tuned["chat"]["conversations"] == untrained["chat"]["conversations"] > 20
    assert "chat: template adherence" in format_report(tuned)
    parts = {p["part"]: p for p in store.list_runs(db)[0]["parts"]}
    assert parts["chat_adherence"]["value"] == tuned["chat"]["template_adherence"]
    assert parts["chat_loss"]["items"] == tuned["chat"]["assistant_tokens"]
    chat_growth = [entry for entry in store.growth(db) if entry["prompt_id"].startswith("growth-chat-")]
    assert {entry["language"] for entry in chat_growth} == {"en", "ja"}
    assert all(len(entry["samples"]) == 2 for entry in chat_growth)  # one per evaluation
