"""Dropped pages: which page the text pipeline did not keep, by which rule, measuring what.

The text pipeline records every document (or part of a long one) it drops, in the transaction that
counts the outcome: the URL, its domain, the reason (the rule's name), what the rule measured and the
threshold it failed. The log is bounded (REJECTIONS_MAX_ROWS, the oldest rows are pruned); the totals
per domain and reason are kept in `rejection_counts` and never pruned, so the dashboard's figures
cover everything ever dropped while the log shows the recent examples.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aifactory.db.database import Database
from aifactory.db.schema import rejection_counts, rejections


@dataclass(frozen=True)
class Rejection:
    url: str
    domain: str
    reason: str
    value: float = 0.0
    threshold: float = 0.0
    detail: str = ""
    source: str = ""
    language: str = ""
    chars: int = 0


def record(db: Database, conn: Connection, rows: list[Rejection], *, node_id: str, max_rows: int) -> None:
    """Log `rows` (in the caller's transaction), add them to the totals and prune the oldest rows
    beyond `max_rows` (0 keeps no log, only the totals)."""
    if not rows:
        return
    now = db.now_value(conn)
    if max_rows > 0:
        conn.execute(
            rejections.insert(),
            [
                {
                    **asdict(row),
                    "url": row.url[:2000],
                    "domain": row.domain[:255],
                    "source": row.source[:32],
                    "reason": row.reason[:64],
                    "detail": row.detail[:64],
                    "language": row.language[:16],
                    "node_id": node_id[:128],
                    "created_at": now,
                }
                for row in rows
            ],
        )
    totals = Counter((row.domain[:255], row.reason[:64]) for row in rows)
    for (domain, reason), count in sorted(totals.items()):  # a fixed order: no deadlock between nodes
        db.upsert(
            conn,
            rejection_counts,
            {"domain": domain, "reason": reason, "count": count, "last_at": now},
            keys=["domain", "reason"],
            update=lambda new: {"count": rejection_counts.c.count + new["count"], "last_at": new.last_at},
        )
    newest = conn.execute(sa.select(sa.func.max(rejections.c.id))).scalar()
    if newest is not None and newest > max_rows:
        conn.execute(rejections.delete().where(rejections.c.id <= newest - max_rows))


def recent(
    db: Database,
    *,
    domain: str | None = None,
    reason: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[dict]:
    """The newest recorded rejections first, optionally of one domain and/or reason."""
    query = sa.select(rejections).order_by(rejections.c.id.desc()).limit(limit)
    if domain:
        query = query.where(rejections.c.domain == domain.lower())
    if reason:
        query = query.where(rejections.c.reason == reason)
    if before_id is not None:
        query = query.where(rejections.c.id < before_id)
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def counts(
    db: Database, *, domain: str | None = None, reason: str | None = None, limit: int = 1000
) -> list[dict]:
    """Totals per domain x reason, the largest first."""
    query = (
        sa.select(rejection_counts)
        .order_by(rejection_counts.c.count.desc(), rejection_counts.c.domain, rejection_counts.c.reason)
        .limit(limit)
    )
    if domain:
        query = query.where(rejection_counts.c.domain == domain.lower())
    if reason:
        query = query.where(rejection_counts.c.reason == reason)
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def total(db: Database, *, domain: str | None = None, reason: str | None = None) -> int:
    """Documents dropped in all (of the domain and/or reason), from the totals."""
    query = sa.select(sa.func.coalesce(sa.func.sum(rejection_counts.c.count), 0))
    if domain:
        query = query.where(rejection_counts.c.domain == domain.lower())
    if reason:
        query = query.where(rejection_counts.c.reason == reason)
    with db.read() as conn:
        return int(conn.execute(query).scalar_one())


def for_url(db: Database, url: str, limit: int = 10) -> list[dict]:
    """What was recorded for `url` and the parts of it (`url#part-N`), newest first."""
    query = (
        sa.select(rejections)
        .where(
            sa.or_(
                rejections.c.url == url,
                rejections.c.url.startswith(f"{url}#part-", autoescape=True),
            )
        )
        .order_by(rejections.c.id.desc())
        .limit(limit)
    )
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
