"""The collector engine: crawls continuously while ignited, on the master and on every worker.

Each cycle it (1) queues the seeds (WEB_SEED_URLS as source "web", DOC_SEED_URLS as "docs"; already
known URLs are left alone, so this is idempotent), (2) puts pages whose refetch is due back in the
queue, (3) works out its share: the active collector nodes (recent heartbeat; the master only with
COLLECTION_INCLUDE_MASTER) sorted by id, this node's index among them, and its page budget
max(20, MAX_CRAWL_PAGES_PER_CYCLE // nodes), and (4) crawls until the budget is spent or no host has
due work. Hosts are leased, so nodes never crawl the same host at once; the shard only says which
hosts a node looks at first. Stop cancels the fetches in flight and gives every lease back.

Backpressure: fetched pages wait in `staged_pages` for the text engine. The collectors of all nodes
share STAGING_MAX_PAGES: each cycle a node reserves its room from what is left (text.staging.reserve)
and crawls at most that many pages; with no room left (the text engine is stopped, or slower than the
crawl) it waits instead of filling the disk.

The event loop never touches the database itself: counters are gathered in memory and written, like
phases and events, from a worker thread. A database that stays away longer than CRAWLER_DB_RETRY_SEC
ends the engine with an error (the supervisor restarts it with back-off); nothing is lost, since what
was not stored is still queued. Every CRAWLER_RETENTION_DAYS old `pages` rows and finished frontier
rows are pruned (counters kept).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aifactory.cluster import membership
from aifactory.cluster.context import EngineContext
from aifactory.collect import frontier as frontier_db
from aifactory.collect.crawler import Crawler
from aifactory.collect.safety import ALLOWLIST_HINT
from aifactory.collect.urls import default_scope, directory_scope, normalize_url
from aifactory.settings import Settings
from aifactory.text import staging

log = logging.getLogger("aifactory.crawl")

IDLE_POLL_SEC = 1.0  # with nothing due anywhere, look again after this long
MIN_NODE_BUDGET = 20  # the original's floor for one node's share of MAX_CRAWL_PAGES_PER_CYCLE
COUNT_EVERY_SEC = 2.0  # how often the gathered counters are written
RETENTION_EVERY_SEC = 600.0
RETENTION_BATCH = 5000
RESERVATION_TTL_SEC = 900.0  # a staging reservation of a node that died is forgotten after this long


def seed_urls(settings: Settings) -> tuple[list[frontier_db.NewUrl], list[str]]:
    """The configured seeds as frontier entries, and the ones that are not crawlable URLs."""
    seeds, invalid = [], []
    groups = [("web", settings.web_seed_urls)]
    if settings.enable_docs_collector:
        groups.append(("docs", settings.doc_seed_urls))
    for source, urls in groups:
        for raw in urls:
            url = normalize_url(raw)
            if url is None:
                invalid.append(raw)
                continue
            scope = directory_scope(url) if source == "docs" else default_scope(url)
            seeds.append(frontier_db.NewUrl(url, 0, source, scope))
    return seeds, invalid


def queue_seeds(ctx: EngineContext, seeds: list[frontier_db.NewUrl]) -> int:
    added, _hosts = frontier_db.queue_urls(ctx.db, ctx.settings, seeds)
    return added


def plan_cycle(ctx: EngineContext) -> tuple[tuple[int, int] | None, int, int]:
    """(shard, page budget, active collector nodes) for this node this cycle.

    A master with COLLECTION_INCLUDE_MASTER=0 gets a budget of 0 while workers are active (it collects
    only when it is alone, so a single-node factory still works)."""
    s = ctx.settings
    roles = ("master", "worker") if s.collection_include_master else ("worker",)
    active = membership.active_node_ids(ctx.db, window=s.collection_node_window_sec, roles=roles)
    if not s.collection_include_master and s.system_role == "master" and active:
        return None, 0, len(active)
    if ctx.node_id not in active:  # not registered yet (first heartbeat pending), or a lone master
        active = sorted([*active, ctx.node_id])
    count = len(active)
    budget = max(MIN_NODE_BUDGET, s.max_crawl_pages_per_cycle // count)
    return (active.index(ctx.node_id), count), budget, count


def run(ctx: EngineContext) -> None:
    """The engine entry point (a thread of the node): an asyncio crawl loop until stopped."""
    asyncio.run(crawl_forever(ctx))


class Reporter:
    """The engine context's database writes (counters, phases, events), off the event loop.

    One worker thread, so they keep their order; a failure to report is logged, never raised (the
    crawl's own database work decides whether the database is unwell)."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.pending: Counter[str] = Counter()
        self.gauges: dict[str, Callable[[], float]] = {}  # read on the event loop at each flush
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="collector-report")

    def add(self, counts: dict[str, float]) -> None:
        self.pending.update(counts)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except Exception as exc:
            log.warning("collector could not report: %s: %s", type(exc).__name__, exc)
            return None

    async def flush(self) -> None:
        counts, self.pending = self.pending, Counter()
        gauges = {name: read() for name, read in self.gauges.items()}
        if counts or gauges:
            await self.call(self._report, counts, gauges)

    def _report(self, counts: Counter[str], gauges: dict[str, float]) -> None:
        self.ctx.counters.update(gauges)  # a level, not a sum: replaced at every flush
        self.ctx.count(**counts)

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(COUNT_EVERY_SEC)
            await self.flush()

    async def close(self) -> None:
        await self.flush()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call(self.ctx.flush), 10.0)
        self._pool.shutdown(wait=False)


