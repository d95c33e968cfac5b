"""The collector engine: crawls continuously while ignited, on the master and on every worker.

Each cycle it (1) queues the seeds (WEB_SEED_URLS as source "web", DOC_SEED_URLS as "docs"; already
known URLs are left alone, so this is idempotent), (2) puts pages whose refetch is due back in the
queue, (3) works out its share: the active collector nodes (recent heartbeat; the master only with
COLLECTION_INCLUDE_MASTER) sorted by id, this node's index among them, and its page budget
max(20, MAX_CRAWL_PAGES_PER_CYCLE // nodes), and (4) crawls until the budget is spent or no host has
due work. Hosts are leased, so nodes never crawl the same host at once; the shard only says which
hosts a node looks at first. Stop cancels the fetches in flight and gives every lease back.

Backpressure: fetched pages wait in `staged_pages` for the text engine. When STAGING_MAX_PAGES of them
are waiting (the text engine is stopped, or slower than the crawl), the collector waits too instead of
filling the disk; each cycle's budget is also cut to the room that is left.
"""

from __future__ import annotations

import asyncio
import logging

from aifactory.cluster import membership
from aifactory.cluster.context import EngineContext
from aifactory.collect import frontier as frontier_db
from aifactory.collect.crawler import Crawler
from aifactory.collect.urls import default_scope, directory_scope, normalize_url
from aifactory.settings import Settings
from aifactory.text import staging

log = logging.getLogger("aifactory.crawl")

IDLE_POLL_SEC = 1.0  # with nothing due anywhere, look again after this long
MIN_NODE_BUDGET = 20  # the original's floor for one node's share of MAX_CRAWL_PAGES_PER_CYCLE


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


async def _pause(ctx: EngineContext, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not ctx.stopping() and loop.time() < deadline:
        await asyncio.sleep(min(0.2, deadline - loop.time()))


async def crawl_forever(ctx: EngineContext) -> None:
    s = ctx.settings
    seeds, invalid = seed_urls(s)
    if invalid:
        ctx.log(f"ignoring seeds that are not http(s) URLs: {', '.join(invalid)[:500]}", level="warning")
    if not s.crawler_contact_url:
        ctx.log("CRAWLER_CONTACT_URL is empty: site owners cannot reach you from the User-Agent", "warning")
    ctx.log(f"collector started: {len(seeds)} seeds")
    cycle = 0
    # Pages are staged for the text engine in the crawler's own transaction (see aifactory.text.staging).
    sink = staging.StagingSink(ctx.db)
    async with Crawler(
        s, ctx.db, ctx.node_id, sink=sink, on_counts=lambda counts: ctx.count(**counts)
    ) as crawler:
        while not ctx.stopping():
            cycle += 1
            try:
                await asyncio.to_thread(queue_seeds, ctx, seeds)
                await asyncio.to_thread(frontier_db.requeue_due, ctx.db)
                shard, budget, nodes = await asyncio.to_thread(plan_cycle, ctx)
            except Exception as exc:  # database away: report it and try again, never die of it
                ctx.log(f"collector cycle could not start: {type(exc).__name__}: {exc}", level="warning")
                ctx.count(errors=1, errors_db=1)
                await _pause(ctx, 5.0)
                continue
            if budget == 0:
                ctx.set_phase("idle", f"COLLECTION_INCLUDE_MASTER=0: {nodes} worker(s) collect")
                await _pause(ctx, IDLE_POLL_SEC * 5)
                continue
            if s.staging_max_pages:
                waiting = await asyncio.to_thread(staging.backlog, ctx.db, s.staging_max_pages)
                if waiting >= s.staging_max_pages:
                    detail = f"{waiting} fetched pages wait for the text engine (STAGING_MAX_PAGES)"
                    ctx.set_phase("waiting", detail)
                    ctx.count(backpressure_waits=1)
                    await _pause(ctx, IDLE_POLL_SEC * 5)
                    continue
                budget = min(budget, s.staging_max_pages - waiting)
            stats = await crawler.run(max_pages=budget, stop=ctx.stopping, shard=shard)
            if stats.fetched and stats.seconds > 0:
                ctx.counters["pages_per_sec"] = round(stats.fetched / stats.seconds, 2)
            ctx.count(cycles=1)
            if stats.reason == "idle":
                ctx.set_phase("idle", f"no host has due work; {nodes} collector node(s)")
                await _pause(ctx, IDLE_POLL_SEC)
            else:
                detail = (
                    f"cycle {cycle}: {stats.fetched} pages in {stats.seconds:.0f}s, "
                    f"node {shard[0] + 1 if shard else 1} of {nodes}, budget {budget}"
                )
                ctx.set_phase("crawling", detail)
    ctx.flush()
