"""The sources engine: polls feeds, Hacker News, arXiv, Wikipedia and discovery search while ignited.

Runs on every collector node; each node polls only the keys in its shard (see `sources.common`).
Article pages found in feeds go to the crawler's frontier; documents the APIs deliver directly
(Wikipedia extracts, arXiv abstracts) go through the text pipeline here.
"""

from __future__ import annotations

import asyncio

from aifactory.cluster.context import EngineContext
from aifactory.collect.engine import plan_cycle
from aifactory.collect.fetch import Fetcher
from aifactory.db import policies as policy_db
from aifactory.sources.arxiv import poll_arxiv
from aifactory.sources.common import SourceRun, record_counts
from aifactory.sources.discovery import poll_search
from aifactory.sources.feeds import poll_feeds
from aifactory.sources.hackernews import poll_hacker_news
from aifactory.sources.wikipedia import poll_wikipedia
from aifactory.text.pipeline import PipelineConfig, analyze_many, store

CYCLE_SEC = 5.0
POLLERS = (poll_feeds, poll_hacker_news, poll_arxiv, poll_wikipedia, poll_search)


def run(ctx: EngineContext) -> None:
    asyncio.run(poll_forever(ctx))


async def poll_forever(ctx: EngineContext) -> None:
    config = PipelineConfig.from_settings(ctx.settings)
    async with Fetcher(ctx.settings, max_connections=4) as fetcher:
        while not ctx.stopping():
            try:
                shard, _budget, nodes = await asyncio.to_thread(plan_cycle, ctx)
                run = SourceRun(ctx.settings, ctx.db, fetcher, ctx.node_id, shard)
                for poller in POLLERS:
                    if ctx.stopping():
                        break
                    await poller(run)
                if run.documents:
                    policies = await asyncio.to_thread(policy_db.load, ctx.db)
                    analyzed = await asyncio.to_thread(analyze_many, run.documents, config, None)
                    outcome = await asyncio.to_thread(
                        store,
                        ctx.db,
                        analyzed,
                        policies,
                        node_id=ctx.node_id,
                        dedup=ctx.settings.enable_text_dedup,
                    )
                    run.count("documents_stored", outcome["docs.stored"])
                await asyncio.to_thread(record_counts, ctx.db, run.counts)
                if run.counts:
                    ctx.count(**run.counts)
                    ctx.set_phase(
                        "polling", ", ".join(f"{k}={int(v)}" for k, v in sorted(run.counts.items()))[:300]
                    )
                else:
                    ctx.set_phase("idle", f"nothing due; {nodes} collector node(s)")
            except Exception as exc:  # a source or the database misbehaving must not end the engine
                ctx.log(f"sources cycle failed: {type(exc).__name__}: {exc}", level="warning")
                ctx.count(errors=1)
            await asyncio.to_thread(ctx.wait, CYCLE_SEC)
    ctx.flush()
