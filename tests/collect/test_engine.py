"""The collector engine under the node supervisor: seeds, counters, shares, and a prompt stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aifactory.cluster import commands, engine_state, membership
from aifactory.cluster.context import EngineContext
from aifactory.cluster.node import Node
from aifactory.cluster.registry import available_engines
from aifactory.collect import engine as collector_engine
from aifactory.collect.engine import plan_cycle, seed_urls
from aifactory.collect.sink import FetchedPage, PageStore
from aifactory.db import Database, counters
from aifactory.db.schema import pages, sites
from aifactory.text import staging
from aifactory.text.pipeline import RawDocument
from tests.collect.harness import crawl, crawl_settings, frontier_rows, page_rows, queue
from tests.collect.sites import SiteServer, links, page, text, wide_site


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stored_pages(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(pages)).scalar_one())


def test_the_engine_crawls_while_ignited_and_stops_within_seconds(db: Database, make_settings: Any) -> None:
    routes = wide_site(80)
    routes["/broken"] = text("oops", status=500)
    with SiteServer(routes) as site:
        settings = crawl_settings(
            make_settings,
            database_url=db.url,
            web_seed_urls=[site.url("/"), site.url("/broken"), "ftp://not-crawlable/"],
            crawler_domain_min_interval_sec=0.05,
            max_crawl_pages_per_cycle=30,
        )
        node = Node(settings, db, available_engines(), role="master")
        node.start()
        try:
            commands.send_command(db, "start", node_id=node.node_id)
            wait_for(lambda: stored_pages(db) >= 40, 30, "40 pages")  # more than one 30-page cycle
            state = engine_state.load(db, node.node_id, "collector")
            assert state is not None and state["phase"] in ("running", "crawling", "idle")
            stopped_at = time.monotonic()
            commands.send_command(db, "stop", node_id=node.node_id)
            wait_for(lambda: "collector" not in node.runners, 10, "the engine to stop")
            assert time.monotonic() - stopped_at < 5
        finally:
            node.stop()
    state = engine_state.load(db, node.node_id, "collector")
    assert state is not None and state["phase"] == "stopped" and state["restarts"] == 0
    with db.read() as conn:  # every lease was given back
        assert conn.execute(sa.select(sites.c.site).where(sites.c.lease_owner.is_not(None))).all() == []
    # The engine's counters and the running counters tell the same story as the tables.
    engine_counts = state["counters"]
    totals = counters.get_all(db, prefix="crawl.")
    assert engine_counts["fetched"] == totals["crawl.fetched"] == stored_pages(db)
    assert engine_counts["errors_http_5xx"] >= 1 and totals["crawl.errors.http_5xx"] >= 1
    assert engine_counts["bytes"] == totals["crawl.bytes"] > 0
    assert engine_counts["cycles"] >= 2 and engine_counts["pages_per_sec"] > 0
    assert 80 > len([row for row in frontier_rows(db).values() if row["state"] == "done"]) >= 40


def test_the_collector_reports_its_fetches_in_flight(db: Database, make_settings: Any) -> None:
    """The dashboard's "active fetchers": a level read at each report, back to 0 when the crawl stops."""
    routes = wide_site(20)
    slow = page("<p>slow page</p>", title="slow")

    async def slowly(request: Any) -> Any:
        await asyncio.sleep(1.5)  # each fetch stays in flight across a report
        return await slow(request)

    for i in range(20):
        routes[f"/p/{i}"] = slowly
    with SiteServer(routes) as site:
        settings = crawl_settings(
            make_settings,
            database_url=db.url,
            web_seed_urls=[site.url("/")],
            crawler_domain_min_interval_sec=0.05,
        )
        node = Node(settings, db, available_engines(), role="master")
        node.start()
        try:
            commands.send_command(db, "start", node_id=node.node_id)

            def active() -> float:
                state = engine_state.load(db, node.node_id, "collector") or {}
                return float((state.get("counters") or {}).get("active_fetchers", 0))

            wait_for(lambda: active() >= 1, 60, "a fetch in flight to be reported")
            commands.send_command(db, "stop", node_id=node.node_id)
            wait_for(lambda: "collector" not in node.runners, 20, "the engine to stop")
        finally:
            node.stop()
    assert active() == 0


