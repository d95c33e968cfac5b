"""Every source end to end against its local stand-in, into the documents table (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from aifactory.collect import frontier as frontier_db
from aifactory.collect.crawler import Crawler
from aifactory.collect.engine import seed_urls
from aifactory.collect.fetch import Fetcher
from aifactory.db import Database, counters, kv
from aifactory.db import policies as policy_db
from aifactory.db.schema import documents, frontier
from aifactory.settings import Settings
from aifactory.sources.arxiv import poll_arxiv
from aifactory.sources.common import SourceRun
from aifactory.sources.discovery import discover_from_documents, poll_search
from aifactory.sources.feeds import poll_feeds
from aifactory.sources.hackernews import poll_hacker_news
from aifactory.sources.wikipedia import poll_wikipedia
from aifactory.text.engine import process_batch
from aifactory.text.pipeline import PipelineConfig, RawDocument, analyze_many, store
from aifactory.text.staging import StagingSink
from tests.collect.harness import TEST_CRAWL
from tests.collect.sites import SiteServer
from tests.sources.standins import stand_in_site
from tests.text import pages

OFF = {
    "enable_rss_collector": False,
    "enable_news_collector": False,
    "enable_arxiv_collector": False,
    "enable_wikipedia_collector": False,
    "enable_auto_discovery": False,
}


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with stand_in_site() as server:
        yield server


def settings_for(make_settings: Any, db: Database, **values: Any) -> Settings:
    return make_settings(database_url=db.url, **{**TEST_CRAWL, **OFF, **values})


def poll(db: Database, settings: Settings, poller: Callable[[SourceRun], Awaitable[None]]) -> SourceRun:
    """One cycle of one source; documents it delivered directly go through the pipeline."""

    async def main() -> SourceRun:
        async with Fetcher(settings, max_connections=4) as fetcher:
            run = SourceRun(settings, db, fetcher, "n1", (0, 1))
            await poller(run)
            return run

    run = asyncio.run(main())
    if run.documents:
        store(
            db, analyze_many(run.documents, PipelineConfig.from_settings(settings), None), policy_db.load(db)
        )
    return run


def crawl_and_process(db: Database, settings: Settings) -> None:
    """What the collector and text engines do: fetch the queued pages, turn them into documents."""

    async def main() -> None:
        async with Crawler(settings, db, "n1", sink=StagingSink(db)) as crawler:
            for _ in range(5):
                stats = await crawler.run(max_pages=100, stop=lambda: False, idle_grace=0.5)
                if stats.reason == "idle":
                    break

    asyncio.run(main())
    while process_batch(db, settings, "n1", policy_db.load(db), None)[0]:
        pass


def docs(db: Database) -> dict[str, dict]:
    with db.read() as conn:
        return {row.url: dict(row._mapping) for row in conn.execute(sa.select(documents))}


def queued(db: Database) -> dict[str, str]:
    with db.read() as conn:
        return dict(conn.execute(sa.select(frontier.c.url, frontier.c.source)).all())


def test_rss_and_atom_feeds_bring_their_articles(db: Database, site: SiteServer, make_settings: Any) -> None:
    settings = settings_for(
        make_settings,
        db,
        enable_rss_collector=True,
        enable_news_collector=True,
        rss_feeds=[site.url("/feeds/rss.xml")],
        news_feeds=[site.url("/feeds/atom.xml")],
        hn_items=0,
    )
    run = poll(db, settings, poll_feeds)
    assert run.counts["rss_polls"] == 1 and run.counts["news_polls"] == 1
    assert queued(db) == {
        site.url("/news/park"): "rss",
        site.url("/blog/sourdough"): "rss",
        site.url("/news/park-ja"): "news",
    }
    crawl_and_process(db, settings)
    stored = docs(db)
    assert {(d["source_type"], d["language"]) for d in stored.values()} == {("rss", "en"), ("news", "ja")}
    assert "railway yard" in stored[site.url("/news/park")]["text"]
    assert counters.get_all(db, prefix="docs.stored.") == {"docs.stored.news": 1, "docs.stored.rss": 2}


def test_feeds_are_polled_conditionally_and_on_schedule(
    db: Database, site: SiteServer, make_settings: Any
) -> None:
    settings = settings_for(
        make_settings,
        db,
        enable_rss_collector=True,
        rss_feeds=[site.url("/feeds/rss.xml")],
        source_poll_interval_sec=1.0,
    )
    poll(db, settings, poll_feeds)
    assert poll(db, settings, poll_feeds).counts == {}  # not due yet
    time.sleep(1.1)
    again = poll(db, settings, poll_feeds)
    assert again.counts["rss_polls"] == 1 and "rss_queued" not in again.counts
    last = site.hits_for("/feeds/rss.xml")[-1]
    assert last.headers.get("If-None-Match") == '"v1"'  # answered 304: nothing re-read


def test_broken_feeds_are_counted_and_retried_later(
    db: Database, site: SiteServer, make_settings: Any
) -> None:
    settings = settings_for(
        make_settings,
        db,
        enable_rss_collector=True,
        rss_feeds=[site.url("/feeds/not-a-feed"), site.url("/feeds/broken"), "http://127.0.0.1:9/refused"],
    )
    run = poll(db, settings, poll_feeds)
    assert run.counts["rss_errors"] == 3
    assert run.counts["rss_errors_not_a_feed"] == 1 and run.counts["rss_errors_http_500"] == 1
    assert queued(db) == {}


def test_hacker_news_top_stories_bring_their_linked_articles(
    db: Database, site: SiteServer, make_settings: Any
) -> None:
    settings = settings_for(
        make_settings, db, enable_news_collector=True, hn_api_url=site.url("/v0"), hn_items=3
    )
    run = poll(db, settings, poll_hacker_news)
    assert run.counts["hn_polls"] == 1
    assert queued(db) == {site.url("/news/park"): "news", site.url("/blog/sourdough"): "news"}  # no self post
    crawl_and_process(db, settings)
    assert {d["source_type"] for d in docs(db).values()} == {"news"} and len(docs(db)) == 2


def test_arxiv_abstracts_are_stored_as_cc0_documents(
    db: Database, site: SiteServer, make_settings: Any
) -> None:
    settings = settings_for(
        make_settings,
        db,
        enable_arxiv_collector=True,
        arxiv_api_url=site.url("/arxiv/api/query"),
        arxiv_max_results=5,
    )
    run = poll(db, settings, poll_arxiv)
    assert run.counts["arxiv_entries"] == 2
    stored = docs(db)
    paper = stored["http://arxiv.org/abs/2401.00001v1"]
    assert paper["source_type"] == "arxiv" and paper["license_tag"] == "cc0-metadata"
    assert paper["text"].startswith("Small Language Models Trained Continuously")
    assert run.min_interval["arxiv"] >= 3.0


def test_wikipedia_random_and_linked_articles_in_two_languages(
    db: Database, site: SiteServer, make_settings: Any
) -> None:
    settings = settings_for(
        make_settings,
        db,
        enable_wikipedia_collector=True,
        wikipedia_api_url=site.origin + "/{lang}/w/api.php",
        wikipedia_languages=["en", "ja"],
        wikipedia_articles_per_cycle=2,
    )
    run = poll(db, settings, poll_wikipedia)
    assert run.counts["wikipedia_articles"] == 2
    stored = docs(db)
    assert set(stored) == {
        "https://en.wikipedia.org/wiki/Kingfisher",
        "https://ja.wikipedia.org/wiki/カワセミ",
    }
    assert {d["license_tag"] for d in stored.values()} == {"cc-by-sa-4.0"}
    assert {d["language"] for d in stored.values()} == {"en", "ja"}
    # the next cycle follows the links it remembered (Heron, River, サギ)
    for key in ("source.next.wikipedia:en", "source.next.wikipedia:ja"):
        kv.set_value(db, key, "0")
    poll(db, settings, poll_wikipedia)
    assert "https://ja.wikipedia.org/wiki/サギ" in docs(db)


def test_discovery_search_queues_new_hosts_within_the_limit(
    db: Database, site: SiteServer, make_settings: Any
) -> None:
    settings = settings_for(
        make_settings,
        db,
        enable_auto_discovery=True,
        auto_discovery_queries=["birds"],
        auto_discovery_search_url=site.url("/search") + "?q={query}",
        auto_discovery_seeds_per_cycle=1,
    )
    run = poll(db, settings, poll_search)
    assert run.counts["discovery_hosts"] == 1
    assert list(queued(db).values()) == ["discovery"]


def test_links_of_good_documents_lead_to_new_hosts(
    db: Database, site: SiteServer, make_settings: Any
) -> None:
    settings = settings_for(make_settings, db, enable_auto_discovery=True, auto_discovery_seeds_per_cycle=5)
    good = RawDocument(
        url="https://a.example/",
        body="\n\n".join(pages.WIKI_EN),
        content_type="text/plain",
        links=["https://birds.example/herons", "https://fish.example/"],
    )
    spam = RawDocument(
        url="https://b.example/",
        body="\n".join(pages.SPAM_EN),
        content_type="text/plain",
        links=["https://spam.example/"],
    )
    analyzed = analyze_many([good, spam], PipelineConfig.from_settings(settings), None)
    assert discover_from_documents(db, settings, analyzed) == 2
    assert set(queued(db)) == {"https://birds.example/herons", "https://fish.example/"}


def test_nodes_discovering_at_once_share_one_limit(db_url: str, make_settings: Any) -> None:
    """The per-window limit on discovered hosts holds for the whole cluster: four nodes (threads with
    their own connections) offering 5 new hosts each at the same moment add 6 in total."""
    from aifactory.db import migrate

    nodes = [Database(db_url) for _ in range(4)]
    migrate.upgrade(nodes[0])
    settings = make_settings(
        database_url=db_url,
        **{**TEST_CRAWL, **OFF, "enable_auto_discovery": True, "auto_discovery_seeds_per_cycle": 6},
    )
    doc = analyze_many(
        [RawDocument(url="https://a.example/", body="\n\n".join(pages.WIKI_EN), content_type="text/plain")],
        PipelineConfig.from_settings(settings),
        None,
    )[0]
    batches = [
        [replace(doc, raw=replace(doc.raw, links=[f"https://n{n}-h{i}.example/" for i in range(5)]))]
        for n in range(4)
    ]
    start = threading.Barrier(len(nodes))

    def discover(node: Database, batch: list) -> int:
        start.wait()
        return discover_from_documents(node, settings, batch)

    try:
        with ThreadPoolExecutor(len(nodes)) as pool:
            added = list(pool.map(discover, nodes, batches))
        assert sum(added) == 6
        assert len(queued(nodes[0])) == 6
        assert discover_from_documents(nodes[0], settings, batches[0]) == 0  # the window is spent
    finally:
        for node in nodes:
            node.dispose()


def test_documentation_sites_are_crawled_within_their_path(
    db: Database, site: SiteServer, make_settings: Any
) -> None:
    settings = settings_for(
        make_settings, db, enable_docs_collector=True, doc_seed_urls=[site.url("/docs/guide/")]
    )
    seeds, invalid = seed_urls(settings)
    assert invalid == [] and [seed.source for seed in seeds] == ["docs"]
    frontier_db.queue_urls(db, settings, seeds)
    crawl_and_process(db, settings)
    stored = docs(db)
    assert site.url("/docs/guide/config") in stored
    assert stored[site.url("/docs/guide/config")]["source_type"] == "docs"
    assert "port = 8080" in stored[site.url("/docs/guide/config")]["text"]
    assert site.url("/news/park") not in queued(db)  # outside the documentation's path
