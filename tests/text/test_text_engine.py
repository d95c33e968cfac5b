"""The text engine under pages that hang or crash its pool: bounded waits, quarantine, no engine crash."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from aifactory.cluster.context import EngineContext
from aifactory.db import Database, counters
from aifactory.db.schema import documents, staged_pages
from aifactory.settings import Settings
from aifactory.text import engine as text_engine
from aifactory.text import extract, staging
from aifactory.text.extract import Extracted, ExtractionTimeout, extract_document
from aifactory.text.pipeline import PipelineConfig, RawDocument, analyze
from tests.text import pages
from tests.text.crashy import install


def swallow_every_exception(_html: str, _url: str | None = None) -> Extracted:
    """What trafilatura's broad handlers do to an exception raised inside them."""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            time.sleep(0.01)
    return Extracted(text="a result that took far too long")


def swallow_everything(_html: str, _url: str | None = None) -> Extracted:
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        with contextlib.suppress(BaseException):
            time.sleep(0.01)
    return Extracted(text="a result that took far too long")


@pytest.mark.parametrize("extractor", [swallow_every_exception, swallow_everything])
def test_the_extraction_time_limit_cannot_be_swallowed(
    monkeypatch: pytest.MonkeyPatch, extractor: Any
) -> None:
    monkeypatch.setattr(extract, "extract_html", extractor)
    with pytest.raises(ExtractionTimeout):
        extract_document("<p>slow</p>", "text/html", timeout=0.2)
    (doc,) = analyze(
        RawDocument(url="https://s.example/slow", body="<p>slow</p>"), PipelineConfig(extract_timeout=0.2)
    )
    assert doc.reject_reason == "extract_timeout"


def crashy_pool() -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=install
    )


def test_a_pool_that_does_not_answer_is_given_up_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_engine, "POOL_MARGIN_SEC", 2.0)
    pool = crashy_pool()
    try:
        started = time.monotonic()
        with pytest.raises(text_engine.PoolFailure):
            text_engine.analyze_in_pool(
                [RawDocument(url="https://s.example/hang", body="<p>HANG</p>")],
                PipelineConfig(extract_timeout=0.5),
                pool,
            )
        assert time.monotonic() - started < 60
    finally:
        text_engine.discard_pool(pool)


def test_a_page_that_crashes_the_pool_is_quarantined_and_the_engine_goes_on(
    db: Database, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = [
        RawDocument(
            url=f"https://s.example/{i}", body=pages.page(f"Article {i}", [pages.varied_text(6, seed=i)])
        )
        for i in range(4)
    ]
    poison = RawDocument(url="https://s.example/poison", body="<p>CRASH</p>")
    with db.begin() as conn:
        staging.stage(db, conn, [*good[:2], poison, *good[2:]], "n1")
    monkeypatch.setattr(text_engine, "make_pool", lambda workers=None: crashy_pool())
    stop = threading.Event()
    ctx = EngineContext(make_settings(database_url=db.url), db, "n1", "text", stop)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            text_engine.run(ctx)
        except BaseException as exc:  # the test fails on it below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while staging.backlog(db) and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.2)
        assert staging.backlog(db) == 0 and thread.is_alive() and not failure, failure
    finally:
        stop.set()
        thread.join(60)
    with db.read() as conn:
        stored = set(conn.execute(sa.select(documents.c.url)).scalars())
        assert conn.execute(sa.select(sa.func.count()).select_from(staged_pages)).scalar() == 0
    assert stored == {raw.url for raw in good}
    assert counters.get_all(db)["docs.quarantined"] == 1
    assert ctx.counters["quarantined"] == 1 and ctx.counters["pool_restarts"] >= 1


def test_a_stop_during_a_batch_gives_the_pages_back_as_they_were(db: Database) -> None:
    with db.begin() as conn:
        staging.stage(db, conn, [RawDocument(url="https://s.example/hang", body="<p>HANG</p>")], "n1")
    pool = crashy_pool()
    asked = time.monotonic()
    try:
        with pytest.raises(text_engine.Stopped):
            text_engine.process_batch(db, Settings(_env_file=None), "n1", [], pool, stopping=lambda: True)
    finally:
        text_engine.discard_pool(pool)
    assert time.monotonic() - asked < 30
    with db.read() as conn:
        row = conn.execute(sa.select(staged_pages.c.attempts, staged_pages.c.claimed_by)).one()
    assert tuple(row) == (0, None)  # not an attempt: stopping is no fault of the page
