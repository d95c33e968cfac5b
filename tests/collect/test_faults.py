"""Database faults injected into a running collector: it never hangs, Stop returns within a bound, no URL
is lost, and no URL is fetched again once its page was stored. Leases hold when renewals fail."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web

from aifactory.cluster import commands
from aifactory.cluster import engine_state as engine_db
from aifactory.cluster.node import Node
from aifactory.cluster.registry import available_engines
from aifactory.collect import frontier as frontier_db
from aifactory.collect.crawler import Crawler
from aifactory.db import Database, counters, migrate
from aifactory.db.schema import frontier, pages, sites
from tests.collect.harness import crawl, crawl_settings, frontier_rows, page_rows, queue
from tests.collect.sites import SiteServer, links, page, wide_site

SITE_FILES = ("/robots.txt", "/.well-known/tdmrep.json")


class Outage(Exception):
    pass


def flatten(parameters: Any) -> Iterator[Any]:
    """Every value in a statement's parameters (a dict, a tuple, or a list of either)."""
    if isinstance(parameters, dict):
        parameters = parameters.values()
    if isinstance(parameters, list | tuple) or not isinstance(parameters, str | bytes | int | float | None):
        for value in parameters or ():
            yield from flatten(value) if isinstance(value, dict | list | tuple) else (value,)
    else:
        yield parameters


class Faults:
    """Errors raised from inside statement execution, as the driver would raise them.

    `down`: every statement run on a crawler database thread fails with OperationalError (the
    database is away). `poison`: an INSERT of that kind carrying that URL fails with DataError (a row
    that can never be written). Commits of pages rows are recorded, to tell when each page was stored."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.down = False
        self.transient_left = 0  # that many statements on crawler threads fail, then the database is back
        self.outage_after: tuple[int, int] | None = None  # (pages stored, statements to fail) from then
        self.poison: tuple[str, str] | None = None  # (statement start, URL) that always fails
        self.stored_at: dict[str, float] = {}
        self._pending: dict[int, list[str]] = defaultdict(list)
        self._lock = threading.Lock()

    def before(
        self, conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool
    ) -> None:
        on_crawler = threading.current_thread().name.startswith("crawl-db")
        with self._lock:
            fail = on_crawler and (self.down or self.transient_left > 0)
            if fail and self.transient_left > 0:
                self.transient_left -= 1
        if fail:
            raise sa.exc.OperationalError(statement, parameters, Outage("injected: the database is away"))
        command = statement.lstrip().upper()
        if command.startswith(("INSERT INTO PAGES", "INSERT INTO FRONTIER")):
            urls = [value for value in flatten(parameters) if isinstance(value, str) and value[:4] == "http"]
            if self.poison is not None and command.startswith(self.poison[0]) and self.poison[1] in urls:
                raise sa.exc.DataError(
                    statement, parameters, Outage("injected: value too long for its column")
                )
            if command.startswith("INSERT INTO PAGES"):
                self._pending[id(conn)] += urls

    def commit(self, conn: Any) -> None:
        now = time.monotonic()
        for url in self._pending.pop(id(conn), []):
            self.stored_at.setdefault(url, now)
        if self.outage_after is not None and len(self.stored_at) >= self.outage_after[0]:
            with self._lock:
                self.transient_left, self.outage_after = self.outage_after[1], None

    def rollback(self, conn: Any) -> None:
        self._pending.pop(id(conn), None)


@contextmanager
def faults(db: Database) -> Iterator[Faults]:
    injected = Faults(db)
    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", injected.before),
        ("commit", injected.commit),
        ("rollback", injected.rollback),
    ]
    for name, fn in listeners:
        sa.event.listen(db.engine, name, fn)
    try:
        yield injected
    finally:
        for name, fn in listeners:
            sa.event.remove(db.engine, name, fn)


def fetched_after_stored(sites_: list[SiteServer], stored_at: dict[str, float]) -> list[str]:
    """URLs requested again after their page had been committed."""
    late = []
    for site in sites_:
        for hit in site.hits:
            url = site.origin + hit.path
            if hit.path not in SITE_FILES and url in stored_at and hit.at > stored_at[url]:
                late.append(url)
    return late


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def in_thread(fn: Callable[[], Any], bound: float) -> Any:
    """Run `fn` in a thread and fail (rather than hang the suite) if it does not return in `bound`."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"did not return within {bound}s"
    if "error" in box:
        raise box["error"]
    return box.get("result")


def test_a_failing_count_report_never_hangs_the_crawl(db: Database, make_settings: Any) -> None:
    settings = crawl_settings(make_settings)

    def failing_report(_counts: dict[str, float]) -> None:
        raise RuntimeError("the dashboard's counters cannot be written")

    async def main() -> None:
        async with Crawler(settings, db, "n1", on_counts=failing_report) as crawler:
            await crawler.run(max_pages=100, stop=lambda: False, idle_grace=0.4)

    with SiteServer(wide_site(20)) as site:
        queue(db, settings, [site.url("/")])
        in_thread(lambda: asyncio.run(main()), 60)
    assert len(page_rows(db)) == 21


