"""Running the crawler in tests: settings for loopback fixture sites, and a crawl to completion."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa

from aifactory.collect import frontier as frontier_db
from aifactory.collect.crawler import Crawler
from aifactory.collect.sink import PageSink
from aifactory.collect.urls import default_scope, normalize_url
from aifactory.db import Database
from aifactory.db.schema import frontier, hosts, pages
from aifactory.settings import Settings

# Fast, local, and still every rule on: robots, safety (loopback allowed explicitly), politeness at 0.
TEST_CRAWL: dict[str, Any] = {
    "crawler_private_allowlist": ["127.0.0.0/8"],
    "crawler_domain_min_interval_sec": 0.0,
    "crawler_batch_sleep_sec": 0.0,
    "crawler_retry_base_sec": 0.2,
    "crawler_robots_retry_sec": 0.5,
    "crawler_connect_timeout_sec": 2.0,
    "crawler_read_timeout_sec": 2.0,
    "crawler_total_timeout_sec": 5.0,
    "crawler_lease_sec": 5.0,
    "max_crawler_workers": 4,
    "crawler_contact_url": "https://example.invalid/crawler",
}


def crawl_settings(make_settings: Any, **overrides: Any) -> Settings:
    return make_settings(**{**TEST_CRAWL, **overrides})


def queue(
    db: Database, settings: Settings, urls: list[str], source: str = "web", scope: str | None = None
) -> None:
    seeds = []
    for raw in urls:
        url = normalize_url(raw)
        assert url is not None, raw
        seeds.append(frontier_db.NewUrl(url, 0, source, default_scope(url) if scope is None else scope))
    frontier_db.queue_urls(db, settings, seeds)


def crawl(
    db: Database,
    settings: Settings,
    urls: list[str] | None = None,
    *,
    max_pages: int = 10_000,
    owner: str = "test-node",
    idle_grace: float = 0.4,
    time_limit: float = 60.0,
    until_settled: bool = True,
    sink: PageSink | None = None,
) -> Counter[str]:
    """Queue `urls` and crawl until nothing is due (or waiting a short while) or `max_pages`; the counts."""
    if urls:
        queue(db, settings, urls)
    counts: Counter[str] = Counter()

    async def main() -> None:
        deadline = time.monotonic() + time_limit
        spent = 0
        async with Crawler(settings, db, owner, on_counts=counts.update, sink=sink) as crawler:
            while spent < max_pages and time.monotonic() < deadline:
                stats = await crawler.run(
                    max_pages=max_pages - spent,
                    stop=lambda: time.monotonic() > deadline,
                    idle_grace=idle_grace,
                )
                spent += stats.fetched
                if stats.reason != "idle":
                    continue
                wait = frontier_db.next_due_in(db, all_origins(db))
                if not until_settled or wait is None or wait > 5.0:
                    break
                await asyncio.sleep(wait + 0.05)

    asyncio.run(main())
    return counts


def all_origins(db: Database) -> set[str]:
    with db.read() as conn:
        return set(conn.execute(sa.select(hosts.c.origin)).scalars())


def frontier_rows(db: Database) -> dict[str, dict]:
    """url -> its frontier row."""
    with db.read() as conn:
        return {row.url: dict(row._mapping) for row in conn.execute(sa.select(frontier))}


def page_rows(db: Database) -> dict[str, dict]:
    """url -> its pages row."""
    with db.read() as conn:
        return {row.url: dict(row._mapping) for row in conn.execute(sa.select(pages))}


def host_row(db: Database, origin: str) -> dict:
    with db.read() as conn:
        row = conn.execute(sa.select(hosts).where(hosts.c.origin == origin)).first()
    assert row is not None, origin
    return dict(row._mapping)
