"""A factory with a real dataset (the bilingual fixture corpus, its tokenizer, built shards) and a tiny
model on it, untrained or trained for a bounded number of steps, saved as the trainer saves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aifactory.dataset.builder import build
from aifactory.dataset.source import open_source
from aifactory.db.database import Database
from aifactory.settings import Settings
from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.engine import checkpoint_dir
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer
from tests.dataset.helpers import SMALL, add_documents, trained_tokenizer
from tests.train.tiny import TINY

# Evaluation settings small enough for tests: few items, short generations.
EVAL: dict[str, Any] = dict(
    eval_mc_items=48, eval_max_tokens=8, eval_growth_tokens=8, val_eval_batches=2, eval_threads=1
)


def factory_settings(make_settings: Any, db: Database, **overrides: Any) -> Settings:
    return make_settings(database_url=db.url, **{**SMALL, **TINY, **EVAL, "train_lr": 1e-2, **overrides})


def build_factory(settings: Settings, db: Database, documents: int = 120) -> None:
    add_documents(db, range(documents))
    trained_tokenizer(settings, db)
    build(settings, db)


def train_and_save(
    settings: Settings,
    db: Database,
    steps: int,
    pointers: tuple[str, ...] = ("latest", "best"),
    seed: int = 0,
) -> Path:
    """Train a tiny model for `steps` optimizer steps (0 = untrained) and save it as the trainer does."""
    settings = settings.model_copy(update={"train_seed": seed})
    source = open_source(settings, db)
    try:
        trainer = Trainer.create(settings, source, setup_runtime(settings, "cpu"), None)
        for _ in range(steps):
            trainer.train_step()
        weights, meta, _ = trainer.checkpoint_payload()
        return CheckpointStore(checkpoint_dir(settings)).save(weights, meta, None, pointers=pointers)
    finally:
        source.close()