async def _pause(ctx: EngineContext, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not ctx.stopping() and loop.time() < deadline:
        await asyncio.sleep(min(0.2, deadline - loop.time()))


async def crawl_forever(ctx: EngineContext) -> None:
    reporter = Reporter(ctx)
    flusher = asyncio.create_task(reporter.flush_forever())
    try:
        await _crawl(ctx, reporter)
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await reporter.close()


async def _crawl(ctx: EngineContext, reporter: Reporter) -> None:
    s = ctx.settings
    seeds, invalid = seed_urls(s)
    if invalid:
        await reporter.call(
            ctx.log, f"ignoring seeds that are not http(s) URLs: {', '.join(invalid)[:500]}", "warning"
        )
    if not s.crawler_contact_url:
        await reporter.call(
            ctx.log,
            "CRAWLER_CONTACT_URL is empty: site owners cannot reach you from the User-Agent",
            "warning",
        )
    await reporter.call(ctx.log, f"collector started: {len(seeds)} seeds")
    cycle = 0
    retained_at = 0.0
    warned_unsafe = 0
    # Pages are staged for the text engine in the crawler's own transaction (see aifactory.text.staging).
    sink = staging.StagingSink(ctx.db)
    async with Crawler(s, ctx.db, ctx.node_id, sink=sink, on_counts=reporter.add) as crawler:
        reporter.gauges["active_fetchers"] = lambda: crawler.fetching
        database = crawler.call_db  # retried while the database is briefly away; then it raises
        await database(frontier_db.ensure_site_mode, ctx.db, s.crawler_politeness_per)
        while not ctx.stopping():
            cycle += 1
            await database(queue_seeds, ctx, seeds)
            await database(frontier_db.requeue_due, ctx.db)
            shard, budget, nodes = await database(plan_cycle, ctx)
            if s.crawler_retention_days and time.monotonic() - retained_at >= RETENTION_EVERY_SEC:
                retained_at = time.monotonic()
                await database(_prune, ctx.db, s.crawler_retention_days * 86400.0)
            if budget == 0:
                await reporter.call(
                    ctx.set_phase, "idle", f"COLLECTION_INCLUDE_MASTER=0: {nodes} worker(s) collect"
                )
                await _pause(ctx, IDLE_POLL_SEC * 5)
                continue
            if s.staging_max_pages:
                granted, waiting = await database(
                    staging.reserve,
                    ctx.db,
                    ctx.node_id,
                    budget,
                    s.staging_max_pages,
                    RESERVATION_TTL_SEC,
                    nodes,
                )
                if not granted:
                    detail = (
                        f"{waiting} fetched pages wait for the text engine (STAGING_MAX_PAGES, all nodes)"
                    )
                    await reporter.call(ctx.set_phase, "waiting", detail)
                    reporter.add({"backpressure_waits": 1})
                    await _pause(ctx, IDLE_POLL_SEC)
                    continue
                budget = granted
            try:
                stats = await crawler.run(max_pages=budget, stop=ctx.stopping, shard=shard)
            finally:
                if s.staging_max_pages:
                    with contextlib.suppress(Exception):
                        await database(staging.reserve, ctx.db, ctx.node_id, 0, s.staging_max_pages, 0.0)
            if stats.fetched and stats.seconds > 0:
                ctx.counters["pages_per_sec"] = round(stats.fetched / stats.seconds, 2)
            reporter.add({"cycles": 1})
            if crawler.unsafe_refused > warned_unsafe:
                warned_unsafe = crawler.unsafe_refused
                message = (
                    f"{warned_unsafe} URLs refused as loopback/private/link-local addresses: {ALLOWLIST_HINT}"
                )
                await reporter.call(ctx.log, message, "warning")
            if stats.reason == "idle":
                await reporter.call(ctx.set_phase, "idle", f"no host has due work; {nodes} collector node(s)")
                await _pause(ctx, IDLE_POLL_SEC)
            else:
                detail = (
                    f"cycle {cycle}: {stats.fetched} pages in {stats.seconds:.0f}s, "
                    f"node {shard[0] + 1 if shard else 1} of {nodes}, budget {budget}"
                )
                await reporter.call(ctx.set_phase, "crawling", detail)


def _prune(db: Any, keep_sec: float) -> None:
    for _ in range(10):  # at most 10 batches per round: retention never holds up the crawl long
        pages, urls = frontier_db.prune(db, keep_sec=keep_sec, limit=RETENTION_BATCH)
        if pages < RETENTION_BATCH and urls < RETENTION_BATCH:
            break
