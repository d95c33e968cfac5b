"""Turning fetch results into database rows, many at a time.

Fetches finish one by one on the event loop; writing each in its own transaction would make the
database the bottleneck. The writer gathers what finished in the last few milliseconds and stores it in
one transaction (in a worker thread, off the event loop): the pages go to the sink, the URLs are marked,
the links are queued and the running counters move, all or nothing. A host task calls `flush()` before
it reads more URLs or gives its host back, so it never sees its own finished URLs as still queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from aifactory.collect import frontier as frontier_db
from aifactory.collect.links import parse_page
from aifactory.collect.robots import meta_nofollow, meta_optouts
from aifactory.collect.sink import FetchedPage, PageSink
from aifactory.collect.urls import in_scope, is_trap, normalize_url
from aifactory.db import counters
from aifactory.db.database import Database
from aifactory.settings import Settings

log = logging.getLogger("aifactory.crawl")
DB_RETRIES = 3  # a deadlock or serialization failure between nodes is retried, then the batch waits


@dataclass
class Result:
    """One URL's fate, as the host task decided it."""

    outcome: frontier_db.UrlOutcome
    origin: str
    page: FetchedPage | None = None
    depth: int = 0
    source: str = "web"
    scope: str = ""
    new_urls: list[frontier_db.NewUrl] = field(default_factory=list)  # e.g. a redirect to another host
    counts: dict[str, float] = field(default_factory=dict)
    new_page: bool = False  # a URL's first fetch: counts against its host's page budget


def global_name(name: str) -> str:
    """Engine counter name -> running counter name (errors_timeout -> crawl.errors.timeout)."""
    if name.startswith("errors_"):
        return "crawl.errors." + name[len("errors_") :]
    return "crawl." + name


def follow_links(
    page: FetchedPage, raw_links: list[str], base: str, scope: str, settings: Settings
) -> list[str]:
    """Normalize a page's links (all of them are kept on the page) and return those to follow."""
    normalized = []
    seen = set()
    for href in raw_links:
        url = normalize_url(href, base=base)
        if url is not None and url not in seen:
            seen.add(url)
            normalized.append(url)
    page.links = normalized
    return [
        url
        for url in normalized
        if in_scope(url, scope, allow_subdomains=settings.crawler_allow_subdomains) and not is_trap(url)
    ]


def prepare(result: Result, settings: Settings) -> None:
    """CPU work before the transaction: read the page's links and meta opt-outs."""
    page = result.page
    if page is None:
        return
    token = settings.crawler_user_agent
    try:
        meta = parse_page(page.text, page.mime, token)
    except Exception as exc:  # a parser failure costs the page's links, never the crawl
        log.debug("could not parse %s: %s", page.url, exc)
        result.counts["errors_parse"] = result.counts.get("errors_parse", 0) + 1
        return
    page.title = meta.title
    reasons = (
        meta_optouts(meta.robots, meta.tdm_reservation, token) if settings.crawler_respect_robots else []
    )
    if reasons:
        page.optout_reasons += reasons
        page.train_allowed = False
    base = normalize_url(meta.base, base=page.final_url) if meta.base else None
    to_follow = follow_links(page, meta.links, base or page.final_url, result.scope, settings)
    if settings.crawler_respect_robots and meta_nofollow(meta.robots, token):
        to_follow = []
    if result.depth + 1 <= settings.crawler_max_depth:
        result.new_urls += [
            frontier_db.NewUrl(url, result.depth + 1, result.source, result.scope) for url in to_follow
        ]


class SinkError(Exception):
    """The page sink rejected a batch (whatever it raised, database errors included)."""


def store(db: Database, sink: PageSink, settings: Settings, results: list[Result]) -> dict[str, float]:
    """Write a batch in one transaction; returns the counters it moved.

    A database conflict between nodes (deadlock, serialization) is retried. Any other failure is a
    problem with some result in the batch: each is then stored on its own, and one that still fails
    only marks its URL failed, so a single bad page can never block the others (or come back forever)."""
    for result in results:
        prepare(result, settings)
    try:
        return _store_retrying(db, sink, settings, results)
    except sa.exc.DBAPIError:
        raise  # the database itself is unwell: the URLs stay queued for later
    except Exception as exc:
        if len(results) == 1:
            return _store_failed(db, results[0], exc)
    totals: Counter[str] = Counter()
    for result in results:
        try:
            totals.update(_store_retrying(db, sink, settings, [result]))
        except sa.exc.DBAPIError:
            raise
        except Exception as exc:
            totals.update(_store_failed(db, result, exc))
    return dict(totals)


