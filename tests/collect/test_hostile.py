"""A hostile site is crawled in bounded time and memory: every trick is counted and skipped, nothing
reaches a private address, and the ordinary pages among the hostile ones are stored."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pytest

from aifactory.collect import frontier as frontier_db
from aifactory.collect.links import feed_links
from aifactory.collect.robots import Robots, content_usage_lines, tdm_reserved, wildcard_match
from aifactory.db import Database
from tests.collect.harness import crawl, crawl_settings, frontier_rows, page_rows, queue
from tests.collect.hostile import (
    BACKTRACK_PATH,
    PATHOLOGICAL_FEED,
    PATHOLOGICAL_ROBOTS,
    PATHOLOGICAL_TDMREP,
    hostile_routes,
)
from tests.collect.sites import SiteServer, page

# Each of these took seconds with the patterns they replace, and grows quadratically (or worse) with the
# input; linear parsing takes milliseconds. The bound is far above that, so a loaded machine passes.
LINEAR_BOUND_SEC = 5.0


@contextmanager
def memory_watch() -> Iterator[dict[str, int]]:
    """The peak growth of this process's resident memory while the block runs (sampled)."""
    process = psutil.Process()
    seen = {"base": process.memory_info().rss, "peak": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            seen["peak"] = max(seen["peak"], process.memory_info().rss - seen["base"])

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(5)


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - started


def test_feed_links_are_found_in_linear_time() -> None:
    links, seconds = timed(feed_links, PATHOLOGICAL_FEED + "<item><link>http://x.test/a</link></item>")
    assert seconds < LINEAR_BOUND_SEC
    assert links == ["http://x.test/a"]  # what follows the pathological part is still read
    spaced, seconds = timed(
        feed_links, "<rss><item><link>" + " " * 2_000_000 + "http://x.test/b</link></item>"
    )
    assert spaced == ["http://x.test/b"] and seconds < LINEAR_BOUND_SEC
    assert feed_links('<feed><link rel="alternate" href="https://x.test/c"/><id>urn:x</id></feed>') == [
        "https://x.test/c"
    ]


def test_robots_and_tdmrep_are_parsed_in_linear_time() -> None:
    rules, seconds = timed(Robots, 200, PATHOLOGICAL_ROBOTS)
    assert seconds < LINEAR_BOUND_SEC
    assert not rules.allows("http://s.test/private/x", "AIFactoryBot")
    assert rules.ai_optout("http://s.test/blog/1") == "robots.txt Content-Usage train-ai=n"
    usage, seconds = timed(content_usage_lines, "\n" * 200_000 + "content-usage: train-ai=n\n")
    assert usage == [("/", True)] and seconds < LINEAR_BOUND_SEC
    reserved, seconds = timed(tdm_reserved, PATHOLOGICAL_TDMREP, "http://s.test" + BACKTRACK_PATH * 10)
    assert not reserved and seconds < LINEAR_BOUND_SEC


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [("/news/*", "/news/today", True), ("/news/*", "/new", False), ("/*.pdf$", "/a/b.pdf", True),
     ("/*.pdf$", "/a/b.pdf?x", False), ("/a*b*c", "/aXbYc/z", True), ("/a*b*c", "/acb", False),
     ("/exact$", "/exact", True), ("/exact$", "/exactly", False), ("/", "/anything", True),
     ("/a*a$", "/a", False), ("/a*a$", "/aa", True)],
)  # fmt: skip
def test_wildcards_match_like_robots_patterns(pattern: str, path: str, matches: bool) -> None:
    assert wildcard_match(pattern, path) is matches


def test_a_hostile_site_is_crawled_in_bounded_time_and_memory(db: Database, make_settings: Any) -> None:
    settings = crawl_settings(
        make_settings,
        crawler_private_allowlist=["127.0.0.2/32"],  # the hostile site; 127.0.0.1 is off limits
        crawler_read_timeout_sec=0.5,
        crawler_total_timeout_sec=2.0,
        crawler_max_body_bytes=1_000_000,
        crawler_max_attempts=2,
        crawler_retry_base_sec=0.1,
        crawler_max_backoff_sec=2.0,
        crawler_max_pages_per_host=60,
        crawler_max_depth=2,
        crawler_domain_concurrency=4,
        max_crawler_workers=8,
    )
    with (
        SiteServer({"/secret": page("internal")}, host="127.0.0.1") as internal,
        SiteServer(hostile_routes(internal.origin), host="127.0.0.2") as site,
        memory_watch() as memory,
    ):
        queue(db, settings, [site.url("/")], scope="")  # follow every link, wherever it points
        started = time.monotonic()
        counts = crawl(db, settings, time_limit=90)
        elapsed = time.monotonic() - started
        frontier_db.mark_due(db, [site.url("/changing")])
        crawl(db, settings)  # a page that changes on every fetch is fetched again and replaced
        storm_hits = site.hits_for("/storm")
    assert internal.hits == []  # not one request reached the private address, in any spelling
    assert elapsed < 60 and memory["peak"] < 150 * 1024 * 1024, (elapsed, memory)
    state = {
        url.removeprefix(site.origin): (row["state"], row["error"]) for url, row in frontier_rows(db).items()
    }
    assert state["/slowloris"] == ("failed", "timeout")
    assert state["/slow-headers"] == ("failed", "timeout")
    assert (
        state["/endless-chunked"] == state["/gzip-bomb"] == state["/brotli-bomb"] == ("skipped", "too_large")
    )
    assert state["/loop-a"] == ("skipped", "redirect_loop")
    assert state["/huge-header"][0] == "failed"
    # Every IPv4 spelling of 127.0.0.1 is one URL after normalization; it and each IPv6 form that
    # carries 127.0.0.1 are refused without a request, and counted as what they are.
    assert state[internal.url("/secret")] == ("skipped", "unsafe_address")
    refused = [path for path, (_state, error) in state.items() if error == "unsafe_address"]
    assert len(refused) == 5 and all(path.endswith(f":{internal.port}/secret") for path in refused), refused
    assert counts["errors_unsafe_address"] == 5 and counts["errors_robots_unreachable"] == 0
    # 429 with Retry-After: asked twice (CRAWLER_MAX_ATTEMPTS), a second apart, then given up.
    assert state["/storm"] == ("failed", "http_429") and len(storm_hits) == 2
    assert storm_hits[1].at - storm_hits[0].at >= 1.0 - 0.01
    stored = {url.removeprefix(site.origin): row for url, row in page_rows(db).items()}
    for path in ("/ok", "/bad-charset", "/codec-charset", "/feed", "/nested", "/link-farm", BACKTRACK_PATH):
        assert state[path] == ("done", None), path
    assert stored["/bad-charset"]["title"] == "café"
    assert stored[BACKTRACK_PATH]["train_allowed"]  # the backtracking rules, matched right, reserve nothing
    assert stored["/link-farm"]["links"] <= 2000
    assert (
        stored["/changing"]["title"] == "version 1"
        and frontier_rows(db)[site.url("/changing")]["attempts"] == 0
    )
    assert counts["bytes"] < 40 * 1_000_000  # bombs and endless bodies were cut off
