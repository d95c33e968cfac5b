"""Pages waiting for the text pipeline.

The crawler stages each fetched page in the same transaction that marks its URL fetched; the text
engine claims staged pages (a lease on the database clock), analyzes them in a process pool and
stores their documents in the transaction that deletes them. So extraction's CPU cost never holds
up the fetcher or its database transaction, and a node that dies loses nothing: its claims expire
and any node picks the pages up again (storing is idempotent by URL).

Each claim counts an attempt. A page claimed before that did not finish is claimed alone, so a page
that crashes the pool is found out by itself; one claimed MAX_ATTEMPTS times without finishing is
quarantined (removed and counted as docs.quarantined) instead of crashing the engine forever.

The collectors of all nodes share one staging budget (STAGING_MAX_PAGES): each reserves its room for a
cycle (`reserve`) in one locked row, so N nodes never stage N times the limit between them.
"""

from __future__ import annotations

import json
import zlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aifactory.collect.sink import FetchedPage, PageStore
from aifactory.collect.urls import origin_of
from aifactory.db import counters
from aifactory.db.database import Database
from aifactory.db.schema import staged_pages, system_config
from aifactory.text.pipeline import RawDocument

MAX_LINKS = 100  # off-site links kept per page for automatic discovery
CLAIM_SECONDS = 300.0
MAX_ATTEMPTS = 3  # claims of one page that never finished before it is quarantined
RESERVATIONS_KEY = "staging.reservations"
DOCUMENT_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "text/plain",
    "text/markdown",
)  # long enough for a batch of slow extractions; a dead node's claim ends then


def stage(db: Database, conn: Connection, raws: list[RawDocument], node_id: str) -> None:
    """Queue documents for the text engine (one multi-row insert)."""
    if not raws:
        return
    conn.execute(
        staged_pages.insert().values(created_at=db.now(), node_id=node_id),
        [
            {
                "url": raw.url[:2000],
                "final_url": (raw.final_url or raw.url)[:2000],
                "source": raw.source[:32],
                "content_type": raw.content_type[:200],
                "title": raw.title[:500],
                "body": zlib.compress(raw.body.encode("utf-8", errors="replace"), 1),
                "train_allowed": raw.train_allowed,
                "optout_reason": raw.optout_reason[:200],
                "license_hint": raw.license_hint[:64],
                "published": (raw.published or "")[:64],
                "links": raw.links[:MAX_LINKS],
            }
            for raw in raws
        ],
    )


