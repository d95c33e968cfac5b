"""The text engine: turns staged pages into documents, on every node that collects.

It claims a batch of staged pages, runs the CPU steps in a process pool (one worker per spare core,
so extraction never competes with the fetcher's event loop or the web server), and stores the
documents in the transaction that removes the pages from staging.

The pool is never waited on without a bound: a batch gets its extraction time limit per page (plus a
margin) and no more. If the pool breaks (a page crashed a worker: a segfault in a parser, the OOM
killer) or does not answer in time (a worker stuck where no time limit reaches), the pool is replaced
and the batch's pages are given back with their attempt counted. Pages that failed twice are claimed
one at a time, so the page at fault is found; after MAX_ATTEMPTS it is quarantined (text.staging).
The engine itself carries on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool

from aifactory.autotune import cpu_cores
from aifactory.chat.upkeep import chat_upkeep
from aifactory.cluster import lifeline
from aifactory.cluster.context import EngineContext
from aifactory.db import Database, events
from aifactory.db import policies as policy_db
from aifactory.db.policies import Policy
from aifactory.settings import Settings
from aifactory.sources.discovery import discover_from_documents
from aifactory.text import staging
from aifactory.text.pipeline import Analyzed, PipelineConfig, RawDocument, analyze, store

log = logging.getLogger("aifactory.text")
BATCH = 32
POLICY_REFRESH_SEC = 30.0  # policies changed from the dashboard reach every node within this
POOL_MARGIN_SEC = 30.0  # on top of the extraction time limits of a batch: starting workers, IPC
STOP_CHECK_SEC = 0.25  # how often a wait on the pool looks whether the engine should stop


class PoolFailure(Exception):
    """The process pool broke or did not answer in time; it must be replaced."""


class Stopped(Exception):
    """The engine was asked to stop while a batch was in the pool: the batch is given back as it was."""


def make_pool(workers: int | None = None) -> concurrent.futures.ProcessPoolExecutor:
    """The pipeline's workers; they end with the node however it ends (see cluster.lifeline)."""
    return lifeline.process_pool(workers or max(1, cpu_cores() - 1))


def discard_pool(pool: Executor) -> None:
    """Stop a pool that may be stuck: its workers are killed, not waited for."""
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def analyze_in_pool(
    raws: list[RawDocument],
    config: PipelineConfig,
    pool: Executor | None,
    stopping: Callable[[], bool] = lambda: False,
) -> list[Analyzed]:
    """The CPU steps of every page, in the pool, within a bounded time (PoolFailure otherwise);
    Stopped as soon as `stopping()` says so, rather than at the end of the batch."""
    if pool is None:
        return [doc for raw in raws for doc in analyze(raw, config)]
    try:
        futures = [pool.submit(analyze, raw, config) for raw in raws]
    except (BrokenProcessPool, RuntimeError) as exc:
        raise PoolFailure(f"the pool is broken: {exc}") from exc
    bound = config.extract_timeout * len(raws) + POOL_MARGIN_SEC
    deadline = time.monotonic() + bound
    pending = set(futures)
    while pending:
        if stopping():
            raise Stopped
        left = deadline - time.monotonic()
        if left <= 0:
            raise PoolFailure(f"no answer from the pool in {bound:.0f}s")
        _done, pending = concurrent.futures.wait(pending, timeout=min(left, STOP_CHECK_SEC))
    try:
        return [doc for future in futures for doc in future.result()]
    except BrokenProcessPool as exc:
        raise PoolFailure(f"a pool worker died: {exc}") from exc


def process_batch(
    db: Database,
    settings: Settings,
    node_id: str,
    policies: list[Policy],
    pool: Executor | None,
    limit: int = BATCH,
    stopping: Callable[[], bool] = lambda: False,
) -> tuple[int, Counter[str]]:
    """Claim up to `limit` staged pages, turn them into documents; (pages taken, outcome counts).
    Raises PoolFailure (the claimed pages are given back, their attempt counted) if the pool fails,
    and Stopped (the pages given back as they were) when the engine is stopped meanwhile."""
    batch = staging.claim(db, node_id, limit)
    if not batch:
        return 0, Counter()
    ids = [page_id for page_id, _raw in batch]
    try:
        config = PipelineConfig.from_settings(settings)
        analyzed = analyze_in_pool([raw for _id, raw in batch], config, pool, stopping)
    except PoolFailure:
        staging.unclaim(db, ids)
        raise
    except Stopped:
        staging.unclaim(db, ids, attempt_counts=False)
        raise
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
    chat_at = -float("inf")
    pool = make_pool()
    try:
        ctx.set_phase("idle", "waiting for pages")
        idle = True
        while not ctx.stopping():
            if time.monotonic() - loaded_at > POLICY_REFRESH_SEC:
                policies, loaded_at = policy_db.load(ctx.db), time.monotonic()
            if time.monotonic() - chat_at >= ctx.settings.chat_inbox_poll_sec:  # chat tuning (#18)
                chat_at = time.monotonic()
                try:
                    made = chat_upkeep(ctx.settings, ctx.db)
                except Exception as exc:  # conversations must never stop the documents
                    log.warning("chat upkeep failed: %s", exc)
                    made = Counter()
                if made["chat.stored"] or made["chat.replaced"]:
                    ctx.count(conversations=made["chat.stored"] + made["chat.replaced"])
                if made["chat.invalid"]:  # the lines themselves are in chat-inbox/done/*.report.txt
                    ctx.count(conversations_invalid=made["chat.invalid"])
                    ctx.log(f"{made['chat.invalid']} invalid conversation records (see chat-inbox/done/)")
            quarantined = staging.quarantine(ctx.db)
            if quarantined:
                ctx.count(quarantined=len(quarantined))
                ctx.log(
                    f"quarantined {len(quarantined)} staged pages that kept failing the text pool: "
                    + ", ".join(url[:200] for url in quarantined[:5]),
                    level="warning",
                )
            started = time.monotonic()
            try:
                taken, outcome = process_batch(
                    ctx.db, ctx.settings, ctx.node_id, policies, pool, stopping=ctx.stopping
                )
            except Stopped:
                break
            except PoolFailure as exc:
                log.warning("text pool failed (%s); starting a new one", exc)
                events.record(
                    ctx.db, f"text pool failed: {exc}", source="text", node_id=ctx.node_id, level="warning"
                )
                discard_pool(pool)
                pool = make_pool()
                ctx.count(pool_restarts=1)
                continue  # the batch's pages come back (alone, once they have failed twice)
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
    finally:
        discard_pool(pool)  # between batches nothing is lost; waiting for workers still starting up is
