"""Ignite a node on a local site: crawler, text engine and sources together fill the documents table."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from aifactory.cluster import commands, engine_state
from aifactory.cluster.node import Node
from aifactory.cluster.registry import available_engines
from aifactory.db import Database, counters
from aifactory.db.schema import documents
from tests.collect.harness import TEST_CRAWL
from tests.collect.sites import Handler, SiteServer
from tests.text import pages


def html(title: str, paragraphs: list[str], lang: str = "en", links: str = "") -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=pages.page(title, paragraphs, lang=lang, extra_body=links), content_type="text/html"
        )

    return handler


def fixture_site() -> SiteServer:
    home_links = "".join(
        f'<p><a href="{p}">{p}</a></p>' for p in ("/park", "/park-ja", "/birds", "/spam", "/copy")
    )
    return SiteServer(
        routes={
            "/": html(
                "Riverton Daily",
                ["Welcome to the Riverton Daily. Read our latest articles below."],
                links=home_links,
            ),
            "/park": html("Council approves park plan", pages.NEWS_EN),
            "/park-ja": html("公園整備計画を可決", pages.NEWS_JA, lang="ja"),
            "/birds": html("Kingfishers", pages.WIKI_EN),
            "/spam": html("Cheap watches", pages.SPAM_EN),
            "/copy": html("Council approves park plan (copy)", pages.NEWS_EN),
            "/robots.txt": _text("User-agent: *\nAllow: /\n"),
        }
    )


def _text(body: str) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(text=body, content_type="text/plain")

    return handler


def stored(db: Database) -> dict[str, dict]:
    with db.read() as conn:
        return {row.url: dict(row._mapping) for row in conn.execute(sa.select(documents))}


def settled(db: Database, site: SiteServer) -> bool:
    """Both languages stored, the spam filtered, the copy recognised."""
    seen = counters.get_all(db, prefix="docs.")
    return (
        {site.url("/park-ja"), site.url("/birds")} <= set(stored(db))
        and any(name.startswith("docs.filtered.") for name in seen)
        and any(name.startswith("docs.duplicate.") for name in seen)
    )


def test_an_ignited_node_turns_a_site_into_documents(db: Database, make_settings: Any) -> None:
    with fixture_site() as site:
        settings = make_settings(database_url=db.url, web_seed_urls=[site.url("/")], **TEST_CRAWL)
        node = Node(settings, db, available_engines(), role="master", node_id="m1")
        node.start()
        try:
            commands.send_command(db, "start")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not settled(db, site):
                time.sleep(0.3)
        finally:
            node.stop(timeout=20)
    docs = stored(db)
    states = {
        s["engine"]: (s["phase"], s["detail"], s["last_error"][-300:]) for s in engine_state.list_states(db)
    }
    assert {d["language"] for d in docs.values()} >= {"en", "ja"}, states
    # /copy is /park under another heading: whichever was processed first is kept, the other is a duplicate
    [article] = [docs[u] for u in (site.url("/park"), site.url("/copy")) if u in docs]
    assert "railway yard" in article["text"] and "Weather" not in article["text"]
    assert site.url("/spam") not in docs
    totals = counters.get_all(db, prefix="docs.")
    assert totals["docs.stored.web"] == len(docs)
    assert totals.get("docs.filtered.repeated_lines", 0) + totals.get("docs.filtered.too_short", 0) >= 1
    assert totals.get("docs.duplicate.near", 0) + totals.get("docs.duplicate.exact", 0) == 1
