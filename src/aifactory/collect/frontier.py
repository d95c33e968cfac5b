"""The crawl frontier: URLs to fetch, and hosts leased to the node that fetches them.

Work is claimed per *host* (a URL origin), not per URL: a node leases a host (lease owner + expiry on
the database clock), fetches that host's due URLs at the host's polite pace, renews the lease while it
works and releases it when done. Claiming URLs one by one would hand bursts of one host's URLs to many
nodes, which then either hammer the host or spend their time waiting on each other.

On PostgreSQL the claim is `SELECT ... FOR UPDATE SKIP LOCKED`, so nodes never wait on or take each
other's hosts; on SQLite (one node) the write lock serializes claims. A node that dies stops renewing:
its leases expire and any node claims those hosts again, so nothing it had not finished is lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from aifactory.collect.urls import hostname_of, origin_of, priority_for, shard_of, url_hash, variant_key
from aifactory.db.database import Database
from aifactory.db.schema import frontier, hosts
from aifactory.settings import Settings

CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class NewUrl:
    """A normalized URL to add to the frontier."""

    url: str
    depth: int = 0
    source: str = "web"
    scope: str = ""


@dataclass(frozen=True)
class HostLease:
    """A host this node now holds, with its politeness and robots.txt state."""

    origin: str
    crawl_delay: float | None
    error_streak: int
    robots_status: int | None
    robots_body: str | None
    robots_fresh: bool  # the cached robots.txt has not expired
    tdmrep: str | None
    pages_fetched: int


@dataclass(frozen=True)
class DueUrl:
    url_hash: int
    url: str
    depth: int
    source: str
    scope: str
    attempts: int
    etag: str | None
    last_modified: str | None
    fetched_before: bool


@dataclass(frozen=True)
class UrlOutcome:
    """What became of one URL: its new state and when (seconds from now) to fetch it next."""

    url_hash: int
    state: str  # queued (retry later) | done | failed | blocked | skipped
    attempts: int
    http_status: int | None = None
    error: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    fetched: bool = True  # a request was made (sets last_fetched_at)
    next_in: float | None = None  # None: never again


def _chunks(items: list, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_ignore(db: Database, conn: Connection, table: sa.Table, rows: list[dict]) -> None:
    if rows:
        dialect = postgresql if db.backend == "postgresql" else sqlite
        conn.execute(dialect.insert(table).on_conflict_do_nothing(), rows)


def queue_urls(
    db: Database, settings: Settings, urls: list[NewUrl], conn: Connection | None = None
) -> tuple[int, int]:
    """`add_urls` with the crawler's per-host limits from the settings; (URLs added, hosts added).

    Runs in `conn` when given (the caller's transaction), else in a transaction of its own."""
    if conn is None:
        with db.begin() as own:
            return queue_urls(db, settings, urls, own)
    return add_urls(
        db,
        conn,
        urls,
        max_per_host=settings.crawler_max_pages_per_host,
        max_variants=settings.crawler_max_url_variants,
    )


def add_urls(
    db: Database, conn: Connection, urls: list[NewUrl], *, max_per_host: int, max_variants: int
) -> tuple[int, int]:
    """Queue URLs not seen before; returns (URLs added, hosts added).

    A host takes at most 2 x max_per_host URLs in all (its page budget, with room for failures), and
    URL variants (one path's queries, a calendar pattern) at most max_variants each: traps end here."""
    batch: dict[int, NewUrl] = {}
    for item in urls:
        batch.setdefault(url_hash(item.url), item)
    if not batch:
        return 0, 0
    known: set[int] = set()
    for chunk in _chunks(list(batch)):
        known.update(
            conn.execute(sa.select(frontier.c.url_hash).where(frontier.c.url_hash.in_(chunk))).scalars()
        )
    fresh = [(h, item) for h, item in batch.items() if h not in known]
    if not fresh:
        return 0, 0

    origins = sorted({origin_of(item.url) for _, item in fresh})
    room: dict[str, int] = {}
    for chunk in _chunks(origins):
        query = sa.select(hosts.c.origin, hosts.c.urls_known).where(hosts.c.origin.in_(chunk))
        for origin, urls_known in conn.execute(query):
            room[origin] = 2 * max_per_host - urls_known
    new_hosts = [origin for origin in origins if origin not in room]

    keys = {h: variant_key(item.url) for h, item in fresh}
    wanted_keys = sorted({key for key in keys.values() if key is not None})
    variants: dict[int, int] = defaultdict(int)
    for chunk in _chunks(wanted_keys):
        query = (
            sa.select(frontier.c.variant_key, sa.func.count())
            .where(frontier.c.variant_key.in_(chunk))
            .group_by(frontier.c.variant_key)
        )
        variants.update({key: count for key, count in conn.execute(query)})

    now = db.now_value(conn)
    rows = []
    per_host: dict[str, int] = defaultdict(int)
    for h, item in fresh:
        origin = origin_of(item.url)
        key = keys[h]
        if per_host[origin] >= room.get(origin, 2 * max_per_host):
            continue
        if key is not None:
            if variants[key] >= max_variants:
                continue
            variants[key] += 1
        per_host[origin] += 1
        rows.append(
            {
                "url_hash": h,
                "url": item.url,
                "origin": origin,
                "depth": item.depth,
                "source": item.source,
                "priority": priority_for(item.depth, item.source),
                "scope": item.scope,
                "state": "queued",
                "attempts": 0,
                "next_fetch_at": 0.0,
                "variant_key": key,
                "discovered_at": now,
            }
        )
    rows.sort(key=lambda row: row["url_hash"])  # one lock order for every node: no deadlocks
    _insert_ignore(db, conn, frontier, rows)
    sources = {origin_of(row["url"]): row["source"] for row in rows}
    for origin, count in sorted(per_host.items()):
        if not count:
            continue
        db.upsert(
            conn,
            hosts,
            {
                "origin": origin,
                "hostname": hostname_of(origin)[:255],
                "shard": shard_of(origin),
                "source": sources[origin],
                "has_work": True,
                "ready_at": db.now(),
                "urls_known": count,
                "created_at": db.now(),
            },
            keys=["origin"],
            update=lambda new: {"has_work": sa.true(), "urls_known": hosts.c.urls_known + new.urls_known},
        )
    return len(rows), len([origin for origin in new_hosts if per_host.get(origin)])


def claim_hosts(
    db: Database,
    owner: str,
    *,
    limit: int,
    lease_sec: float,
    max_pages_per_host: int,
    shard: tuple[int, int] | None = None,
    steal_after: float = 0.0,
    only_origins: set[str] | None = None,
) -> list[HostLease]:
    """Lease up to `limit` hosts that have work, are due and are not leased by a live node.

    With `shard=(i, n)` hosts whose shard % n == i come first; another node's hosts are taken only
    once they have waited `steal_after` seconds (their node is gone, or too busy to get to them)."""
    if limit <= 0:
        return []
    with db.begin() as conn:
        now = db.now_value(conn)
        condition = sa.and_(
            hosts.c.has_work.is_(True),
            hosts.c.ready_at <= now,
            sa.or_(hosts.c.lease_owner.is_(None), hosts.c.lease_expires < now),
            hosts.c.pages_fetched < max_pages_per_host,
        )
        order: list[sa.ColumnElement] = [hosts.c.ready_at]
        if only_origins is not None:
            condition = sa.and_(condition, hosts.c.origin.in_(sorted(only_origins)))
        if shard is not None and shard[1] > 1:
            mine = (hosts.c.shard % shard[1]) == shard[0]
            condition = sa.and_(condition, sa.or_(mine, hosts.c.ready_at <= now - steal_after))
            order = [sa.case((mine, 0), else_=1), hosts.c.ready_at]
        query = sa.select(hosts).where(condition).order_by(*order).limit(limit)
        if db.backend == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = conn.execute(query).all()
        if not rows:
            return []
        conn.execute(
            hosts.update()
            .where(hosts.c.origin.in_([row.origin for row in rows]))
            .values(lease_owner=owner, lease_expires=now + lease_sec)
        )
    return [
        HostLease(
            origin=row.origin,
            crawl_delay=row.crawl_delay,
            error_streak=row.error_streak,
            robots_status=row.robots_status,
            robots_body=row.robots_body,
            robots_fresh=row.robots_expires_at is not None and row.robots_expires_at > now,
            tdmrep=row.tdmrep,
            pages_fetched=row.pages_fetched,
        )
        for row in rows
    ]


def renew_leases(db: Database, owner: str, origins: list[str], lease_sec: float) -> set[str]:
    """Extend this node's leases; returns the origins it still holds (a lost one was taken over)."""
    if not origins:
        return set()
    held: set[str] = set()
    with db.begin() as conn:
        now = db.now_value(conn)
        for chunk in _chunks(sorted(origins)):
            result = conn.execute(
                hosts.update()
                .where(hosts.c.lease_owner == owner, hosts.c.origin.in_(chunk))
                .values(lease_expires=now + lease_sec)
                .returning(hosts.c.origin)
            )
            held.update(result.scalars())
    return held


def due_urls(db: Database, origin: str, limit: int) -> list[DueUrl]:
    """A leased host's queued URLs that are due, best (shallowest) first."""
    query = (
        sa.select(
            frontier.c.url_hash,
            frontier.c.url,
            frontier.c.depth,
            frontier.c.source,
            frontier.c.scope,
            frontier.c.attempts,
            frontier.c.etag,
            frontier.c.last_modified,
            frontier.c.last_fetched_at,
        )
        .where(
            frontier.c.origin == origin, frontier.c.state == "queued", frontier.c.next_fetch_at <= db.now()
        )
        .order_by(frontier.c.priority.desc(), frontier.c.discovered_at, frontier.c.url_hash)
        .limit(limit)
    )
    with db.read() as conn:
        return [
            DueUrl(
                url_hash=row.url_hash,
                url=row.url,
                depth=row.depth,
                source=row.source,
                scope=row.scope,
                attempts=row.attempts,
                etag=row.etag,
                last_modified=row.last_modified,
                fetched_before=row.last_fetched_at is not None,
            )
            for row in conn.execute(query)
        ]


def finish_urls(db: Database, conn: Connection, outcomes: list[UrlOutcome]) -> None:
    """Record what became of fetched URLs (inside the caller's transaction)."""
    if not outcomes:
        return
    now = db.now_value(conn)
    rows = [
        {
            "h": outcome.url_hash,
            "state": outcome.state,
            "attempts": outcome.attempts,
            "http_status": outcome.http_status,
            "error": outcome.error[:64] if outcome.error else None,
            "etag": outcome.etag[:300] if outcome.etag else None,
            "last_modified": outcome.last_modified[:100] if outcome.last_modified else None,
            "next_fetch_at": None if outcome.next_in is None else now + outcome.next_in,
            "fetched": outcome.fetched,
        }
        for outcome in sorted(outcomes, key=lambda outcome: outcome.url_hash)
    ]
    fetched_at = sa.case((sa.bindparam("fetched"), now), else_=frontier.c.last_fetched_at)
    conn.execute(
        frontier.update()
        .where(frontier.c.url_hash == sa.bindparam("h"))
        .values(
            state=sa.bindparam("state"),
            attempts=sa.bindparam("attempts"),
            http_status=sa.bindparam("http_status"),
            error=sa.bindparam("error"),
            etag=sa.bindparam("etag"),
            last_modified=sa.bindparam("last_modified"),
            next_fetch_at=sa.bindparam("next_fetch_at"),
            last_fetched_at=fetched_at,
        ),
        rows,
    )


def add_host_pages(conn: Connection, pages_by_origin: dict[str, int]) -> None:
    """Count new pages against each host's page budget (inside the caller's transaction)."""
    rows = [{"o": origin, "n": n} for origin, n in sorted(pages_by_origin.items()) if n]
    if rows:
        conn.execute(
            hosts.update()
            .where(hosts.c.origin == sa.bindparam("o"))
            .values(pages_fetched=hosts.c.pages_fetched + sa.bindparam("n")),
            rows,
        )


def save_robots(
    db: Database,
    origin: str,
    *,
    status: int,
    body: str,
    ttl: float,
    crawl_delay: float | None,
    tdmrep: str | None,
) -> None:
    """Cache a host's robots.txt (and tdmrep.json) for every node, for `ttl` seconds."""
    with db.begin() as conn:
        conn.execute(
            hosts.update()
            .where(hosts.c.origin == origin)
            .values(
                robots_status=status,
                robots_body=body,
                robots_expires_at=db.now() + ttl,
                crawl_delay=crawl_delay,
                tdmrep=tdmrep,
            )
        )


def release_host(
    db: Database, owner: str, origin: str, *, ready_in: float, error_streak: int, max_pages_per_host: int
) -> None:
    """Give a host back: free at `ready_in` seconds from now (politeness, back-off) or when its next
    queued URL is due, whichever is later; no longer listed as having work if nothing is queued."""
    with db.begin() as conn:
        # Lock the row first, so links another node queues for this host meanwhile cannot have their
        # has_work=true overwritten by the false computed here.
        row = conn.execute(
            sa.select(hosts.c.lease_owner, hosts.c.pages_fetched)
            .where(hosts.c.origin == origin)
            .with_for_update()
        ).first()
        if row is None or row.lease_owner != owner:
            return  # the lease expired and another node holds the host now: it is theirs to release
        now = db.now_value(conn)
        soonest = conn.execute(
            sa.select(sa.func.min(frontier.c.next_fetch_at)).where(
                frontier.c.origin == origin, frontier.c.state == "queued"
            )
        ).scalar()
        has_work = soonest is not None and row.pages_fetched < max_pages_per_host
        ready_at = max(now + ready_in, float(soonest) if has_work else 0.0)
        conn.execute(
            hosts.update()
            .where(hosts.c.origin == origin)
            .values(
                lease_owner=None,
                lease_expires=None,
                has_work=has_work,
                ready_at=ready_at,
                error_streak=error_streak,
            )
        )


def release_all(db: Database, owner: str) -> int:
    """Drop every lease of `owner` (a node starting again under its old id, or stopping)."""
    with db.begin() as conn:
        result = conn.execute(
            hosts.update().where(hosts.c.lease_owner == owner).values(lease_owner=None, lease_expires=None)
        )
        return result.rowcount or 0


def requeue_due(db: Database, limit: int = 5000) -> int:
    """Put fetched pages whose refetch is due back in the queue (they are then fetched conditionally)."""
    with db.begin() as conn:
        rows = conn.execute(
            sa.select(frontier.c.url_hash, frontier.c.origin)
            .where(frontier.c.state == "done", frontier.c.next_fetch_at <= db.now())
            .order_by(frontier.c.url_hash)
            .limit(limit)
        ).all()
        if not rows:
            return 0
        for chunk in _chunks(sorted(row.url_hash for row in rows)):
            conn.execute(
                frontier.update()
                .where(frontier.c.url_hash.in_(chunk), frontier.c.state == "done")
                .values(state="queued")
            )
        for chunk in _chunks(sorted({row.origin for row in rows})):
            conn.execute(hosts.update().where(hosts.c.origin.in_(chunk)).values(has_work=True))
    return len(rows)


def mark_due(db: Database, urls: list[str], states: tuple[str, ...] | None = None) -> int:
    """Make these URLs due now (those in `states`, or all): a user asked for them explicitly."""
    hashes = sorted({url_hash(url) for url in urls})
    with db.begin() as conn:
        changed = 0
        for chunk in _chunks(hashes):
            query = frontier.update().where(frontier.c.url_hash.in_(chunk))
            if states is not None:
                query = query.where(frontier.c.state.in_(states))
            changed += conn.execute(query.values(state="queued", attempts=0, next_fetch_at=0.0)).rowcount or 0
        if not changed:
            return 0
        origins = sorted({origin_of(url) for url in urls})
        conn.execute(hosts.update().where(hosts.c.origin.in_(origins)).values(has_work=True, ready_at=0.0))
    return changed


def state_counts(db: Database, origins: set[str] | None = None) -> dict[str, int]:
    """URLs per state (a scan: for the one-off `crawl` summary and tests, not for the dashboard)."""
    query = sa.select(frontier.c.state, sa.func.count()).group_by(frontier.c.state)
    if origins is not None:
        query = query.where(frontier.c.origin.in_(sorted(origins)))
    with db.read() as conn:
        return {state: int(count) for state, count in conn.execute(query)}


def next_due_in(db: Database, origins: set[str]) -> float | None:
    """Seconds until one of these hosts has due work again (0 = now); None if none has work left."""
    with db.read() as conn:
        now = db.now_value(conn)
        soonest = conn.execute(
            sa.select(sa.func.min(hosts.c.ready_at)).where(
                hosts.c.origin.in_(sorted(origins)), hosts.c.has_work.is_(True)
            )
        ).scalar()
    return None if soonest is None else max(0.0, float(soonest) - now)
