"""The crawl frontier: URLs to fetch, and sites leased to the node that fetches them.

Work is claimed per *site*, the unit of politeness (a host name, or a registrable domain with its
subdomains): a node leases a site, fetches the due URLs of its origins at the site's polite pace, renews
the lease while it works and releases it when done. Claiming URLs one by one would hand bursts of one
host's URLs to many nodes, which then either hammer the host or spend their time waiting on each other.

Leases are fenced. Every claim increments the site's `lease_token`; renewals, results, robots.txt and
the release carry the token they were given, and the database refuses them once the token changed, so a
node whose lease ran out (a long pause, a failed renewal) can never write over the work of the node that
took the site over. While leased, a site's `ready_at` is the lease's expiry, so a claim is one index
range (`has_work, ready_at <= now`) whether the site is free, waiting for its politeness interval, or
held by a node that died.

Locks: a transaction that changes `sites` or `hosts` rows first takes the rows of every site it touches
in one sorted pass (`lock_sites`), so two nodes storing pages that link to each other's sites wait for
one another instead of deadlocking. On PostgreSQL claims use `FOR UPDATE SKIP LOCKED`, so nodes never
wait on or take each other's sites; on SQLite (one node) the write lock serializes everything.

Every timestamp in a WHERE clause is a bound value (`Database.clock()`), never the clock function, so
PostgreSQL can use the index for it; the queries' ORDER BY match their indexes, so no claim sorts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from aifactory.collect.urls import (
    hostname_of,
    origin_of,
    priority_for,
    shard_of,
    site_of,
    url_hash,
    variant_key,
)
from aifactory.db import counters, kv
from aifactory.db.database import Database
from aifactory.db.schema import frontier, hosts, pages, sites, system_config
from aifactory.settings import Settings

CHUNK = 500  # ids per IN (...) list
MAX_ORIGINS_PER_LEASE = 64  # origins of one site handed out per lease (the rest keep their work)
MODE_KEY = "crawler.politeness_per"


@dataclass(frozen=True)
class NewUrl:
    """A normalized URL to add to the frontier."""

    url: str
    depth: int = 0
    source: str = "web"
    scope: str = ""


@dataclass(frozen=True)
class OriginState:
    """One origin of a leased site: what its host task needs, and nothing more (no robots.txt body:
    that is loaded, and parsed, only when the node has no parsed copy of this version yet)."""

    origin: str
    crawl_delay: float | None
    robots_status: int | None
    robots_version: float | None  # robots_expires_at: the cached copy's version and expiry
    robots_fresh: bool  # the cached copy has not expired
    pages_fetched: int


@dataclass(frozen=True)
class SiteLease:
    """A site this node now holds: its fencing token, back-off state and the origins with work."""

    site: str
    token: int
    error_streak: int
    origins: tuple[OriginState, ...] = field(default_factory=tuple)


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


@dataclass
class UrlPlan:
    """New frontier rows worked out from reads alone, written after the sites are locked."""

    rows: list[dict] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # origin -> its site, for every row
    new_origins: set[str] = field(default_factory=set)
    in_frontier: set[int] = field(default_factory=set)  # URL hashes found there (or added) by this plan

    @property
    def sites(self) -> set[str]:
        return set(self.origins.values())


class KnownUrls:
    """URL hashes this process knows to be in the frontier (it queued them, or found them there):
    links found again and again on a site's pages are not looked up in the database each time.
    Bounded (the oldest are forgotten and simply looked up again); filled only after a commit."""

    def __init__(self, size: int = 500_000) -> None:
        self.size = size
        self._items: dict[int, None] = {}

    def __contains__(self, key: int) -> bool:
        return key in self._items

    def update(self, hashes: Iterable[int]) -> None:
        items = self._items
        for key in hashes:
            items[key] = None
        while len(items) > self.size:
            del items[next(iter(items))]


def _chunks(items: list, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _dialect(db: Database) -> Any:  # the sqlalchemy dialect module
    return postgresql if db.backend == "postgresql" else sqlite


def politeness_per(settings: Settings) -> str:
    return settings.crawler_politeness_per


# --- queueing ------------------------------------------------------------------------------------------
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
        per=politeness_per(settings),
    )


def add_urls(
    db: Database,
    conn: Connection,
    urls: list[NewUrl],
    *,
    max_per_host: int,
    max_variants: int,
    per: str = "domain",
) -> tuple[int, int]:
    """Queue URLs not seen before; returns (URLs added, hosts added). See plan_urls for the limits."""
    plan = plan_urls(db, conn, urls, max_per_host=max_per_host, max_variants=max_variants, per=per)
    if not plan.rows:
        return 0, 0
    lock_sites(db, conn, plan.sites, with_work=plan.sites)
    return write_urls(db, conn, plan)


def plan_urls(
    db: Database,
    conn: Connection,
    urls: list[NewUrl],
    *,
    max_per_host: int,
    max_variants: int,
    per: str = "domain",
    known: KnownUrls | None = None,
) -> UrlPlan:
    """Which of `urls` to add (reads only); those in `known` are taken as queued already.

    A host takes at most 2 x max_per_host URLs in all (its page budget, with room for failures), and
    URL variants (one path's queries, a calendar pattern) at most max_variants each: traps end here.
    An origin that does not fit the frontier's columns is left out (normalization already refuses
    host names longer than DNS allows; this is the last line, so no row can fail to be written)."""
    plan = UrlPlan()
    batch: dict[int, NewUrl] = {}
    longest = hosts.c.origin.type.length
    for item in urls:
        h = url_hash(item.url)
        if h not in batch and (known is None or h not in known) and len(origin_of(item.url)) <= longest:
            batch[h] = item
    if not batch:
        return plan
    for chunk in _chunks(list(batch)):
        plan.in_frontier.update(
            conn.execute(sa.select(frontier.c.url_hash).where(frontier.c.url_hash.in_(chunk))).scalars()
        )
    fresh = [(h, item) for h, item in batch.items() if h not in plan.in_frontier]
    if not fresh:
        return plan

    origins = sorted({origin_of(item.url) for _, item in fresh})
    room: dict[str, int] = {}
    for chunk in _chunks(origins):
        query = sa.select(hosts.c.origin, hosts.c.urls_known).where(hosts.c.origin.in_(chunk))
        for origin, urls_known in conn.execute(query):
            room[origin] = 2 * max_per_host - urls_known
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

    now = db.clock()
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
        plan.origins[origin] = site_of(origin, per)
        plan.rows.append(
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
    plan.new_origins = {origin for origin in plan.origins if origin not in room}
    plan.rows.sort(key=lambda row: row["url_hash"])  # one lock order for every node: no deadlocks
    return plan


def write_urls(db: Database, conn: Connection, plan: UrlPlan) -> tuple[int, int]:
    """Insert the planned rows and account for them on their hosts; (URLs added, hosts added).
    The sites of the plan must be locked already (lock_sites)."""
    if not plan.rows:
        return 0, 0
    insert = _dialect(db).insert(frontier).on_conflict_do_nothing()
    added: list[int] = []
    for chunk in _chunks(plan.rows):  # a URL another node queued a moment ago is not counted twice
        result = conn.execute(insert.returning(frontier.c.url_hash, sort_by_parameter_order=True), chunk)
        added.extend(result.scalars())
    added_set = set(added)
    plan.in_frontier |= added_set
    per_origin: dict[str, int] = defaultdict(int)
    source: dict[str, str] = {}
    for row in plan.rows:
        if row["url_hash"] in added_set:
            per_origin[row["origin"]] += 1
            source.setdefault(row["origin"], row["source"])
    now = db.clock()
    statement = _dialect(db).insert(hosts)
    statement = statement.on_conflict_do_update(
        index_elements=["origin"],
        set_={"has_work": sa.true(), "urls_known": hosts.c.urls_known + statement.excluded.urls_known},
    )
    values = [
        {
            "origin": origin,
            "hostname": hostname_of(origin)[:255],
            "site": plan.origins[origin],
            "source": source[origin],
            "has_work": True,
            "urls_known": count,
            "created_at": now,
        }
        for origin, count in sorted(per_origin.items())
    ]
    if values:
        conn.execute(statement, values)
    return len(added), len([origin for origin in plan.new_origins if per_origin.get(origin)])


def lock_sites(
    db: Database, conn: Connection, names: Iterable[str], *, with_work: Iterable[str] = ()
) -> dict[str, tuple[str | None, int]]:
    """Create the sites rows that do not exist yet and lock them all, in one sorted pass; mark those
    in `with_work` as having work. Returns each site's (lease owner, lease token) as now locked.

    Every transaction that changes sites or hosts rows calls this first with every site it touches,
    so rows are always locked in the same order: two nodes cannot deadlock on them."""
    ordered = sorted(set(names))
    if not ordered:
        return {}
    work = set(with_work)
    now = db.clock()
    statement = _dialect(db).insert(sites)
    statement = statement.on_conflict_do_update(
        index_elements=["site"], set_={"has_work": sa.or_(sites.c.has_work, statement.excluded.has_work)}
    ).returning(sites.c.site, sites.c.lease_owner, sites.c.lease_token, sort_by_parameter_order=True)
    state: dict[str, tuple[str | None, int]] = {}
    for chunk in _chunks(ordered):
        rows = [
            {
                "site": name,
                "shard": shard_of(name),
                "has_work": name in work,
                "ready_at": now,
                "created_at": now,
            }
            for name in chunk
        ]
        for name, owner, token in conn.execute(statement, rows):
            state[name] = (owner, int(token))
    return state


# --- leases --------------------------------------------------------------------------------------------
def claim_sites(
    db: Database,
    owner: str,
    *,
    limit: int,
    lease_sec: float,
    shard: tuple[int, int] | None = None,
    steal_after: float = 0.0,
    only_origins: set[str] | None = None,
    per: str = "domain",
) -> list[SiteLease]:
    """Lease up to `limit` sites that have work and are due (free, past their politeness interval, or
    held by a node whose lease ran out).

    With `shard=(i, n)` sites whose shard % n == i come first; another node's sites are taken only once
    they have waited `steal_after` seconds (their node is gone, or too busy to get to them). Each of the
    (at most two) queries walks the claim index in ready_at order and stops at `limit`: nothing sorts."""
    if limit <= 0:
        return []
    with db.begin() as conn:
        now = db.clock()
        base = sa.select(sites.c.site).where(sites.c.has_work == sa.true(), sites.c.ready_at <= now)
        if only_origins is not None:
            base = base.where(sites.c.site.in_(sorted({site_of(o, per) for o in only_origins})))

        def pick(query: sa.Select, count: int) -> list[str]:
            query = query.order_by(sites.c.ready_at).limit(count)
            if db.backend == "postgresql":
                query = query.with_for_update(skip_locked=True)
            return list(conn.execute(query).scalars())

        if shard is not None and shard[1] > 1:
            index, count = shard
            picked = pick(base.where(sites.c.shard % count == index), limit)
            if len(picked) < limit:
                others = base.where(sites.c.shard % count != index, sites.c.ready_at <= now - steal_after)
                picked += pick(others, limit - len(picked))
        else:
            picked = pick(base, limit)
        if not picked:
            return []
        leased = conn.execute(
            sites.update()
            .where(sites.c.site.in_(picked))
            .values(lease_owner=owner, lease_token=sites.c.lease_token + 1, ready_at=now + lease_sec)
            .returning(sites.c.site, sites.c.lease_token, sites.c.error_streak)
        ).all()
        origins: dict[str, list[OriginState]] = defaultdict(list)
        query = (
            sa.select(
                hosts.c.origin,
                hosts.c.site,
                hosts.c.crawl_delay,
                hosts.c.robots_status,
                hosts.c.robots_expires_at,
                hosts.c.pages_fetched,
            )
            .where(hosts.c.site.in_(picked), hosts.c.has_work == sa.true())
            .order_by(hosts.c.site, hosts.c.origin)
        )
        if only_origins is not None:
            query = query.where(hosts.c.origin.in_(sorted(only_origins)))
        for row in conn.execute(query):
            if len(origins[row.site]) < MAX_ORIGINS_PER_LEASE:
                origins[row.site].append(
                    OriginState(
                        origin=row.origin,
                        crawl_delay=row.crawl_delay,
                        robots_status=row.robots_status,
                        robots_version=row.robots_expires_at if row.robots_status is not None else None,
                        robots_fresh=row.robots_status is not None and (row.robots_expires_at or 0) > now,
                        pages_fetched=row.pages_fetched,
                    )
                )
    return [
        SiteLease(site=site, token=int(token), error_streak=streak, origins=tuple(origins.get(site, ())))
        for site, token, streak in sorted(leased)
    ]


def renew_leases(db: Database, owner: str, tokens: dict[str, int], lease_sec: float) -> set[str]:
    """Extend this node's leases (site -> token); returns the sites it still holds. A site missing from
    the answer was taken over (its token changed): its host task must stop at once."""
    if not tokens:
        return set()
    held: set[str] = set()
    with db.begin() as conn:
        now = db.clock()
        for chunk in _chunks(sorted(tokens.items())):
            result = conn.execute(
                sites.update()
                .where(sites.c.lease_owner == owner, sa.tuple_(sites.c.site, sites.c.lease_token).in_(chunk))
                .values(ready_at=now + lease_sec)
                .returning(sites.c.site)
            )
            held.update(result.scalars())
    return held


def release_site(
    db: Database,
    owner: str,
    site: str,
    token: int,
    *,
    ready_in: float,
    error_streak: int,
    max_pages_per_host: int,
    give_up: dict[str, str] | None = None,
) -> bool:
    """Give a site back: free at `ready_in` seconds from now (politeness, back-off) or when its next
    queued URL is due, whichever is later; no longer listed as having work if nothing is left.
    `give_up` (origin -> error) fails every queued URL of an origin that is gone (DNS, TLS, refused).
    Returns False when the lease had already been taken over (nothing is written then)."""
    with db.begin() as conn:
        # Locked first, so links another node queues meanwhile cannot have their has_work=true
        # overwritten by the false computed here.
        (state,) = lock_sites(db, conn, [site]).values()
        if state != (owner, token):
            return False
        now = db.clock()
        for origin, error in sorted((give_up or {}).items()):
            conn.execute(
                frontier.update()
                .where(frontier.c.origin == origin, frontier.c.state == "queued")
                .values(state="failed", error=error[:64], next_fetch_at=None, finished_at=now)
            )
        soonest_site: float | None = None
        rows = conn.execute(
            sa.select(hosts.c.origin, hosts.c.pages_fetched)
            .where(hosts.c.site == site, hosts.c.has_work == sa.true())
            .order_by(hosts.c.origin)
            .limit(4 * MAX_ORIGINS_PER_LEASE)
        ).all()
        idle = []
        for origin, pages_fetched in rows:
            soonest = _soonest_due(conn, origin, refetch_only=pages_fetched >= max_pages_per_host)
            if soonest is None:
                idle.append(origin)
            else:
                soonest_site = soonest if soonest_site is None else min(soonest_site, soonest)
        for chunk in _chunks(idle):
            conn.execute(hosts.update().where(hosts.c.origin.in_(chunk)).values(has_work=False))
        has_work = soonest_site is not None or len(rows) == 4 * MAX_ORIGINS_PER_LEASE  # more unread
        ready_at = max(now + ready_in, soonest_site or 0.0)
        conn.execute(
            sites.update()
            .where(sites.c.site == site)
            .values(lease_owner=None, has_work=has_work, ready_at=ready_at, error_streak=error_streak)
        )
    return True


def _soonest_due(conn: Connection, origin: str, *, refetch_only: bool) -> float | None:
    """When the origin's first queued URL is due (an index lookup); only refetches once the origin has
    spent its page budget (its new URLs wait for a bigger budget)."""
    query = sa.select(frontier.c.next_fetch_at).where(
        frontier.c.origin == origin, frontier.c.state == "queued"
    )
    if refetch_only:
        query = query.where(frontier.c.last_fetched_at.is_not(None))
    value = conn.execute(query.order_by(frontier.c.next_fetch_at).limit(1)).scalar()
    return None if value is None else float(value)


def release_all(db: Database, owner: str) -> int:
    """Drop every lease of `owner` (a node starting again under its old id, or stopping)."""
    with db.begin() as conn:
        result = conn.execute(
            sites.update().where(sites.c.lease_owner == owner).values(lease_owner=None, ready_at=db.clock())
        )
        return result.rowcount or 0


# --- the URLs of a leased site --------------------------------------------------------------------------
def due_urls(db: Database, origin: str, limit: int, *, refetch_only: bool = False) -> list[DueUrl]:
    """An origin's queued URLs that are due, best (shallowest) first: a range of ix_frontier_queue,
    read in its order and stopped at `limit`. `refetch_only`: URLs fetched before (budget spent)."""
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
            frontier.c.origin == origin, frontier.c.state == "queued", frontier.c.next_fetch_at <= db.clock()
        )
        .order_by(frontier.c.priority.desc(), frontier.c.discovered_at, frontier.c.url_hash)
        .limit(limit)
    )
    if refetch_only:
        query = query.where(frontier.c.last_fetched_at.is_not(None))
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
    """Record what became of fetched URLs (inside the caller's transaction, whose sites it locked)."""
    if not outcomes:
        return
    now = db.clock()
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
            finished_at=now,
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


# --- robots.txt -----------------------------------------------------------------------------------------
def load_robots(db: Database, origin: str) -> tuple[int | None, str, str, float | None]:
    """A host's cached robots.txt: (status, body, tdmrep.json, version)."""
    with db.read() as conn:
        row = conn.execute(
            sa.select(
                hosts.c.robots_status, hosts.c.robots_body, hosts.c.tdmrep, hosts.c.robots_expires_at
            ).where(hosts.c.origin == origin)
        ).first()
    if row is None:
        return None, "", "", None
    return row.robots_status, row.robots_body or "", row.tdmrep or "", row.robots_expires_at


def save_robots(
    db: Database,
    origin: str,
    *,
    owner: str,
    site: str,
    token: int,
    status: int,
    body: str,
    ttl: float,
    crawl_delay: float | None,
    tdmrep: str | None,
) -> float | None:
    """Cache a host's robots.txt (and tdmrep.json) for every node, for `ttl` seconds; returns the
    copy's version (its expiry), or None when the lease was taken over (nothing is written then)."""
    with db.begin() as conn:
        (state,) = lock_sites(db, conn, [site]).values()
        if state != (owner, token):
            return None
        expires = db.clock() + ttl
        conn.execute(
            hosts.update()
            .where(hosts.c.origin == origin)
            .values(
                robots_status=status,
                robots_body=body,
                robots_expires_at=expires,
                crawl_delay=crawl_delay,
                tdmrep=tdmrep,
            )
        )
    return expires


# --- refetches, user requests, retention -----------------------------------------------------------------
def requeue_due(db: Database, limit: int = 5000) -> int:
    """Put fetched pages whose refetch is due back in the queue (they are then fetched conditionally);
    a range of ix_frontier_refetch, so a frontier of done rows costs nothing until they come due."""
    with db.begin() as conn:
        rows = conn.execute(
            sa.select(frontier.c.url_hash, frontier.c.origin)
            .where(frontier.c.state == "done", frontier.c.next_fetch_at <= db.clock())
            .order_by(frontier.c.next_fetch_at)
            .limit(limit)
        ).all()
        if not rows:
            return 0
        _mark_queued(db, conn, sorted({row.origin for row in rows}))
        for chunk in _chunks(sorted(row.url_hash for row in rows)):
            conn.execute(
                frontier.update()
                .where(frontier.c.url_hash.in_(chunk), frontier.c.state == "done")
                .values(state="queued")
            )
    return len(rows)


def _mark_queued(db: Database, conn: Connection, origins: list[str], *, ready_now: bool = False) -> None:
    """Give these origins (and their sites) work again, sites locked first."""
    site_names: set[str] = set()
    for chunk in _chunks(origins):
        site_names.update(conn.execute(sa.select(hosts.c.site).where(hosts.c.origin.in_(chunk))).scalars())
    lock_sites(db, conn, site_names, with_work=site_names)
    for chunk in _chunks(origins):
        conn.execute(hosts.update().where(hosts.c.origin.in_(chunk)).values(has_work=True))
    if ready_now:
        for chunk in _chunks(sorted(site_names)):
            conn.execute(
                sites.update()
                .where(sites.c.site.in_(chunk), sites.c.lease_owner.is_(None))
                .values(ready_at=0.0)
            )


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
        if changed:
            _mark_queued(db, conn, sorted({origin_of(url) for url in urls}), ready_now=True)
    return changed


def prune(db: Database, *, keep_sec: float, limit: int = 5000) -> tuple[int, int]:
    """Retention: delete `pages` rows fetched, and finished frontier rows (never to be fetched again)
    finished, more than `keep_sec` ago, at most `limit` of each per call; (pages, URLs) deleted.

    The running counters are not touched (they count what happened, not what is kept), nor are a
    host's `urls_known`, so a host's cap on queued URLs still holds after its old rows are gone. A
    pruned URL found again is queued and fetched again, as a new page."""
    cutoff = db.clock() - keep_sec
    with db.begin() as conn:
        old_pages = sa.select(pages.c.url_hash).where(pages.c.fetched_at < cutoff).limit(limit)
        pruned_pages = conn.execute(
            pages.delete().where(pages.c.url_hash.in_(old_pages.scalar_subquery()))
        ).rowcount
        old_urls = (
            sa.select(frontier.c.url_hash)
            .where(frontier.c.next_fetch_at.is_(None), frontier.c.finished_at < cutoff)
            .limit(limit)
        )
        pruned_urls = conn.execute(
            frontier.delete().where(frontier.c.url_hash.in_(old_urls.scalar_subquery()))
        ).rowcount
        counters.add(
            db, {"crawl.pruned_pages": pruned_pages or 0, "crawl.pruned_urls": pruned_urls or 0}, conn
        )
    return pruned_pages or 0, pruned_urls or 0


def ensure_site_mode(db: Database, per: str) -> bool:
    """Regroup hosts into sites when the politeness unit (CRAWLER_POLITENESS_PER) changed; True if it
    did. Leases of the old sites end (their tokens are gone, so their holders stop writing)."""
    if kv.get_value(db, MODE_KEY) == per:
        return False
    with db.begin() as conn:
        if db.backend == "postgresql":  # one node regroups; the others wait and then see it done
            conn.execute(sa.text("LOCK TABLE sites IN EXCLUSIVE MODE"))
        stored = conn.execute(
            sa.select(system_config.c.value).where(system_config.c.key == MODE_KEY)
        ).scalar()
        if stored == per:
            return False
        work: dict[str, bool] = defaultdict(bool)
        updates = []
        for origin, has_work in conn.execute(sa.select(hosts.c.origin, hosts.c.has_work)):
            site = site_of(origin, per)
            work[site] |= bool(has_work)
            updates.append({"o": origin, "s": site})
        for chunk in _chunks(updates, 5000):
            conn.execute(
                hosts.update().where(hosts.c.origin == sa.bindparam("o")).values(site=sa.bindparam("s")),
                chunk,
            )
        conn.execute(sites.delete())
        now = db.clock()
        rows = [
            {"site": site, "shard": shard_of(site), "has_work": has, "ready_at": now, "created_at": now}
            for site, has in sorted(work.items())
        ]
        for chunk in _chunks(rows, 5000):
            conn.execute(sites.insert(), chunk)
        db.upsert(conn, system_config, {"key": MODE_KEY, "value": per, "updated_at": now}, keys=["key"])
    return True


# --- reading ------------------------------------------------------------------------------------------
def state_counts(db: Database, origins: set[str] | None = None) -> dict[str, int]:
    """URLs per state (a scan: for the one-off `crawl` summary and tests, not for the dashboard)."""
    query = sa.select(frontier.c.state, sa.func.count()).group_by(frontier.c.state)
    if origins is not None:
        query = query.where(frontier.c.origin.in_(sorted(origins)))
    with db.read() as conn:
        return {state: int(count) for state, count in conn.execute(query)}


def next_due_in(db: Database, origins: set[str]) -> float | None:
    """Seconds until one of these hosts' sites has due work again (0 = now); None if none has work."""
    with db.read() as conn:
        site_names = sorted(
            set(conn.execute(sa.select(hosts.c.site).where(hosts.c.origin.in_(sorted(origins)))).scalars())
        )
        soonest = conn.execute(
            sa.select(sa.func.min(sites.c.ready_at)).where(
                sites.c.site.in_(site_names), sites.c.has_work == sa.true()
            )
        ).scalar()
    return None if soonest is None else max(0.0, float(soonest) - db.clock())
