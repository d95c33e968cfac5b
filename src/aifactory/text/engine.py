"""The text engine: turns staged pages into documents, on every node that collects.

It claims a batch of staged pages, runs the CPU steps in a process pool (one worker per spare core,
so extraction never competes with the fetcher's event loop or the web server), and stores the
documents in the transaction that removes the pages from staging.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from concurrent.futures import Executor

from aifactory.autotune import cpu_cores
from aifactory.cluster import lifeline
from aifactory.cluster.context import EngineContext
from aifactory.db import Database
from aifactory.db import policies as policy_db
from aifactory.db.policies import Policy
from aifactory.settings import Settings
from aifactory.sources.discovery import discover_from_documents
from aifactory.text import staging
from aifactory.text.pipeline import PipelineConfig, analyze_many, store

BATCH = 32
POLICY_REFRESH_SEC = 30.0  # policies changed from the dashboard reach every node within this


def make_pool(workers: int | None = None) -> concurrent.futures.ProcessPoolExecutor:
    """The pipeline's workers; they end with the node however it ends (see cluster.lifeline)."""
    return lifeline.process_pool(workers or max(1, cpu_cores() - 1))


def process_batch(
    db: Database,
    settings: Settings,
    node_id: str,
    policies: list[Policy],
    pool: Executor | None,
    limit: int = BATCH,
) -> tuple[int, Counter[str]]:
    """Claim up to `limit` staged pages, turn them into documents; (pages taken, outcome counts)."""
    batch = staging.claim(db, node_id, limit)
    if not batch:
        return 0, Counter()
    analyzed = analyze_many([raw for _id, raw in batch], PipelineConfig.from_settings(settings), pool)
    with db.begin() as conn:
        outcome = store(
            db,
            analyzed,
            policies,
            node_id=node_id,
            dedup=settings.enable_text_dedup,
            conn=conn,
            rejections_max_rows=settings.rejections_max_rows,
        )
        staging.finish(conn, [page_id for page_id, _raw in batch])
    outcome["discovered_hosts"] = discover_from_documents(db, settings, analyzed)
    return len(batch), outcome


def run(ctx: EngineContext) -> None:
    policies = policy_db.load(ctx.db)
    loaded_at = time.monotonic()
    with make_pool() as pool:
        ctx.set_phase("idle", "waiting for pages")
        idle = True
        while not ctx.stopping():
            if time.monotonic() - loaded_at > POLICY_REFRESH_SEC:
                policies, loaded_at = policy_db.load(ctx.db), time.monotonic()
            started = time.monotonic()
            taken, outcome = process_batch(ctx.db, ctx.settings, ctx.node_id, policies, pool)
            if not taken:
                if not idle:  # once, not a database write every second
                    ctx.set_phase("idle", "no pages waiting")
                    idle = True
                if ctx.wait(1.0):
                    break
                continue
            seconds = max(1e-6, time.monotonic() - started)
            ctx.count(
                batches=1,
                pages=taken,
                stored=outcome["docs.stored"],
                filtered=sum(v for k, v in outcome.items() if k.startswith("docs.filtered.")),
                duplicates=outcome["docs.duplicate.exact"] + outcome["docs.duplicate.near"],
                discovered_hosts=outcome["discovered_hosts"],
            )
            ctx.counters["pages_per_sec"] = round(taken / seconds, 2)
            idle = False
            ctx.set_phase("processing", f"{taken} pages in {seconds:.1f}s, {outcome['docs.stored']} stored")
        pool.shutdown(wait=True, cancel_futures=True)
