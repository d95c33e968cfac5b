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
from aifactory.db.schema import frontier
from tests.conftest import wait_for
from tests.dataset.helpers import add_documents, add_texts, real_texts, small_settings

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
    assert phase(ctx)[0] == "waiting"
    assert phase(ctx)[1].startswith("no documents yet; the tokenizer is trained at 60,000")
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


def queue_url(db: Database, url: str) -> None:
    with db.begin() as conn:
        conn.execute(
            frontier.insert().values(url_hash=hash(url) & 0x7FFFFFFF, url=url, origin="https://site.example")
        )


def test_a_small_site_that_runs_out_still_gets_a_tokenizer(make_settings: Any, db: Database) -> None:
    """A fresh factory on a small site never waits forever: it says what it waits for, and once the
    crawl has run out and no text has come for TOKENIZER_STALL_SEC, it trains on what there is."""
    ctx = context(
        make_settings,
        db,
        tokenizer_min_corpus_chars=5_000_000,
        tokenizer_floor_chars=10_000,
        tokenizer_stall_sec=1.0,
        dataset_build_min_new_docs=1,
    )
    add_documents(db, range(3))
    queue_url(db, "https://site.example/next")
    dataset_engine.step(ctx)
    state, detail = phase(ctx)
    assert (
        state == "waiting" and "characters of allowed text; the tokenizer is trained at 5,000,000" in detail
    )
    assert "still to come: 1 queued URLs, 0 fetched pages waiting" in detail
    with db.begin() as conn:
        conn.execute(frontier.update().values(state="done"))
    dataset_engine.step(ctx)
    assert "nothing is left to crawl and the corpus is under the 10,000-character floor" in phase(ctx)[1]
    add_documents(db, range(3, 60))
    dataset_engine.step(ctx)
    assert "nothing is left to crawl: if no new text arrives within 1 min" in phase(ctx)[1]
    assert tokenizers.generations(ctx.settings.data_dir) == []
    wait_for(
        lambda: dataset_engine.step(ctx) or tokenizers.generations(ctx.settings.data_dir) == [1],
        timeout=20,
        what="the tokenizer trained on what there is",
    )
    tokenizer = tokenizers.current(ctx.settings.data_dir)
    assert "under TOKENIZER_MIN_CORPUS_CHARS=5,000,000: nothing was left to crawl" in tokenizer.info.note
    assert any("the crawl has run out of pages" in e["message"] for e in events.recent(db, 50))
    dataset_engine.step(ctx)
    assert load_manifest(generation_dir(ctx.settings.data_dir, 1)).documents == 60


def test_a_language_the_tokenizer_lacks_is_warned_about_then_gets_a_new_generation(
    make_settings: Any, db: Database
) -> None:
    ctx = context(make_settings, db, dataset_build_min_new_docs=1)
    add_texts(db, list(real_texts("en")[:60]), "en")
    dataset_engine.step(ctx)
    assert tokenizers.current(ctx.settings.data_dir).info.languages == ["en"]
    state, detail = phase(ctx)
    assert state == "idle" and "warning: tokenizer g1 has no ja (TRAIN_LANG_ONLY=en,ja" in detail
    assert "a new generation is proposed at 5%" in detail
    add_texts(db, list(real_texts("ja")[:40]), "ja", first=1000)  # Japanese arrives: now a large share
    memory: dict = {}
    dataset_engine.step(ctx, memory)
    assert "a new tokenizer generation is proposed: ja is" in phase(ctx)[1]
    assert any("a new tokenizer generation is proposed" in e["message"] for e in events.recent(db, 50))
    assert tokenizers.generations(ctx.settings.data_dir) == [1]  # proposed, not done
    auto = context(make_settings, db, dataset_build_min_new_docs=1, tokenizer_auto_new_generation=True)
    dataset_engine.step(auto)
    assert tokenizers.generations(auto.settings.data_dir) == [1, 2]
    assert tokenizers.current(auto.settings.data_dir).info.languages[:2] in (["en", "ja"], ["ja", "en"])
    dataset_engine.step(auto)  # the new generation's dataset is built from every document
    assert load_manifest(generation_dir(auto.settings.data_dir, 2)).documents == 100
    assert "warning" not in phase(auto)[1]
