"""The dataset engine: waits (saying why) for a corpus, trains the tokenizer once, builds in batches."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from aifactory.cluster import engine_state, membership
from aifactory.cluster.context import EngineContext
from aifactory.cluster.registry import EngineSpec, available_engines
from aifactory.cluster.runner import run_engine
from aifactory.dataset import engine as dataset_engine
from aifactory.dataset import tokenizer as tokenizers
from aifactory.dataset.shards import generation_dir, load_manifest
from aifactory.db import events
from aifactory.db.database import Database
from tests.conftest import wait_for
from tests.dataset.helpers import add_documents, small_settings

NODE = "dataset-node"


def context(make_settings: Any, db: Database, **overrides: Any) -> EngineContext:
    membership.register(
        db, node_id=NODE, role="master", hostname=socket.gethostname(), pid=os.getpid(),
        instance_id="test", version="test", api_url="", alive_window=5,
    )  # fmt: skip
    engine_state.ensure(db, NODE, ["dataset"])
    return EngineContext(
        small_settings(make_settings, db, **overrides), db, NODE, "dataset", threading.Event()
    )


def phase(ctx: EngineContext) -> tuple[str, str]:
    ctx.flush()
    row = engine_state.load(ctx.db, NODE, "dataset")
    return row["phase"], row["detail"]


def test_it_is_a_master_engine() -> None:
    [spec] = [spec for spec in available_engines() if spec.name == "dataset"]
    assert spec.roles == ("master",) and not spec.own_process


def test_it_waits_for_a_corpus_then_trains_the_tokenizer_once_and_builds(
    make_settings: Any, db: Database
) -> None:
    ctx = context(make_settings, db, tokenizer_min_corpus_chars=60_000, dataset_build_min_new_docs=50)
    dataset_engine.step(ctx)
    assert phase(ctx) == ("waiting", "no documents yet; the tokenizer is trained at 60,000")
    add_documents(db, range(20))
    dataset_engine.step(ctx)
    assert phase(ctx)[0] == "waiting" and "characters of allowed text" in phase(ctx)[1]
    assert tokenizers.generations(ctx.settings.data_dir) == []
    add_documents(db, range(20, 120))
    dataset_engine.step(ctx)
    assert tokenizers.generations(ctx.settings.data_dir) == [1]
    manifest = load_manifest(generation_dir(ctx.settings.data_dir, 1))
    assert manifest.documents == 120 and phase(ctx)[0] == "idle"
    assert ctx.counters["dataset_builds"] == 1 and ctx.counters["dataset_documents"] == 120
    add_documents(db, range(120, 130))  # fewer than DATASET_BUILD_MIN_NEW_DOCS, and not old yet
    dataset_engine.step(ctx)
    assert phase(ctx) == ("waiting", "10 new documents; building at 50")
    add_documents(db, range(130, 175))
    dataset_engine.step(ctx)
    assert load_manifest(generation_dir(ctx.settings.data_dir, 1)).documents == 175
    dataset_engine.step(ctx)
    assert phase(ctx) == ("idle", "the dataset is up to date")
    assert tokenizers.generations(ctx.settings.data_dir) == [1]  # trained once, never again by itself
    assert any("trained tokenizer g1" in e["message"] for e in events.recent(db, 50))


def test_a_few_documents_are_built_once_they_have_waited_long_enough(
    make_settings: Any, db: Database
) -> None:
    ctx = context(make_settings, db, dataset_build_min_new_docs=1000, dataset_build_max_wait_sec=0.5)
    add_documents(db, range(120))
    dataset_engine.step(ctx)  # trains the tokenizer and builds the first version
    add_documents(db, range(120, 125))
    dataset_engine.step(ctx)
    assert phase(ctx)[0] == "waiting"
    wait_for(lambda: dataset_engine.step(ctx) or phase(ctx)[0] == "idle", timeout=10, what="a build")
    assert load_manifest(generation_dir(ctx.settings.data_dir, 1)).documents == 125


def test_a_failed_build_is_reported_and_the_engine_keeps_running(make_settings: Any, db: Database) -> None:
    ctx = context(make_settings, db, dataset_poll_sec=0.1, dataset_build_min_new_docs=1)
    add_documents(db, range(120))
    dataset_engine.step(ctx)
    (generation_dir(ctx.settings.data_dir, 1) / "index.bin").write_bytes(b"")  # damaged under our feet
    add_documents(db, range(120, 130))
    thread = threading.Thread(
        target=run_engine, args=(ctx, EngineSpec("dataset", dataset_engine.run)), daemon=True
    )
    thread.start()
    try:
        wait_for(lambda: phase(ctx)[0] == "error", timeout=20, what="the error phase")
        assert "the dataset is damaged" in phase(ctx)[1]
        assert thread.is_alive()  # waits ERROR_BACKOFF_SEC and tries again; no crash loop
    finally:
        ctx._stop.set()
        thread.join(20)
    assert not thread.is_alive()
