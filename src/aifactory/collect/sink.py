"""Where fetched pages go: the interface between the crawler and whatever turns pages into documents.

The crawler fetches, decodes, reads links and opt-out signals, then hands pages (in batches) to a
PageSink inside the same transaction that marks their URLs done and queues their links; so a page is
stored if and only if its URL counts as fetched. The default sink records the page's metadata in `pages`; the
text-extraction, quality and dedup stage (a later issue) is another sink behind the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from aifactory.db.database import Database
from aifactory.db.schema import pages


@dataclass
class FetchedPage:
    url: str  # the frontier URL (normalized)
    final_url: str  # after same-origin redirects
    url_hash: int
    origin: str
    source: str  # web, docs, cli...
    depth: int
    status: int
    headers: dict[str, str]
    body: bytes
    text: str  # body decoded with `charset`
    mime: str
    charset: str
    node_id: str
    title: str = ""
    links: list[str] = field(default_factory=list)  # normalized out-links (all of them, in or out of scope)
    train_allowed: bool = True
    optout_reasons: list[str] = field(default_factory=list)


class PageSink(Protocol):
    def handle(self, pages: list[FetchedPage], conn: Connection) -> None:
        """Take a batch of pages, inside the crawler's transaction. Raising rejects the batch: the
        crawler then hands the pages over one by one, and a page rejected on its own is counted
        (errors_sink) and its URL marked failed; the other pages are kept."""
        ...


class PageStore:
    """The default sink: one row per URL in `pages` (URL, final URL, status, key headers, sizes)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        dialect = postgresql if db.backend == "postgresql" else sqlite
        insert = dialect.insert(pages).values(fetched_at=db.now())
        # Built once: a refetched page replaces its row (every column but the key).
        update = {c.name: insert.excluded[c.name] for c in pages.columns if c.name != "url_hash"}
        self._upsert = insert.on_conflict_do_update(index_elements=["url_hash"], set_=update)

    def handle(self, pages: list[FetchedPage], conn: Connection) -> None:
        rows = [
            {
                "url_hash": page.url_hash,
                "url": page.url,
                "final_url": page.final_url,
                "origin": page.origin,
                "source": page.source,
                "depth": page.depth,
                "status": page.status,
                "content_type": page.mime[:200],
                "charset": page.charset[:64],
                "body_bytes": len(page.body),
                "headers": page.headers,
                "title": page.title,
                "links": len(page.links),
                "train_allowed": page.train_allowed,
                "optout_reason": "; ".join(page.optout_reasons)[:200],
                "node_id": page.node_id,
            }
            for page in sorted(pages, key=lambda page: page.url_hash)  # one lock order across nodes
        ]
        conn.execute(self._upsert, rows)