def test_a_brief_outage_is_waited_out_and_nothing_is_fetched_twice(db: Database, make_settings: Any) -> None:
    settings = crawl_settings(make_settings, crawler_db_retry_sec=30.0)
    with SiteServer(wide_site(20)) as site, faults(db) as injected:
        queue(db, settings, [site.url("/")])
        injected.outage_after = (1, 5)  # once the first page is stored, five statements in a row fail
        counts = in_thread(lambda: crawl(db, settings, time_limit=60), 90)
        late = fetched_after_stored([site], injected.stored_at)
        requests = Counter(hit.path for hit in site.hits if hit.path not in SITE_FILES)
    assert injected.transient_left == 0 and injected.outage_after is None
    assert {row["state"] for row in frontier_rows(db).values()} == {"done"} and len(page_rows(db)) == 21
    assert late == [] and max(requests.values()) == 1, requests
    assert counts["fetched"] == 21


@pytest.mark.parametrize(
    ("statement", "poisoned", "kind"),
    [("INSERT INTO PAGES", "/p/7", "sink"), ("INSERT INTO FRONTIER", "/poison-link", "store")],
)
def test_a_row_that_always_fails_is_quarantined_and_the_rest_stored(
    db: Database, make_settings: Any, statement: str, poisoned: str, kind: str
) -> None:
    """A page whose own row cannot be written (the sink fails), or whose link cannot be queued (the
    frontier fails): that one URL is marked failed once, every other page is stored."""
    settings = crawl_settings(make_settings)
    routes = wide_site(20)
    routes["/p/7"] = page(links("/", "/poison-link"))
    with SiteServer(routes) as site, faults(db) as injected:
        injected.poison = (statement, site.url(poisoned))
        counts = in_thread(lambda: crawl(db, settings, [site.url("/")], time_limit=60), 90)
        requests = Counter(hit.path for hit in site.hits if hit.path not in SITE_FILES)
    rows = frontier_rows(db)
    assert rows[site.url("/p/7")]["state"] == "failed" and rows[site.url("/p/7")]["error"] == kind
    assert requests["/p/7"] == 1 and max(requests.values()) == 1  # quarantined once, not fetched again
    assert set(page_rows(db)) == {url for url in rows if url != site.url("/p/7")}
    assert {row["state"] for url, row in rows.items() if url != site.url("/p/7")} == {"done"}
    assert counts[f"errors_{kind}"] == 1 and counters.get_all(db)[f"crawl.errors.{kind}"] == 1


@pytest.mark.postgres
def test_a_link_to_a_400_character_host_does_not_poison_its_page(pg_url: str, make_settings: Any) -> None:
    """On PostgreSQL a 400-character host overflowed `origin VARCHAR(300)`: the whole batch failed, was
    dropped and fetched again, forever. Such a host is not a host name (DNS allows 253 characters)."""
    db = Database(pg_url)
    migrate.upgrade(db)
    try:
        settings = crawl_settings(make_settings)
        huge = "http://" + ".".join(["a" * 60] * 7) + ".test/"  # 426 characters of host name
        with SiteServer({"/": page(links(huge, "/next")), "/next": page("next")}) as site:
            queue(db, settings, [site.url("/")], scope="")
            in_thread(lambda: crawl(db, settings, time_limit=30), 60)
            requests = Counter(site.paths())
        assert set(page_rows(db)) == {site.url("/"), site.url("/next")}
        assert requests["/"] == requests["/next"] == 1
        with db.read() as conn:
            assert conn.execute(sa.select(sa.func.max(sa.func.length(frontier.c.origin)))).scalar() < 300
    finally:
        db.dispose()


