"""Turning fetch results into database rows, many at a time.

Fetches finish one by one on the event loop; writing each in its own transaction would make the
database the bottleneck. The writer gathers what finished in the last few milliseconds and stores it in
one transaction (in a worker thread, off the event loop): the pages go to the sink, the URLs are marked,
the links are queued and the running counters move, all or nothing. A host task calls `flush()` before
it reads more URLs or gives its site back, so it never sees its own finished URLs as still queued.

When the database fails (see aifactory.db.retry):
- transiently: the batch is retried with back-off; past CRAWLER_DB_RETRY_SEC the writer stops, every
  waiter is woken with WriterFailed and the crawl ends with it, so the engine's supervisor restarts it.
  Nothing is dropped and nothing is marked: the URLs are still queued and are fetched after the restart.
- permanently: the batch is split until the result at fault is alone; that one URL is quarantined
  (marked failed, counted as errors_store or errors_sink) and every other result is stored.
Each result carries its site's lease token: results of a site whose lease was taken over are not
written (lease_lost), since the node that holds the site now fetches those URLs itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from aifactory.collect import frontier as frontier_db
from aifactory.collect.links import parse_page
from aifactory.collect.robots import meta_nofollow, meta_optouts
from aifactory.collect.sink import FetchedPage, PageSink
from aifactory.collect.urls import in_scope, is_trap, normalize_url
from aifactory.db import counters, retry
from aifactory.db.database import Database
from aifactory.settings import Settings

log = logging.getLogger("aifactory.crawl")


@dataclass
class Result:
    """One URL's fate, as the host task decided it."""

    outcome: frontier_db.UrlOutcome
    origin: str
    site: str = ""
    token: int = 0  # the lease token of `site` under which the URL was fetched
    page: FetchedPage | None = None
    depth: int = 0
    source: str = "web"
    scope: str = ""
    new_urls: list[frontier_db.NewUrl] = field(default_factory=list)  # e.g. a redirect to another host
    counts: dict[str, float] = field(default_factory=dict)
    new_page: bool = False  # a URL's first fetch: counts against its host's page budget


class WriterFailed(Exception):
    """The writer stopped (the database stayed unavailable): nothing more can be stored."""


class SinkError(Exception):
    """The page sink rejected a batch (whatever it raised, database errors included)."""


class LeaseLost(Exception):
    def __init__(self, leases: set[tuple[str, int]]) -> None:
        super().__init__(f"leases taken over: {sorted(leases)[:5]}")
        self.leases = leases


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


@dataclass
class Store:
    """Where a crawler's results go: the database, the page sink, and what the crawler owns."""

    db: Database
    sink: PageSink
    settings: Settings
    owner: str
    stop: threading.Event | None = None
    known: frontier_db.KnownUrls = field(default_factory=frontier_db.KnownUrls)


def store(target: Store, results: list[Result]) -> dict[str, float]:
    """Write a batch; returns the counters it moved. Raises DatabaseUnavailable when the database
    stays away for CRAWLER_DB_RETRY_SEC; a permanent failure costs only the result at fault."""
    for result in results:
        prepare(result, target.settings)
    return dict(_store_isolating(target, results))


def _store_isolating(target: Store, results: list[Result]) -> Counter[str]:
    try:
        return _store_held(target, results)
    except retry.DatabaseUnavailable:
        raise
    except Exception as exc:  # permanent: one of these results can never be written as it is
        if len(results) == 1:
            return _quarantine(target, results[0], exc)
    half = len(results) // 2  # bisect: k bad results among n cost O(k log n) transactions
    totals = _store_isolating(target, results[:half])
    totals.update(_store_isolating(target, results[half:]))
    return totals


def _store_held(target: Store, results: list[Result]) -> Counter[str]:
    """Store the results whose leases still hold; the others are dropped and counted."""
    dropped: Counter[str] = Counter()
    while results:
        try:
            stored = retry.call(
                _store_once,
                target,
                results,
                budget=target.settings.crawler_db_retry_sec,
                stop=target.stop,
                what=f"storing {len(results)} crawl results",
            )
            return stored + dropped
        except LeaseLost as lost:
            kept = [r for r in results if (r.site, r.token) not in lost.leases]
            dropped["lease_lost"] += len(results) - len(kept)
            log.warning("not storing %d results: %s", len(results) - len(kept), lost)
            results = kept
    return dropped


def _check_leases(db: Database, conn: Connection, owner: str, results: list[Result], extra: set[str]) -> None:
    """Lock the batch's sites (its own and those its links go to) and check its lease tokens."""
    leases = {(r.site, r.token) for r in results}
    state = frontier_db.lock_sites(db, conn, {site for site, _ in leases} | extra, with_work=extra)
    lost = {(site, token) for site, token in leases if state.get(site) != (owner, token)}
    if lost:
        raise LeaseLost(lost)


