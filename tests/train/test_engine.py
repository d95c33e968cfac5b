"""The trainer engine as the node runs it: trains in cycles, reports, pauses and resumes, stops and saves."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aifactory.cluster import engine_state, membership
from aifactory.cluster.context import EngineContext
from aifactory.cluster.registry import EngineSpec
from aifactory.cluster.runner import run_engine
from aifactory.db import Database, events
from aifactory.db.schema import training_metrics
from aifactory.train.batches import SourceUnavailable
from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.engine import checkpoint_dir, run_trainer
from tests.conftest import wait_for
from tests.train.tiny import corpus_source, more_text, tiny_settings

NODE = "train-node"


@pytest.fixture
def engine(db: Database, make_settings) -> Iterator:
    """engine(factory, **settings) starts run_trainer in a thread; returns (stop event, thread, settings)."""
    membership.register(
        db, node_id=NODE, role="master", hostname=socket.gethostname(), pid=os.getpid(),
        instance_id="test", version="test", api_url="", alive_window=5,
    )  # fmt: skip
    engine_state.ensure(db, NODE, ["trainer"])
    started: list[tuple[threading.Event, threading.Thread]] = []

    def start(factory, **overrides):
        settings = tiny_settings(make_settings, database_url=db.url, **overrides)
        stop = threading.Event()
        ctx = EngineContext(settings, db, NODE, "trainer", stop)
        spec = EngineSpec("trainer", lambda c: run_trainer(c, factory, poll_sec=0.05))
        thread = threading.Thread(target=run_engine, args=(ctx, spec), daemon=True)
        thread.start()
        started.append((stop, thread))
        return stop, thread, settings

    yield start
    for stop, thread in started:
        stop.set()
        thread.join(60)


def phase(db: Database) -> tuple[str, str]:
    row = engine_state.load(db, NODE, "trainer")
    return row["phase"], row["detail"]


def messages(db: Database) -> list[str]:
    return [e["message"] for e in events.recent(db, 200)]


def metric_steps(db: Database) -> list[int]:
    with db.read() as conn:
        return (
            conn.execute(sa.select(training_metrics.c.step).order_by(training_metrics.c.id)).scalars().all()
        )


def test_the_engine_trains_in_cycles_records_metrics_and_saves_when_stopped(db: Database, engine) -> None:
    stop, thread, settings = engine(lambda s: corpus_source())
    wait_for(lambda: len(metric_steps(db)) >= 25, timeout=60, what="25 logged steps")
    stop.set()
    thread.join(60)
    assert not thread.is_alive()
    assert phase(db)[0] == "stopped"
    latest = CheckpointStore(checkpoint_dir(settings)).load("latest").meta
    assert latest["step"] >= 25 and latest["step"] == metric_steps(db)[-1]  # nothing trained is lost
    row = engine_state.load(db, NODE, "trainer")
    assert row["counters"]["train_steps"] == latest["step"] and row["counters"]["train_cycles"] >= 2
    assert any(m.startswith("training 2L 4H/2kv 32d vocab 256") and "new model" in m for m in messages(db))
    with db.read() as conn:
        evaluated = conn.execute(sa.select(training_metrics).where(training_metrics.c.val_loss.is_not(None)))
        assert all(r.val_bpb > 0 and r.best_val_loss <= r.val_loss for r in evaluated)


def test_a_restarted_engine_resumes_from_its_checkpoint(db: Database, engine) -> None:
    stop, thread, settings = engine(lambda s: corpus_source())
    wait_for(lambda: len(metric_steps(db)) >= 5, timeout=60, what="5 steps")
    stop.set()
    thread.join(60)
    step = CheckpointStore(checkpoint_dir(settings)).load("latest").meta["step"]
    engine(lambda s: corpus_source())
    wait_for(lambda: any(f"resuming at step {step}" in m for m in messages(db)), timeout=60, what="resume")
    wait_for(lambda: metric_steps(db)[-1] > step, timeout=60, what="training past the old step")


def test_early_stopping_pauses_until_the_dataset_grows(db: Database, engine) -> None:
    source = corpus_source()
    engine(lambda s: source, train_lr=1e-9, val_eval_every=2, early_stopping_patience=2)
    wait_for(lambda: phase(db)[0] == "paused", timeout=60, what="the paused phase")
    paused_step = metric_steps(db)[-1]
    detail = phase(db)[1]
    target = int(source.train_tokens * 1.1) + 1
    assert "no validation improvement in 2 evaluations" in detail and f"{target:,}" in detail
    source.append(more_text(400, seed=1)[: source.train_tokens // 20])  # +5%: not enough
    wait_for(lambda: "now " + f"{source.train_tokens:,}" in phase(db)[1], timeout=30, what="the new count")
    assert phase(db)[0] == "paused" and metric_steps(db)[-1] == paused_step
    source.append(more_text(2000, seed=2))  # now well past +10%
    wait_for(lambda: any("training resumes" in m for m in messages(db)), timeout=60, what="resuming")
    wait_for(lambda: metric_steps(db)[-1] > paused_step, timeout=60, what="steps after the pause")


def test_without_data_the_engine_waits_and_says_why(db: Database, engine) -> None:
    ready = threading.Event()

    def factory(settings):
        if not ready.is_set():
            raise SourceUnavailable("the tokenizer has not been trained yet")
        return corpus_source()

    engine(factory)
    wait_for(lambda: phase(db) == ("waiting", "no training data yet: the tokenizer has not been trained yet"),
             timeout=30, what="the waiting phase")  # fmt: skip
    ready.set()
    wait_for(lambda: metric_steps(db), timeout=60, what="training once data exists")


def test_an_unloadable_checkpoint_is_an_error_on_the_dashboard_not_a_fresh_start(
    db: Database, engine
) -> None:
    stop, thread, settings = engine(lambda s: corpus_source())
    wait_for(lambda: len(metric_steps(db)) >= 12, timeout=60, what="two cycles")
    stop.set()
    thread.join(60)
    store = CheckpointStore(checkpoint_dir(settings))
    for directory in store.step_dirs():  # every checkpoint there is, not only latest and backup
        (directory / "model.safetensors").write_bytes(b"garbage")
    latest = store.pointer("latest")
    stop, thread, _ = engine(lambda s: corpus_source())
    thread.join(60)
    row = engine_state.load(db, NODE, "trainer")
    assert row["phase"] == "error"
    assert f"{latest / 'model.safetensors'} is truncated or corrupt" in row["last_error"]
    assert store.pointer("latest") == latest and Path(latest).exists()  # nothing was overwritten


def test_a_new_tokenizer_generation_starts_a_new_model_and_keeps_the_old_one(db: Database, engine) -> None:
    stop, thread, settings = engine(lambda s: corpus_source())
    wait_for(lambda: len(metric_steps(db)) >= 3, timeout=60, what="3 steps")
    stop.set()
    thread.join(60)
    old_step = CheckpointStore(checkpoint_dir(settings)).load("latest").meta["step"]

    def new_generation(_settings):
        source = corpus_source()
        source.tokenizer_hash = "second-generation"
        return source

    engine(new_generation)
    wait_for(lambda: any("starting a new model" in m for m in messages(db)), timeout=60, what="a new model")
    kept = checkpoint_dir(settings).with_name("checkpoints-utf8-bytes")
    assert CheckpointStore(kept).load("latest").meta["step"] == old_step  # the old model is kept whole
    wait_for(
        lambda: CheckpointStore(checkpoint_dir(settings)).read_meta("latest") is not None,
        timeout=60,
        what="the new model's first checkpoint",
    )
    meta = CheckpointStore(checkpoint_dir(settings)).read_meta("latest")[1]
    assert meta["tokenizer_hash"] == "second-generation"
