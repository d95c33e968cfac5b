"""Frontier latency at scale: claim + fetch-list + finish + release with 10k and with 1M queued URLs.

    python benchmarks/frontier_scale.py

On PostgreSQL (AIFACTORY_BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test; each
frontier in its own schema, dropped afterwards), two frontiers of 10,000 sites (one host each) are
bulk-loaded: one with 10,000 queued URLs (one per host), one with 1,000,000 (100 per host) plus
1,000,000 fetched ones waiting for their refetch. Against each, a node does what its crawl loop does:
claim 16 sites (`claim_sites`), read each site's next 32 due URLs (`due_urls`), record their outcomes
in the crawler's transaction (`lock_sites` + `finish_urls`), and give the site back (`release_site`);
and the collector's cycle looks for refetches coming due (`requeue_due`). The figure is the median
time of one site's claim + fetch-list + finish + release; with queries that use their indexes it does
not grow with the frontier. The last line is `RESULT frontier_scale_ratio <1M latency / 10k latency>`
(aim: at most 1.5).
"""

from __future__ import annotations

import os
import random
import statistics
import time
import urllib.parse
import uuid

import psycopg

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/test"
SITES = 10_000
ROUNDS = 60  # claim rounds measured per frontier (16 sites each)
CLAIM, DUE = 16, 32


def schema_url(base: str, schema: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options={urllib.parse.quote(f'-csearch_path={schema}')}"


def load(conn: psycopg.Connection, per_site: int, done_per_site: int) -> None:
    """Bulk-load sites, hosts and frontier rows with COPY (what the crawler would have queued)."""
    from aifactory.collect.urls import priority_for, shard_of, url_hash

    rng = random.Random(7)
    now = time.time()
    with conn.cursor().copy("COPY sites (site, shard, has_work, ready_at, lease_token) FROM STDIN") as copy:
        for i in range(SITES):
            copy.write_row(
                (f"h{i}.bench", shard_of(f"h{i}.bench"), True, rng.uniform(now - 3600, now - 1), 0)
            )
    with conn.cursor().copy(
        "COPY hosts (origin, hostname, site, has_work, pages_fetched, urls_known) FROM STDIN"
    ) as copy:
        for i in range(SITES):
            copy.write_row(
                (f"http://h{i}.bench", f"h{i}.bench", f"h{i}.bench", True, 0, per_site + done_per_site)
            )
    columns = (
        "url_hash, url, origin, depth, source, priority, scope, state, attempts, next_fetch_at, "
        "last_fetched_at, discovered_at"
    )
    with conn.cursor().copy(f"COPY frontier ({columns}) FROM STDIN") as copy:
        for i in range(SITES):
            origin = f"http://h{i}.bench"
            for j in range(per_site + done_per_site):
                url = f"{origin}/page/{j}"
                depth = j % 4
                done = j >= per_site
                copy.write_row(
                    (
                        url_hash(url),
                        url,
                        origin,
                        depth,
                        "web",
                        priority_for(depth, "web"),
                        origin + "/",
                        "done" if done else "queued",
                        0,
                        now + rng.uniform(3600, 7 * 86400) if done else 0.0,
                        now - 60 if done else None,
                        now - rng.uniform(0, 86400),
                    )
                )
    conn.execute("ANALYZE")


def measure(url: str) -> tuple[float, float]:
    """(median ms of one site's claim + due + finish + release, median ms of requeue_due)."""
    from aifactory.collect import frontier as frontier_db
    from aifactory.db import Database

    db = Database(url)
    per_site: list[float] = []
    requeue: list[float] = []
    try:
        for _round in range(ROUNDS):
            started = time.perf_counter()
            leases = frontier_db.claim_sites(db, "bench", limit=CLAIM, lease_sec=60.0)
            claimed = time.perf_counter() - started
            for lease in leases:
                began = time.perf_counter()
                due = frontier_db.due_urls(db, lease.origins[0].origin, DUE) if lease.origins else []
                outcomes = [
                    frontier_db.UrlOutcome(d.url_hash, "done", 0, 200, next_in=7 * 86400.0) for d in due
                ]
                with db.begin() as conn:
                    frontier_db.lock_sites(db, conn, [lease.site])
                    frontier_db.finish_urls(db, conn, outcomes)
                frontier_db.release_site(
                    db,
                    "bench",
                    lease.site,
                    lease.token,
                    ready_in=0.0,
                    error_streak=0,
                    max_pages_per_host=1000,
                )
                per_site.append(time.perf_counter() - began + claimed / max(1, len(leases)))
            began = time.perf_counter()
            frontier_db.requeue_due(db)
            requeue.append(time.perf_counter() - began)
    finally:
        db.dispose()
    return statistics.median(per_site) * 1000, statistics.median(requeue) * 1000


def frontier(base: str, per_site: int, done_per_site: int) -> tuple[float, float, float]:
    from aifactory.db import Database, migrate

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = schema_url(base, schema)
    try:
        db = Database(url)
        migrate.upgrade(db)
        db.dispose()
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            load(conn, per_site, done_per_site)
        loaded = time.perf_counter() - started
        site_ms, requeue_ms = measure(url)
        return site_ms, requeue_ms, loaded
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    base = os.environ.get("AIFACTORY_BENCH_DATABASE_URL", DEFAULT_DB)
    print(f"cores: {os.cpu_count()}; database: PostgreSQL ({base.split('@')[-1]}); {SITES} sites")
    results = {}
    for label, per_site, done in (("10k", 1, 0), ("1M", 100, 100)):
        site_ms, requeue_ms, loaded = frontier(base, per_site, done)
        queued, fetched = SITES * per_site, SITES * done
        print(
            f"{label:>3} queued URLs ({queued:>9,} queued, {fetched:>9,} fetched; loaded in {loaded:5.1f}s): "
            f"claim+due+finish+release {site_ms:6.2f} ms per site, requeue_due {requeue_ms:6.2f} ms"
        )
        results[label] = site_ms
    print(f"RESULT frontier_scale_ratio {results['1M'] / results['10k']:.3f}")


if __name__ == "__main__":
    main()