def test_the_crawl_waits_while_the_text_engine_is_behind(db: Database, make_settings: Any) -> None:
    """Backpressure: with the text engine stopped, fetched pages pile up only to STAGING_MAX_PAGES;
    the collector then waits (and says so) instead of filling the disk, and goes on once they drain."""
    with SiteServer(wide_site(60)) as site:
        settings = crawl_settings(
            make_settings,
            database_url=db.url,
            web_seed_urls=[site.url("/")],
            staging_max_pages=12,
            max_crawl_pages_per_cycle=30,
        )
        collector_only = [spec for spec in available_engines() if spec.name == "collector"]
        node = Node(settings, db, collector_only, role="master")
        node.start()
        try:
            commands.send_command(db, "start", node_id=node.node_id)

            def phase() -> str:
                state = engine_state.load(db, node.node_id, "collector")
                return state["phase"] if state else ""

            wait_for(lambda: phase() == "waiting", 30, "the collector to wait")
            assert staging.backlog(db) == 12
            time.sleep(1.0)
            assert staging.backlog(db) == 12 and stored_pages(db) == 12  # nothing more was fetched
            with db.begin() as conn:  # the text engine catches up
                conn.execute(staging.staged_pages.delete())
            wait_for(lambda: stored_pages(db) >= 24, 30, "the crawl to go on")
        finally:
            node.stop()
    state = engine_state.load(db, node.node_id, "collector")
    assert state is not None and state["counters"]["backpressure_waits"] >= 1


def test_collectors_reserve_their_staging_room_from_one_budget(db: Database) -> None:
    assert staging.reserve(db, "a", 30, 50, 60.0) == (30, 0)
    assert staging.reserve(db, "b", 30, 50, 60.0) == (20, 0)  # what a holds is not b's to take
    assert staging.reserve(db, "c", 30, 50, 60.0) == (0, 0)
    staging.reserve(db, "a", 0, 50, 0.0)  # a's cycle is over: its room is free again
    assert staging.reserve(db, "c", 30, 50, 60.0) == (30, 0)
    with db.begin() as conn:
        staging.stage(
            db, conn, [RawDocument(url=f"https://s.example/{i}", body="text") for i in range(10)], "c"
        )
    staging.reserve(db, "b", 0, 50, 0.0)
    assert staging.reserve(db, "a", 30, 50, 60.0) == (10, 10)  # 10 waiting + c's 30 leave 10
    staging.reserve(db, "c", 5, 50, -1.0)  # a reservation that expired (its node died) counts for nothing
    assert staging.reserve(db, "b", 50, 50, 60.0) == (30, 10)
    for node in ("a", "b", "c"):
        staging.reserve(db, node, 0, 50, 0.0)
    # With two collectors neither takes more than half, so one long cycle never starves the other.
    assert staging.reserve(db, "a", 50, 50, 60.0, nodes=2) == (25, 10)
    assert staging.reserve(db, "b", 50, 50, 60.0, nodes=2) == (15, 10)


def test_two_collectors_never_stage_more_than_the_shared_budget(db: Database, make_settings: Any) -> None:
    with (
        SiteServer(wide_site(60), host="127.0.0.2") as one,
        SiteServer(wide_site(60), host="127.0.0.3") as two,
    ):
        collector_only = [spec for spec in available_engines() if spec.name == "collector"]
        nodes = []
        for name, role in (("collector-a", "master"), ("collector-b", "worker")):
            settings = crawl_settings(
                make_settings,
                database_url=db.url,
                node_id=name,
                system_role=role,
                web_seed_urls=[one.url("/"), two.url("/")],
                staging_max_pages=12,
                max_crawl_pages_per_cycle=60,
            )
            nodes.append(Node(settings, db, collector_only, role=role))
        for node in nodes:
            node.start()
        try:
            commands.send_command(db, "start")

            def waiting(node: Node) -> bool:
                state = engine_state.load(db, node.node_id, "collector")
                return bool(state) and state["phase"] == "waiting"

            wait_for(lambda: all(waiting(node) for node in nodes), 30, "both collectors to wait")
            assert staging.backlog(db) == 12  # one budget for the two of them, not 12 each
        finally:
            for node in nodes:
                node.stop()


def test_each_node_takes_its_share(db: Database, make_settings: Any) -> None:
    for node_id, role in [("w-b", "worker"), ("w-a", "worker"), ("m", "master"), ("w-c", "worker")]:
        membership.register(
            db, node_id=node_id, role=role, hostname="h", pid=1, instance_id=node_id, version="t", api_url="",
            alive_window=60,
        )  # fmt: skip

    def plan(node_id: str, **overrides: Any) -> tuple[Any, int, int]:
        role = "master" if node_id == "m" else "worker"
        settings = make_settings(**{"max_crawl_pages_per_cycle": 200, "system_role": role, **overrides})
        return plan_cycle(EngineContext(settings, db, node_id, "collector", threading.Event()))

    assert plan("w-b") == ((2, 4), 50, 4)  # sorted: m, w-a, w-b, w-c
    assert plan("w-b", collection_include_master=False) == ((1, 3), 66, 3)
    assert plan("w-a", max_crawl_pages_per_cycle=30) == ((1, 4), 20, 4)  # never below 20 pages
    # A master left out of collection stands aside while workers collect.
    assert plan("m", collection_include_master=False) == (None, 0, 3)