def _store_retrying(
    db: Database, sink: PageSink, settings: Settings, results: list[Result]
) -> dict[str, float]:
    for attempt in range(DB_RETRIES):
        try:
            return _store_once(db, sink, settings, results)
        except sa.exc.DBAPIError as exc:  # deadlock, serialization failure, connection lost
            if attempt == DB_RETRIES - 1:
                raise
            log.warning("storing %d crawl results failed (try %d): %s", len(results), attempt + 1, exc.orig)
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _store_failed(db: Database, result: Result, exc: Exception) -> dict[str, float]:
    kind = "sink" if isinstance(exc, SinkError) else "store"
    cause = exc.__cause__ or exc
    log.warning(
        "%s failed for url hash %s: %s: %s", kind, result.outcome.url_hash, type(cause).__name__, cause
    )
    old = result.outcome
    failed = frontier_db.UrlOutcome(old.url_hash, "failed", old.attempts, old.http_status, kind)
    counts = {**result.counts, "errors": result.counts.get("errors", 0) + 1, f"errors_{kind}": 1}
    counts.pop("fetched", None)  # fetched, but not kept
    with db.begin() as conn:
        frontier_db.finish_urls(db, conn, [failed])
        if result.new_page:
            frontier_db.add_host_pages(conn, {result.origin: 1})
        counters.add(db, {global_name(name): int(value) for name, value in counts.items() if value}, conn)
    return counts


def _store_once(db: Database, sink: PageSink, settings: Settings, results: list[Result]) -> dict[str, float]:
    totals: Counter[str] = Counter()
    new_urls: list[frontier_db.NewUrl] = []
    pages_by_origin: Counter[str] = Counter()
    pages = [result.page for result in results if result.page is not None]
    for result in results:
        totals.update(result.counts)
        new_urls += result.new_urls
        if result.new_page:
            pages_by_origin[result.origin] += 1
        if result.page is not None:
            totals["stored"] += 1
            totals["not_for_training"] += 0 if result.page.train_allowed else 1
    with db.begin() as conn:
        if pages:
            try:
                sink.handle(pages, conn)
            except Exception as exc:  # the caller retries page by page to find the one at fault
                raise SinkError(f"{type(exc).__name__}: {exc}") from exc
        frontier_db.finish_urls(db, conn, [result.outcome for result in results])
        added, new_hosts = frontier_db.queue_urls(db, settings, new_urls, conn)
        totals["urls_queued"] += added
        totals["hosts_discovered"] += new_hosts
        frontier_db.add_host_pages(conn, dict(pages_by_origin))
        deltas = {global_name(name): int(value) for name, value in totals.items() if value}
        counters.add(db, deltas, conn)
    return {name: value for name, value in totals.items() if value}


class ResultWriter:
    """Collects results on the event loop and stores them in batches on a database thread."""

    def __init__(
        self,
        store_batch: Callable[[list[Result]], dict[str, float]],
        run_db: Callable[..., Awaitable],
        on_counts: Callable[[dict[str, float]], None],
        *,
        max_batch: int = 200,
        max_delay: float = 0.05,
    ) -> None:
        self._store_batch = store_batch
        self._run_db = run_db
        self._on_counts = on_counts
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._items: list[Result] = []
        self._queued = 0  # results put so far
        self._stored = 0  # results handled so far (stored, or dropped after a database failure)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="crawl-writer")

    async def put(self, result: Result) -> None:
        async with self._changed:
            self._items.append(result)
            self._queued += 1
            self._changed.notify_all()

    async def flush(self) -> None:
        """Return once every result put before this call has been handled."""
        async with self._changed:
            target = self._queued
            await self._changed.wait_for(lambda: self._stored >= target)

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._items))
            await asyncio.sleep(self._max_delay)  # let a few more finish: fewer, larger transactions
            async with self._changed:
                batch, self._items = self._items[: self._max_batch], self._items[self._max_batch :]
            try:
                counts = await self._run_db(self._store_batch, batch)
            except Exception as exc:  # the URLs stay queued: refetched after the lease ends, not lost
                self.failures += 1
                log.error("dropping %d crawl results: %s", len(batch), exc)
                counts = {"errors": len(batch), "errors_db": len(batch)}
            self._on_counts(counts)
            async with self._changed:
                self._stored += len(batch)
                self._changed.notify_all()
