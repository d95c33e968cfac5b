"""The event log: what happened, for the dashboard's activity feed and for post-mortems."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from aifactory.db.database import Database
from aifactory.db.schema import events

log = logging.getLogger("aifactory")
LEVELS = ("debug", "info", "warning", "error")


def record(db: Database, message: str, *, source: str, node_id: str = "", level: str = "info") -> None:
    """Log to stderr and to the events table; a database hiccup never turns a log line into a crash."""
    log.log(getattr(logging, level.upper(), logging.INFO), "[%s] %s", source, message)
    try:
        with db.begin() as conn:
            conn.execute(
                events.insert().values(
                    ts=db.now(), node_id=node_id, level=level, source=source[:64], message=message[:4000]
                )
            )
    except sa.exc.SQLAlchemyError as exc:
        log.warning("could not store event %r: %s", message, exc)


def recent(db: Database, limit: int = 50, *, min_level: str = "debug") -> list[dict]:
    """The newest events first (an index walk on the primary key, not a table scan)."""
    wanted = LEVELS[LEVELS.index(min_level) :] if min_level in LEVELS else LEVELS
    query = sa.select(events).where(events.c.level.in_(wanted)).order_by(events.c.id.desc()).limit(limit)
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def prune(db: Database, keep: int) -> int:
    """Delete all but the newest `keep` events; returns how many were deleted."""
    with db.begin() as conn:
        newest = conn.execute(sa.select(sa.func.max(events.c.id))).scalar()
        if newest is None or newest <= keep:
            return 0
        return conn.execute(events.delete().where(events.c.id <= newest - keep)).rowcount or 0
