"""Politeness, measured at the server: intervals, per-host concurrency, Crawl-delay, Retry-After, back-off."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from aifactory.collect import frontier as frontier_db
from aifactory.db import Database
from tests.collect.harness import crawl, crawl_settings, frontier_rows, page_rows
from tests.collect.sites import Hit, SiteServer, free_port, links, page, robots, wide_site

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
    # robots.txt and tdmrep.json are paced too. Arrival times are taken by the fixture server's thread,
    # which a loaded machine can hold back for a while and then run two arrivals back to back; so
    # every span of two gaps is checked (one late timestamp cannot shrink it) and the typical gap.
    times = sorted(hit.at for hit in hits)
    assert min(b - a for a, b in zip(times, times[2:], strict=False)) >= 2 * interval - JITTER
    assert sorted(gaps(hits))[len(hits) // 2] >= interval - JITTER
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


def test_ports_and_schemes_of_one_host_share_one_pace(sqlite_db: Database, make_settings: Any) -> None:
    """Two servers on two ports of 127.0.0.2 are one host: their requests are spaced as one site's."""
    interval = 0.2
    settings = crawl_settings(
        make_settings, crawler_domain_min_interval_sec=interval, crawler_domain_concurrency=4
    )
    with SiteServer(wide_site(4), host="127.0.0.2") as one, SiteServer(wide_site(4), host="127.0.0.2") as two:
        crawl(sqlite_db, settings, [one.url("/"), two.url("/")])
        hits = one.hits + two.hits
    assert len([hit for hit in hits if hit.path not in SITE_FILES]) == 10
    assert min(gaps(hits)) >= interval - JITTER


def test_requests_are_spaced_from_the_end_of_the_previous_one(
    sqlite_db: Database, make_settings: Any
) -> None:
    interval, slowness = 0.3, 0.25
    ended: list[float] = []
    routes = wide_site(4)

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(slowness)
        try:
            return await routes[request.path](request)
        finally:
            ended.append(time.monotonic())

    settings = crawl_settings(
        make_settings, crawler_domain_min_interval_sec=interval, crawler_domain_concurrency=1
    )
    with SiteServer(dict.fromkeys(routes, slow)) as site:
        crawl(sqlite_db, settings, [site.url("/")])
        starts = sorted(hit.at for hit in page_hits(site))
    assert len(starts) == 5
    # Each request starts at least the interval after the previous one ended (not only after it began).
    for previous_end, start in zip(sorted(ended), starts[1:], strict=False):
        assert start - previous_end >= interval - JITTER


def test_a_huge_crawl_delay_is_capped(sqlite_db: Database, make_settings: Any) -> None:
    routes = wide_site(3)
    routes["/robots.txt"] = robots("User-agent: *\nCrawl-delay: 86400\n")
    settings = crawl_settings(make_settings, crawler_max_crawl_delay_sec=0.3)
    with SiteServer(routes) as site:
        crawl(sqlite_db, settings, [site.url("/")], time_limit=30)
        hits = page_hits(site)
    assert len(hits) == 4  # a day between requests would have parked the site for good
    assert min(gaps(site.hits)) >= 0.3 - JITTER


def test_a_host_that_refuses_connections_is_backed_off_and_given_up_as_a_host(
    sqlite_db: Database, make_settings: Any
) -> None:
    """Nothing listens on the port: the site backs off as a whole, and after CRAWLER_MAX_ATTEMPTS
    failures in a row its queued URLs are all given up, instead of each being tried on its own."""
    port = free_port("127.0.0.2")
    urls = [f"http://127.0.0.2:{port}/p{i}" for i in range(6)]
    settings = crawl_settings(make_settings, crawler_max_attempts=2, crawler_retry_base_sec=0.1)
    counts = crawl(sqlite_db, settings, urls, time_limit=30)
    rows = frontier_rows(sqlite_db)
    assert {row["state"] for row in rows.values()} == {"failed"} and len(rows) == 6
    assert counts["errors_connect"] == 2  # two tries of the host (robots.txt), not 2 x 6 of its URLs
    assert counts["hosts_given_up"] == 1


def test_every_x_robots_tag_header_counts(sqlite_db: Database, make_settings: Any) -> None:
    async def tagged(_request: web.Request) -> web.StreamResponse:
        headers = [("X-Robots-Tag", "otherbot: noindex"), ("X-Robots-Tag", "noai")]
        return web.Response(text="<p>text</p>", content_type="text/html", headers=CIMultiDict(headers))

    with SiteServer({"/": tagged}) as site:
        crawl(sqlite_db, crawl_settings(make_settings), [site.url("/")])
    row = page_rows(sqlite_db)[site.url("/")]
    assert not row["train_allowed"] and row["optout_reason"] == "X-Robots-Tag noai"


def test_a_success_resets_the_attempts_of_a_refetched_page(sqlite_db: Database, make_settings: Any) -> None:
    """500, 200, 500, 200: with CRAWLER_MAX_ATTEMPTS=2 the refetch's one failure is retried, because
    the success before it forgave the first; counted over the URL's whole life it would be given up."""
    statuses = iter([500, 200, 500, 200])

    async def flaky(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=next(statuses), text="<p>page</p>", content_type="text/html")

    settings = crawl_settings(
        make_settings, crawler_max_attempts=2, crawler_retry_base_sec=0.1, crawler_recrawl_sec=0.5
    )
    with SiteServer({"/": flaky}) as site:
        crawl(sqlite_db, settings, [site.url("/")])
        assert frontier_rows(sqlite_db)[site.url("/")]["attempts"] == 0
        time.sleep(0.6)
        assert frontier_db.requeue_due(sqlite_db) == 1
        crawl(sqlite_db, settings)
        requests = len(page_hits(site))
    row = frontier_rows(sqlite_db)[site.url("/")]
    assert requests == 4 and row["state"] == "done" and row["attempts"] == 0


def test_a_host_over_its_page_budget_is_still_refetched(sqlite_db: Database, make_settings: Any) -> None:
    settings = crawl_settings(make_settings, crawler_max_pages_per_host=3, crawler_recrawl_sec=0.5)
    with SiteServer(wide_site(6)) as site:
        crawl(sqlite_db, settings, [site.url("/")])
        first = {hit.path for hit in page_hits(site)}
        time.sleep(0.6)
        assert frontier_db.requeue_due(sqlite_db) == 3
        crawl(sqlite_db, settings)
        again = [hit.path for hit in page_hits(site)][3:]
    assert len(first) == 3 and sorted(again) == sorted(first)  # the same three pages, fetched again
