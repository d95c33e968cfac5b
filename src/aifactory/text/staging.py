"""Pages waiting for the text pipeline.

The crawler stages each fetched page in the same transaction that marks its URL fetched; the text
engine claims staged pages (a lease on the database clock), analyzes them in a process pool and
stores their documents in the transaction that deletes them. So extraction's CPU cost never holds
up the fetcher or its database transaction, and a node that dies loses nothing: its claims expire
and any node picks the pages up again (storing is idempotent by URL).
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aifactory.collect.sink import FetchedPage, PageStore
from aifactory.collect.urls import origin_of
from aifactory.db.database import Database
from aifactory.db.schema import staged_pages
from aifactory.text.pipeline import RawDocument

MAX_LINKS = 100  # off-site links kept per page for automatic discovery
CLAIM_SECONDS = 300.0
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


def claim(db: Database, owner: str, limit: int) -> list[tuple[int, RawDocument]]:
    """Lease up to `limit` staged pages nobody holds (or whose holder's lease ran out)."""
    free = sa.or_(staged_pages.c.claimed_until.is_(None), staged_pages.c.claimed_until < db.now())
    pick = sa.select(staged_pages.c.id).where(free).order_by(staged_pages.c.id).limit(limit)
    if db.backend == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    with db.begin() as conn:
        ids = list(conn.execute(pick).scalars())
        if not ids:
            return []
        conn.execute(
            staged_pages.update()
            .where(staged_pages.c.id.in_(ids))
            .values(claimed_by=owner, claimed_until=db.now() + CLAIM_SECONDS)
        )
        rows = conn.execute(
            sa.select(staged_pages).where(staged_pages.c.id.in_(ids)).order_by(staged_pages.c.id)
        )
        return [(row.id, _raw(row)) for row in rows]


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