class StagingSink:
    """The crawler's sink in a running factory: fetch metadata in `pages`, the page text staged."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pages = PageStore(db)

    def handle(self, pages: list[FetchedPage], conn: Connection) -> None:
        self.pages.handle(pages, conn)
        by_node: dict[str, list[RawDocument]] = {}
        for page in pages:
            if not page.text.strip() or page.mime not in DOCUMENT_TYPES:
                continue  # feeds and empty bodies carry links only, no document
            by_node.setdefault(page.node_id, []).append(
                RawDocument(
                    url=page.url,
                    final_url=page.final_url,
                    body=page.text,
                    content_type=page.mime,
                    source=page.source,
                    title=page.title,
                    train_allowed=page.train_allowed,
                    optout_reason="optout:" + ",".join(page.optout_reasons) if page.optout_reasons else "",
                    links=off_site_links(page.final_url or page.url, page.links),
                )
            )
        for node_id, raws in by_node.items():
            stage(self.db, conn, raws, node_id)


def off_site_links(url: str, links: list[str]) -> list[str]:
    """Links to other hosts, one per host: candidates for automatic discovery."""
    own = origin_of(url)
    by_origin: dict[str, str] = {}
    for link in links:
        origin = origin_of(link)
        if origin != own and link.startswith(("http://", "https://")):
            by_origin.setdefault(origin, link)
    return list(by_origin.values())[:MAX_LINKS]


def _free(db: Database) -> sa.ColumnElement[bool]:
    return sa.or_(staged_pages.c.claimed_until.is_(None), staged_pages.c.claimed_until < db.clock())


def _locked(db: Database, query: sa.Select) -> sa.Select:
    return query.with_for_update(skip_locked=True) if db.backend == "postgresql" else query


def quarantine(db: Database, limit: int = 100) -> list[str]:
    """Remove pages claimed MAX_ATTEMPTS times that never finished (each time the pool crashed on
    them, or the engine died with them); count them as docs.quarantined; their URLs."""
    with db.begin() as conn:
        poison = conn.execute(
            _locked(
                db,
                sa.select(staged_pages.c.id, staged_pages.c.url)
                .where(_free(db), staged_pages.c.attempts >= MAX_ATTEMPTS)
                .order_by(staged_pages.c.id)
                .limit(limit),
            )
        ).all()
        if poison:
            conn.execute(staged_pages.delete().where(staged_pages.c.id.in_([row.id for row in poison])))
            counters.add(db, {"docs.quarantined": len(poison)}, conn)
    return [row.url for row in poison]


def claim(db: Database, owner: str, limit: int) -> list[tuple[int, RawDocument]]:
    """Lease up to `limit` staged pages nobody holds (or whose holder's lease ran out).

    A page claimed twice already without finishing is claimed alone: if it is what brings the pool
    down, its neighbours are not brought down (and quarantined) with it."""
    with db.begin() as conn:
        picked = conn.execute(
            _locked(
                db,
                sa.select(staged_pages.c.id, staged_pages.c.attempts)
                .where(_free(db))
                .order_by(staged_pages.c.id)
                .limit(limit),
            )
        ).all()
        suspects = [row.id for row in picked if row.attempts >= 2]
        ids = suspects[:1] or [row.id for row in picked]
        if not ids:
            return []
        conn.execute(
            staged_pages.update()
            .where(staged_pages.c.id.in_(ids))
            .values(
                claimed_by=owner,
                claimed_until=db.clock() + CLAIM_SECONDS,
                attempts=staged_pages.c.attempts + 1,
            )
        )
        rows = conn.execute(
            sa.select(staged_pages).where(staged_pages.c.id.in_(ids)).order_by(staged_pages.c.id)
        )
        return [(row.id, _raw(row)) for row in rows]


def unclaim(db: Database, ids: list[int], *, attempt_counts: bool = True) -> None:
    """Give pages back at once: the pool failed on their batch (the attempt counts), or the engine is
    stopping (it does not: the pages are as they were)."""
    if ids:
        values: dict = {"claimed_by": None, "claimed_until": None}
        if not attempt_counts:
            attempts = staged_pages.c.attempts
            values["attempts"] = sa.case((attempts > 0, attempts - 1), else_=0)
        with db.begin() as conn:
            conn.execute(staged_pages.update().where(staged_pages.c.id.in_(ids)).values(**values))


def _raw(row: sa.Row) -> RawDocument:
    return RawDocument(
        url=row.url,
        final_url=row.final_url,
        source=row.source,
        content_type=row.content_type,
        title=row.title,
        body=zlib.decompress(row.body).decode("utf-8", errors="replace"),
        train_allowed=row.train_allowed,
        optout_reason=row.optout_reason,
        license_hint=row.license_hint,
        published=row.published or None,
        links=list(row.links or []),
    )


def staged_page(db: Database, url: str) -> RawDocument | None:
    """The newest page staged for `url` and not processed yet (for `aifactory explain`), or None."""
    query = sa.select(staged_pages).where(staged_pages.c.url == url[:2000]).order_by(staged_pages.c.id.desc())
    with db.read() as conn:
        row = conn.execute(query.limit(1)).first()
    return _raw(row) if row is not None else None


def finish(conn: Connection, ids: list[int]) -> None:
    if ids:
        conn.execute(staged_pages.delete().where(staged_pages.c.id.in_(ids)))


def backlog(db: Database, cap: int | None = None) -> int:
    """Staged pages waiting, counted up to `cap` when given (the crawler's backpressure check, which
    must stay cheap however far the text engine has fallen behind)."""
    waiting = sa.select(staged_pages.c.id)
    if cap is not None:
        waiting = waiting.limit(cap)
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(waiting.subquery())).scalar_one())


def reserve(db: Database, node_id: str, wanted: int, cap: int, ttl: float, nodes: int = 1) -> tuple[int, int]:
    """Room for `wanted` more staged pages from the budget all collectors share; (granted, waiting).

    One transaction with the reservations row locked: the pages waiting, minus the live reservations
    of the other nodes, is what is left, and this node's grant replaces its previous reservation. No
    node takes more than its share (cap / `nodes`), so one node's long cycle never starves the others.
    A reservation expires after `ttl` seconds (a node that died), or is given back with `wanted=0`."""
    with db.begin() as conn:
        now = db.clock()
        db.upsert(
            conn,
            system_config,
            {"key": RESERVATIONS_KEY, "value": "{}", "updated_at": now},
            ["key"],
            update=lambda _: {},
        )
        raw = conn.execute(
            sa.select(system_config.c.value).where(system_config.c.key == RESERVATIONS_KEY).with_for_update()
        ).scalar_one()
        try:
            held = {node: (int(n), float(until)) for node, (n, until) in json.loads(raw).items()}
        except (ValueError, TypeError):
            held = {}
        held = {node: (n, until) for node, (n, until) in held.items() if until > now and node != node_id}
        waiting_query = sa.select(staged_pages.c.id).limit(cap)
        waiting = int(
            conn.execute(sa.select(sa.func.count()).select_from(waiting_query.subquery())).scalar_one()
        )
        share = -(-cap // max(1, nodes))
        granted = max(0, min(wanted, share, cap - waiting - sum(n for n, _ in held.values())))
        if granted:
            held[node_id] = (granted, now + ttl)
        conn.execute(
            system_config.update()
            .where(system_config.c.key == RESERVATIONS_KEY)
            .values(
                value=json.dumps({node: [n, until] for node, (n, until) in sorted(held.items())}),
                updated_at=now,
            )
        )
    return granted, waiting
