"""Running counters: dashboard figures are kept up to date as things happen, never by counting rows.

A counter is a named 64-bit integer. Engines add to it in the same transaction as the work it counts
(pass their connection), so the figure and the data never disagree.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aifactory.db.database import Database
from aifactory.db.schema import counters


def add(db: Database, deltas: dict[str, int], conn: Connection | None = None) -> None:
    """Add each delta to its counter (created at zero when new)."""
    if not deltas:
        return
    if conn is None:
        with db.begin() as own:
            add(db, deltas, own)
        return
    for name, delta in sorted(deltas.items()):  # a fixed order avoids deadlocks between nodes
        db.upsert(
            conn,
            counters,
            {"name": name, "value": int(delta), "updated_at": db.now()},
            keys=["name"],
            update=lambda new: {"value": counters.c.value + new.value, "updated_at": new.updated_at},
        )


def get_all(db: Database, prefix: str = "") -> dict[str, int]:
    query = sa.select(counters.c.name, counters.c.value).order_by(counters.c.name)
    if prefix:
        query = query.where(counters.c.name.startswith(prefix, autoescape=True))
    with db.read() as conn:
        return {name: int(value) for name, value in conn.execute(query)}
