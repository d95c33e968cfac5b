"""robots.txt and opt-outs: what may be fetched, and what may be trained on."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from aifactory.collect.robots import (
    ROBOTS_MAX_BYTES,
    Robots,
    header_optouts,
    meta_optouts,
    robots_from_response,
    tdm_reserved,
)
from aifactory.db import Database
from tests.collect.harness import crawl, crawl_settings, frontier_rows, host_row, page_rows
from tests.collect.sites import SiteServer, links, page, robots, text

TOKEN = "AIFactoryBot"
ROBOTS = """
User-agent: *
Disallow: /private/

User-agent: GPTBot
Disallow: /articles/

User-agent: AIFactoryBot
Disallow: /private/
Disallow: /only-others-may/
"""


def test_our_group_applies_and_ai_crawler_groups_mark_pages_not_for_training() -> None:
    rules = Robots(200, ROBOTS)
    assert rules.allows("http://s.test/articles/1", TOKEN)
    assert not rules.allows("http://s.test/only-others-may/x", TOKEN)
    assert rules.ai_optout("http://s.test/articles/1") == "robots.txt disallows GPTBot"
    assert rules.ai_optout("http://s.test/about") == ""
    usage = Robots(200, "User-agent: *\nAllow: /\nContent-Usage: /blog/ train-ai=n\n")
    assert usage.ai_optout("http://s.test/blog/post") == "robots.txt Content-Usage train-ai=n"
    assert usage.ai_optout("http://s.test/shop") == ""


def test_crawl_delay_and_request_rate() -> None:
    assert Robots(200, "User-agent: *\nCrawl-delay: 2\n").crawl_delay(TOKEN) == 2.0
    assert Robots(200, "User-agent: *\nRequest-rate: 1/5\n").crawl_delay(TOKEN) == 5.0
    assert Robots(200, "User-agent: *\nDisallow:\n").crawl_delay(TOKEN) is None


def test_robots_status_rules_follow_rfc_9309() -> None:
    assert robots_from_response(404, "").allows("http://s.test/x", TOKEN)  # type: ignore[union-attr]
    assert robots_from_response(403, "").allows("http://s.test/x", TOKEN)  # type: ignore[union-attr]
    assert robots_from_response(500, "") is None  # unreachable: disallowed for now
    assert robots_from_response(429, "") is None
    assert robots_from_response(0, "") is None  # no answer at all


def test_tdm_reservation_and_page_level_signals() -> None:
    tdmrep = json.dumps(
        [{"location": "/", "tdm-reservation": 0}, {"location": "/news/*", "tdm-reservation": 1}]
    )
    assert tdm_reserved(tdmrep, "http://s.test/news/today")
    assert not tdm_reserved(tdmrep, "http://s.test/about")
    assert not tdm_reserved("not json", "http://s.test/")
    assert header_optouts({"tdm-reservation": "1"}, TOKEN) == ["tdm-reservation header"]
    assert header_optouts({"x-robots-tag": "noai, noimageai"}, TOKEN) == ["X-Robots-Tag noai"]
    assert header_optouts({"x-robots-tag": "otherbot: noindex"}, TOKEN) == []
    assert header_optouts({"content-usage": "train-ai=n"}, TOKEN) == ["Content-Usage header train-ai=n"]
    assert meta_optouts(["noindex, follow"], "", TOKEN) == ["robots meta noindex"]
    assert meta_optouts([], "1", TOKEN) == ["tdm-reservation meta"]


def site_routes() -> dict[str, Any]:
    return {
        "/robots.txt": robots(ROBOTS),
        "/": page(links("/private/a", "/only-others-may/b", "/articles/1", "/about", "/meta", "/header")),
        "/private/a": page("secret"),
        "/only-others-may/b": page("not for us"),
        "/articles/1": page("an article"),
        "/about": page("about"),
        "/meta": page('<meta name="robots" content="noai"> text'),
        "/header": page("text", headers={"tdm-reservation": "1"}),
    }


def test_a_crawl_obeys_robots_and_marks_opted_out_pages(db: Database, make_settings: Any) -> None:
    with SiteServer(site_routes()) as site:
        counts = crawl(db, crawl_settings(make_settings), [site.url("/")])
        fetched = site.paths()
    assert "/private/a" not in fetched and "/only-others-may/b" not in fetched
    assert fetched.count("/robots.txt") == 1
    assert counts["robots_blocked"] == 2
    states = {url.removeprefix(site.origin): row["state"] for url, row in frontier_rows(db).items()}
    assert states["/private/a"] == states["/only-others-may/b"] == "blocked"
    stored = {url.removeprefix(site.origin): row for url, row in page_rows(db).items()}
    assert stored["/about"]["train_allowed"] and stored["/"]["train_allowed"]
    assert not stored["/articles/1"]["train_allowed"]
    assert stored["/articles/1"]["optout_reason"] == "robots.txt disallows GPTBot"
    assert stored["/meta"]["optout_reason"] == "robots meta noai"
    assert stored["/header"]["optout_reason"] == "tdm-reservation header"
    assert counts["not_for_training"] == 3
    # The robots.txt is cached for every node, for at most 24 hours.
    host = host_row(db, site.origin)
    assert host["robots_status"] == 200 and "GPTBot" in host["robots_body"]
    assert 0 < host["robots_expires_at"] - time.time() <= 24 * 3600 + 5


def test_tdmrep_json_reserves_rights_for_its_paths(db: Database, make_settings: Any) -> None:
    tdmrep = json.dumps([{"location": "/news/*", "tdm-reservation": 1}])
    routes = {
        "/": page(links("/news/1", "/blog/1")),
        "/news/1": page("news"),
        "/blog/1": page("blog"),
        "/.well-known/tdmrep.json": text(tdmrep, content_type="application/json"),
    }
    with SiteServer(routes) as site:
        crawl(db, crawl_settings(make_settings), [site.url("/")])
    stored = {url.removeprefix(site.origin): row for url, row in page_rows(db).items()}
    assert stored["/news/1"]["optout_reason"] == "tdmrep.json reservation"
    assert stored["/blog/1"]["train_allowed"]


def test_unreachable_robots_defers_the_site_then_retries(db: Database, make_settings: Any) -> None:
    failures = {"left": 1}

    async def flaky_robots(_request: web.Request) -> web.StreamResponse:
        if failures["left"]:
            failures["left"] -= 1
            return web.Response(status=503, text="down")
        return web.Response(text="User-agent: *\nDisallow: /no\n")

    routes = {
        "/robots.txt": flaky_robots,
        "/": page(links("/no", "/yes")),
        "/yes": page("y"),
        "/no": page("n"),
    }
    settings = crawl_settings(make_settings, crawler_robots_retry_sec=1.0)
    with SiteServer(routes) as site:
        first = crawl(db, settings, [site.url("/")], until_settled=False, idle_grace=0.2)
        assert site.paths() == ["/robots.txt"]  # 5xx: the site counts as disallowed for now
        assert first["errors_robots_unreachable"] == 1
        time.sleep(1.0)
        crawl(db, settings)
        paths = site.paths()
    assert paths.count("/robots.txt") == 2 and "/yes" in paths and "/no" not in paths


def test_a_10_mb_robots_txt_is_read_only_up_to_the_limit(db: Database, make_settings: Any) -> None:
    async def huge_robots(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"User-agent: *\nDisallow: /no\n")
        filler = b"# " + b"x" * 1022 + b"\n"
        for _ in range(10 * 1024):  # 10 MB of comments
            await response.write(filler)
        return response

    routes = {
        "/robots.txt": huge_robots,
        "/": page(links("/no", "/yes")),
        "/yes": page("y"),
        "/no": page("n"),
    }
    with SiteServer(routes) as site:
        started = time.monotonic()
        counts = crawl(db, crawl_settings(make_settings), [site.url("/")])
        assert time.monotonic() - started < 10
        paths = site.paths()
    assert "/yes" in paths and "/no" not in paths
    assert len(host_row(db, site.origin)["robots_body"]) <= ROBOTS_MAX_BYTES
    assert counts["bytes"] < 3 * 1024 * 1024  # the rest was never downloaded