def test_a_long_outage_stops_the_collector_for_its_supervisor_and_loses_nothing(
    db: Database, make_settings: Any
) -> None:
    servers = [SiteServer(wide_site(15), host=f"127.0.0.{2 + i}") for i in range(3)]
    for server in servers:
        server.start()
    try:
        settings = crawl_settings(
            make_settings,
            database_url=db.url,
            web_seed_urls=[server.url("/") for server in servers],
            crawler_domain_min_interval_sec=0.05,
            crawler_db_retry_sec=1.0,
            crawler_lease_sec=3.0,
            max_crawl_pages_per_cycle=1000,
            staging_max_pages=0,
        )
        collector = [spec for spec in available_engines() if spec.name == "collector"]
        expected = {server.url(path) for server in servers for path in wide_site(15)}
        total = len(expected)
        with faults(db) as injected:
            node = Node(settings, db, collector, role="master")
            node.start()
            try:
                commands.send_command(db, "start", node_id=node.node_id)
                wait_for(lambda: len(injected.stored_at) >= 10, 30, "10 pages")
                injected.down = True  # longer than CRAWLER_DB_RETRY_SEC: the collector must give up
                state = lambda: engine_db.load(db, node.node_id, "collector") or {}  # noqa: E731
                wait_for(lambda: state().get("restarts", 0) >= 1, 30, "the collector to stop with an error")
                assert "database unavailable" in state()["last_error"]
                injected.down = False  # the database is back: the supervisor restarts the collector
                wait_for(lambda: expected <= injected.stored_at.keys(), 60, "every page")
                injected.down = True  # and Stop, pressed while the database is away, still returns
                stopped_at = time.monotonic()
                commands.send_command(db, "stop", node_id=node.node_id)
                wait_for(lambda: not node.runners, 20, "the collector to stop")
                assert time.monotonic() - stopped_at < 20
                injected.down = False
            finally:
                injected.down = False
                node.stop()
            late = fetched_after_stored(servers, injected.stored_at)
        assert late == [], late
        rows = frontier_rows(db)
        assert len(rows) == total and {row["state"] for row in rows.values()} == {"done"}  # nothing lost
        assert set(page_rows(db)) == set(rows)
    finally:
        for server in servers:
            server.stop()


def test_two_nodes_never_fetch_one_site_at_once_when_renewals_fail(
    db: Database, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node A's renewals and releases fail once it holds the site, as if it lost the database while
    fetching: its lease can only run out, and A must have stopped fetching by then, so B, which takes
    the site over, never fetches in parallel with it."""
    settings = crawl_settings(make_settings, crawler_lease_sec=1.5, crawler_domain_concurrency=1)
    in_flight = {"now": 0, "max": 0}
    routes = wide_site(30)

    async def slow(request: web.Request) -> web.StreamResponse:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            await asyncio.sleep(0.15)
            return await routes[request.path](request)
        finally:
            in_flight["now"] -= 1

    partitioned = threading.Event()  # set once A holds the site: from then on A cannot reach the database

    def cut_off(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(db_: Database, owner: str, *args: Any, **kwargs: Any) -> Any:
            if owner == "node-a" and partitioned.is_set():
                raise sa.exc.OperationalError(
                    "UPDATE sites", {}, Outage("injected: node A lost the database")
                )
            return real(db_, owner, *args, **kwargs)

        return call

    for name in ("renew_leases", "release_site", "release_all"):
        monkeypatch.setattr(frontier_db, name, cut_off(getattr(frontier_db, name)))

    def held_by(owner: str) -> bool:
        with db.read() as conn:
            return (
                conn.execute(sa.select(sites.c.site).where(sites.c.lease_owner == owner)).first() is not None
            )

    def done() -> bool:
        return {row["state"] for row in frontier_rows(db).values()} == {"done"} and len(
            frontier_rows(db)
        ) == 31

    async def node(owner: str, wait_for_a: bool) -> None:
        node_settings = settings.model_copy(
            update={"crawler_db_retry_sec": 0.5 if owner == "node-a" else 30.0}
        )
        if wait_for_a:
            while not held_by("node-a"):
                await asyncio.sleep(0.05)
            partitioned.set()
        async with Crawler(node_settings, db, owner) as crawler:
            deadline = time.monotonic() + 30
            while not done() and time.monotonic() < deadline:
                await crawler.run(
                    max_pages=100, stop=lambda: done() or time.monotonic() > deadline, idle_grace=0.3
                )
                if owner == "node-a":
                    return  # A has left its site; it stays out of the way

    async def main() -> None:
        await asyncio.gather(node("node-a", False), node("node-b", True))

    with SiteServer(dict.fromkeys(routes, slow)) as site:
        queue(db, settings, [site.url("/")])
        in_thread(lambda: asyncio.run(main()), 90)
    assert in_flight["max"] == 1  # never two requests to the site at once
    assert done()  # and B finished what A had to leave
    with db.read() as conn:
        by_node = dict(
            conn.execute(sa.select(pages.c.node_id, sa.func.count()).group_by(pages.c.node_id)).all()
        )
    assert by_node.get("node-b", 0) > 0


def test_a_site_whose_task_fails_is_backed_off_not_claimed_again_at_once(
    db: Database, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = crawl_settings(make_settings, crawler_retry_base_sec=30.0)
    calls = {"n": 0}
    real_due = frontier_db.due_urls

    def broken(db_: Database, origin: str, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        raise ValueError("a bug in reading this site's queue")

    monkeypatch.setattr(frontier_db, "due_urls", broken)
    with SiteServer(wide_site(3)) as site:
        in_thread(lambda: crawl(db, settings, [site.url("/")], time_limit=3.0, until_settled=False), 30)
    monkeypatch.setattr(frontier_db, "due_urls", real_due)
    assert calls["n"] == 1  # once, then the site waits out its back-off instead of failing every claim
    wait = frontier_db.next_due_in(db, {site.origin})
    assert wait is not None and wait > 20
