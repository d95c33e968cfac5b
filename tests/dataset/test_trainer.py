"""The trainer trains on the shard-backed source: steps, evaluation in bits per byte, provenance."""

from __future__ import annotations

import math
import os
import socket
import threading
from typing import Any

from aifactory.cluster import engine_state, membership
from aifactory.cluster.context import EngineContext
from aifactory.cluster.registry import EngineSpec
from aifactory.cluster.runner import run_engine
from aifactory.dataset.builder import build
from aifactory.dataset.source import open_source
from aifactory.dataset.tokenizer import Tokenizer
from aifactory.db.database import Database
from aifactory.settings import Settings
from aifactory.train import metrics
from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.cycle import Evaluation
from aifactory.train.engine import checkpoint_dir, metric_row, run_trainer
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer
from tests.conftest import wait_for
from tests.dataset.helpers import SMALL
from tests.train.tiny import TINY


def tiny_on_shards(make_settings: Any, db: Database, **overrides: Any) -> Settings:
    return make_settings(database_url=db.url, **{**SMALL, **TINY, **overrides})


def test_training_steps_lower_the_loss_and_bits_per_byte_count_text_bytes(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    tiny = tiny_on_shards(make_settings, corpus_db, train_lr=1e-2)
    source = open_source(tiny, corpus_db)
    trainer = Trainer.create(tiny, source, setup_runtime(tiny, "cpu"), None)
    assert trainer.model.config.vocab_size == tokenizer.vocab_size
    first_loss, first_bpb = trainer.evaluate()
    assert abs(first_loss - math.log(tokenizer.vocab_size)) < 0.5  # untrained: close to uniform
    losses = [trainer.train_step().loss for _ in range(30)]
    val_loss, val_bpb = trainer.evaluate()
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5 and val_loss < first_loss - 0.5
    # bpb = loss in bits over the bytes the target tokens stand for (EOS counts none).
    assert 0 < val_bpb < first_bpb and math.isfinite(val_bpb)
    meta = trainer.checkpoint_payload()[1]
    assert meta["tokenizer_hash"] == tokenizer.hash and meta["dataset_version"] == source.version


def test_validation_is_reported_per_language_as_well_as_overall(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    tiny = tiny_on_shards(make_settings, corpus_db, train_lr=1e-2)
    source = open_source(tiny, corpus_db)
    assert source.evaluated_languages(tiny.train_seq_len) == ["en", "ja"]
    trainer = Trainer.create(tiny, source, setup_runtime(tiny, "cpu"), None)
    for _ in range(10):
        trainer.train_step()
    val_loss, val_bpb = trainer.evaluate()
    by_language = trainer.state.val_languages
    assert set(by_language) == {"en", "ja"}
    # The windows are shared equally, so the overall loss is the mean of the two languages' losses.
    assert abs(val_loss - (by_language["en"]["loss"] + by_language["ja"]["loss"]) / 2) < 1e-6
    assert all(math.isfinite(v["bpb"]) and v["bpb"] > 0 for v in by_language.values())
    assert by_language["en"]["bpb"] != by_language["ja"]["bpb"]
    writer = metrics.MetricsWriter(corpus_db, "n", 0)
    writer.write(
        metric_row(trainer, trainer.train_step(), Evaluation(val_loss, val_bpb, "first")), force=True
    )
    series = metrics.language_series(corpus_db, "hour")
    assert set(series) == {"en", "ja"} and series["ja"][0]["val_loss"] == by_language["ja"]["loss"]


def test_the_trainer_engine_trains_on_what_the_dataset_engine_built(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    membership.register(
        corpus_db, node_id="n", role="master", hostname=socket.gethostname(), pid=os.getpid(),
        instance_id="test", version="test", api_url="", alive_window=5,
    )  # fmt: skip
    engine_state.ensure(corpus_db, "n", ["trainer"])
    tiny = tiny_on_shards(make_settings, corpus_db)
    stop = threading.Event()
    ctx = EngineContext(tiny, corpus_db, "n", "trainer", stop)
    spec = EngineSpec("trainer", lambda c: run_trainer(c, open_source, poll_sec=0.05))
    thread = threading.Thread(target=run_engine, args=(ctx, spec), daemon=True)
    thread.start()
    store = CheckpointStore(checkpoint_dir(tiny))
    try:
        wait_for(
            lambda: store.pointer("latest") is not None and store.load("latest").meta["step"] >= 10,
            timeout=120,
            what="a checkpoint after 10 steps",
        )
    finally:
        stop.set()
        thread.join(60)
    meta = store.load("latest").meta
    assert meta["tokenizer_hash"] == tokenizer.hash and meta["dataset_version"].startswith("g1-v1-")