def test_doc_seeds_stay_in_their_directory_and_depth_is_limited(db: Database, make_settings: Any) -> None:
    routes = {
        "/docs/guide/index.html": page(links("a.html", "../api.html", "/blog/post", "deep/1.html")),
        "/docs/guide/a.html": page("a"),
        "/docs/guide/deep/1.html": page(links("2.html")),
        "/docs/guide/deep/2.html": page("two hops"),
        "/docs/api.html": page("outside the guide"),
        "/blog/post": page("outside the docs"),
    }
    with SiteServer(routes) as site:
        settings = crawl_settings(
            make_settings, doc_seed_urls=[site.url("/docs/guide/index.html")], crawler_max_depth=1
        )
        (seed,), invalid = seed_urls(settings)
        assert invalid == [] and seed.source == "docs" and seed.scope == site.url("/docs/guide/")
        queue(db, settings, [seed.url], source="docs", scope=seed.scope)
        crawl(db, settings)
    crawled = {url.removeprefix(site.origin) for url in page_rows(db)}
    assert crawled == {"/docs/guide/index.html", "/docs/guide/a.html", "/docs/guide/deep/1.html"}
    assert {row["source"] for row in page_rows(db).values()} == {"docs"}


def test_a_host_stops_at_its_page_budget(db: Database, make_settings: Any) -> None:
    with SiteServer(wide_site(30)) as site:
        crawl(db, crawl_settings(make_settings, crawler_max_pages_per_host=10), [site.url("/")])
        fetched = [path for path in site.paths() if path.startswith(("/p/", "/"))]
    assert len(page_rows(db)) == 10
    assert len([path for path in fetched if path not in ("/robots.txt", "/.well-known/tdmrep.json")]) == 10


class PickySink(PageStore):
    """A sink that cannot take one particular page (a bug in a later pipeline stage, say)."""

    def handle(self, pages: list[FetchedPage], conn: Connection) -> None:
        if any(page.url.endswith("/p/3") for page in pages):
            raise ValueError("cannot handle /p/3")
        super().handle(pages, conn)


def test_a_page_the_sink_rejects_is_counted_and_the_rest_are_kept(db: Database, make_settings: Any) -> None:
    with SiteServer(wide_site(8)) as site:
        counts = crawl(db, crawl_settings(make_settings), [site.url("/")], sink=PickySink(db))
    rows = frontier_rows(db)
    assert rows[site.url("/p/3")]["state"] == "failed" and rows[site.url("/p/3")]["error"] == "sink"
    assert set(page_rows(db)) == {site.url("/")} | {site.url(f"/p/{i}") for i in range(8) if i != 3}
    assert counts["errors_sink"] == 1 and counts["stored"] == 8
    assert counters.get_all(db)["crawl.errors.sink"] == 1


def test_the_collector_never_waits_on_the_database_on_its_event_loop(
    db: Database, make_settings: Any
) -> None:
    """Counters, phases and events are written from worker threads: a slow or failing database can
    delay them, never the event loop that runs every fetch (nor kill the task that stores results)."""
    loop_thread = "collector-loop"
    on_loop: list[str] = []

    def record(*args: Any) -> None:
        if threading.current_thread().name == loop_thread:
            on_loop.append(str(args[2])[:80])

    with SiteServer(wide_site(30)) as site:
        settings = crawl_settings(
            make_settings, database_url=db.url, web_seed_urls=[site.url("/")], max_crawl_pages_per_cycle=10
        )
        stop = threading.Event()
        ctx = EngineContext(settings, db, "n1", "collector", stop)
        sa.event.listen(db.engine, "before_cursor_execute", record)
        try:
            thread = threading.Thread(target=collector_engine.run, args=(ctx,), name=loop_thread)
            thread.start()
            wait_for(lambda: stored_pages(db) >= 20, 30, "20 pages")  # several cycles, counters written
            stop.set()
            thread.join(30)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", record)
    assert not thread.is_alive()
    assert on_loop == []