def _quarantine(target: Store, result: Result, exc: Exception) -> Counter[str]:
    """Mark one URL whose result cannot be stored as failed (once: it is not fetched again)."""
    db, owner = target.db, target.owner
    kind = "sink" if isinstance(exc, SinkError) else "store"
    cause = exc.__cause__ or exc
    log.warning("%s failed for %s: %s: %s", kind, result.page.url if result.page else result.outcome.url_hash,
                type(cause).__name__, str(cause)[:300])  # fmt: skip
    old = result.outcome
    failed = frontier_db.UrlOutcome(old.url_hash, "failed", old.attempts, old.http_status, kind)
    counts = Counter({**result.counts, "errors": result.counts.get("errors", 0) + 1, f"errors_{kind}": 1})
    counts.pop("fetched", None)  # fetched, but not kept

    def write() -> None:
        with db.begin() as conn:
            _check_leases(db, conn, owner, [result], set())
            frontier_db.finish_urls(db, conn, [failed])
            if result.new_page:
                frontier_db.add_host_pages(conn, {result.origin: 1})
            counters.add(db, {global_name(name): int(value) for name, value in counts.items() if value}, conn)

    try:
        budget = target.settings.crawler_db_retry_sec
        retry.call(write, budget=budget, stop=target.stop, what="quarantining a crawl result")
    except LeaseLost:
        return Counter({"lease_lost": 1})
    except retry.DatabaseUnavailable:
        raise
    except Exception as again:  # not even the failure can be written: the URL stays queued
        log.error("could not mark url hash %s failed: %s", old.url_hash, again)
    return counts


def _store_once(target: Store, results: list[Result]) -> Counter[str]:
    db, settings = target.db, target.settings
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
        plan = frontier_db.plan_urls(
            db,
            conn,
            new_urls,
            max_per_host=settings.crawler_max_pages_per_host,
            max_variants=settings.crawler_max_url_variants,
            per=settings.crawler_politeness_per,
            known=target.known,
        )
        _check_leases(db, conn, target.owner, results, plan.sites)
        if pages:
            try:
                target.sink.handle(pages, conn)
            except Exception as exc:  # the caller splits the batch to find the page at fault
                if retry.is_transient(exc):
                    raise
                raise SinkError(f"{type(exc).__name__}: {exc}") from exc
        frontier_db.finish_urls(db, conn, [result.outcome for result in results])
        added, new_hosts = frontier_db.write_urls(db, conn, plan)
        totals["urls_queued"] += added
        totals["hosts_discovered"] += new_hosts
        frontier_db.add_host_pages(conn, dict(pages_by_origin))
        deltas = {global_name(name): int(value) for name, value in totals.items() if value}
        counters.add(db, deltas, conn)
    target.known.update(plan.in_frontier)  # committed: these are in the frontier now
    return Counter({name: value for name, value in totals.items() if value})


class ResultWriter:
    """Collects results on the event loop and stores them in batches on a database thread.

    Every wait on it is bounded: `flush(timeout)` raises TimeoutError past its bound and WriterFailed
    as soon as the writer has stopped, so no host task, and no Stop, can wait on it forever."""

    def __init__(
        self,
        store_batch: Callable[[list[Result]], dict[str, float]],
        run_db: Callable[..., Awaitable],
        on_counts: Callable[[dict[str, float]], None],
        *,
        max_batch: int = 200,
        max_delay: float = 0.02,
    ) -> None:
        self._store_batch = store_batch
        self._run_db = run_db
        self._on_counts = on_counts
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._items: list[Result] = []
        self._queued = 0  # results put so far
        self._stored = 0  # results handled so far
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="crawl-writer")

    @property
    def pending(self) -> int:
        return self._queued - self._stored

    def check(self) -> None:
        if self.error is not None:
            raise WriterFailed(f"the crawl writer stopped: {self.error}") from self.error

    async def put(self, result: Result) -> None:
        self.check()
        async with self._changed:
            self._items.append(result)
            self._queued += 1
            self._changed.notify_all()

    async def flush(self, timeout: float) -> None:
        """Return once every result put before this call has been handled."""
        async with self._changed:
            target = self._queued
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self._stored >= target or self.error is not None), timeout
            )
        self.check()

    async def close(self, timeout: float) -> None:
        """Store what is queued (within `timeout`), then stop."""
        with contextlib.suppress(WriterFailed, TimeoutError):
            await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(lambda: bool(self._items))
                if len(self._items) < self._max_batch:
                    await asyncio.sleep(self._max_delay)  # let a few more finish: fewer transactions
                async with self._changed:
                    batch, self._items = self._items[: self._max_batch], self._items[self._max_batch :]
                counts = await self._run_db(self._store_batch, batch)
                try:
                    self._on_counts(counts)
                except Exception:  # reporting must never stop storing
                    log.exception("could not report crawl counts")
                async with self._changed:
                    self._stored += len(batch)
                    self._changed.notify_all()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the database stayed away (or a bug): stop, and say so to waiters
            log.error("crawl writer stopped: %s", exc)
            self.error = exc
            async with self._changed:
                self._changed.notify_all()
