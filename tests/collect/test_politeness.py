"""Politeness, measured at the server: intervals, per-host concurrency, Crawl-delay, Retry-After, back-off."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from aiohttp import web

from aifactory.db import Database
from tests.collect.harness import crawl, crawl_settings, frontier_rows
from tests.collect.sites import Hit, SiteServer, links, page, robots, wide_site

SITE_FILES = ("/robots.txt", "/.well-known/tdmrep.json")
JITTER = 0.01  # arrival times at the server may differ from start times at the crawler by network jitter


def page_hits(site: SiteServer) -> list[Hit]:
    return [hit for hit in site.hits if hit.path not in SITE_FILES]


def gaps(hits: list[Hit]) -> list[float]:
    times = sorted(hit.at for hit in hits)
    return [b - a for a, b in itertools.pairwise(times)]


def test_a_200_page_site_is_crawled_at_the_host_interval(sqlite_db: Database, make_settings: Any) -> None:
    interval, pages = 0.025, 205
    in_flight = {"now": 0, "max": 0}
    routes = wide_site(pages)

    async def slow_page(request: web.Request) -> web.StreamResponse:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            await asyncio.sleep(0.05)  # slower than the interval: requests overlap, up to the concurrency
            return await routes[request.path](request)
        finally:
            in_flight["now"] -= 1

    settings = crawl_settings(
        make_settings,
        crawler_domain_min_interval_sec=interval,
        crawler_domain_concurrency=2,
        max_crawler_workers=8,
    )
    with SiteServer(dict.fromkeys(routes, slow_page)) as site:
        crawl(sqlite_db, settings, [site.url("/")], time_limit=60)
        hits = site.hits
    fetched = [hit.path for hit in hits if hit.path not in SITE_FILES]
    assert sorted(fetched) == sorted(routes)  # every page, each exactly once
    assert min(gaps(hits)) >= interval - JITTER  # robots.txt and tdmrep.json are paced too
    assert in_flight["max"] == 2
    assert all(row["state"] == "done" for row in frontier_rows(sqlite_db).values())


def test_crawl_delay_is_honoured_one_request_at_a_time(sqlite_db: Database, make_settings: Any) -> None:
    routes = wide_site(3)
    routes["/robots.txt"] = robots("User-agent: *\nCrawl-delay: 0.5\n")
    with SiteServer(routes) as site:
        crawl(sqlite_db, crawl_settings(make_settings, crawler_domain_concurrency=4), [site.url("/")])
        hits = site.hits
    assert len(page_hits(site)) == 4
    assert min(gaps(hits)) >= 0.5 - JITTER


def test_429_with_retry_after_backs_the_host_off(sqlite_db: Database, make_settings: Any) -> None:
    calls = {"n": 0}

    async def busy(_request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        if calls["n"] == 1:
            return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
        return web.Response(text="<p>finally</p>", content_type="text/html")

    with SiteServer({"/": page(links("/busy", "/other")), "/busy": busy, "/other": page("o")}) as site:
        counts = crawl(
            sqlite_db, crawl_settings(make_settings, crawler_domain_concurrency=1), [site.url("/")]
        )
        hits = page_hits(site)
    refused = next(i for i, hit in enumerate(hits) if hit.path == "/busy")
    assert hits[refused + 1].at - hits[refused].at >= 1.0 - JITTER  # nothing to the host for Retry-After
    assert [hit.path for hit in hits].count("/busy") == 2
    assert frontier_rows(sqlite_db)[site.url("/busy")]["state"] == "done"
    assert counts["errors_http_429"] == 1


def test_repeated_failures_back_off_exponentially(sqlite_db: Database, make_settings: Any) -> None:
    async def broken(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="down")

    settings = crawl_settings(make_settings, crawler_retry_base_sec=0.4, crawler_max_attempts=4)
    with SiteServer({"/": broken}) as site:
        crawl(sqlite_db, settings, [site.url("/")], time_limit=30)
        waits = gaps(page_hits(site))
    assert len(waits) == 3
    for n, wait in enumerate(waits):
        assert wait >= 0.4 * 2**n - JITTER  # 0.4 s, 0.8 s, 1.6 s at least
    assert frontier_rows(sqlite_db)[site.url("/")]["state"] == "failed"


def test_the_node_rests_after_each_batch(sqlite_db: Database, make_settings: Any) -> None:
    settings = crawl_settings(make_settings, max_crawler_workers=2, crawler_batch_sleep_sec=0.5)
    with SiteServer(wide_site(6)) as site:
        crawl(sqlite_db, settings, [site.url("/")])
        hits = page_hits(site)
    assert len(hits) == 7
    assert sum(1 for wait in gaps(hits) if wait >= 0.5 - JITTER) >= 3  # a pause after every 2 fetches
