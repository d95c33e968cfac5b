"""Running counters: dashboard figures are kept up to date as things happen, never by counting rows.

A counter is a named 64-bit integer. Engines add to it in the same transaction as the work it counts
(pass their connection), so the figure and the data never disagree.

Each node adds to its own row of a counter (name, node_id) and readers sum the rows. With one shared row
per name, every node's transaction would wait on the row lock of the others until they commit: the
nodes of a cluster would store their work one at a time (benchmarks/cli_start.py measures it).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aifactory.db.database import Database
from aifactory.db.schema import counters


def add(
    db: Database, deltas: dict[str, int], conn: Connection | None = None, *, node_id: str | None = None
) -> None:
    """Add each delta to a node's row of its counter (created at zero when new): `node_id`'s, by
    default the node this process runs as (`db.node_id`), so callers need not pass it around."""
    if not deltas:
        return
    node_id = db.node_id if node_id is None else node_id
    if conn is None:
        with db.begin() as own:
            add(db, deltas, own, node_id=node_id)
        return
    for name, delta in sorted(deltas.items()):  # a fixed order avoids deadlocks between writers
        db.upsert(
            conn,
            counters,
            {"name": name, "node_id": node_id, "value": int(delta), "updated_at": db.now()},
            keys=["name", "node_id"],
            update=lambda new: {"value": counters.c.value + new.value, "updated_at": new.updated_at},
        )


def get_all(db: Database, prefix: str = "", *, node_id: str | None = None) -> dict[str, int]:
    """Each counter's total over every node (or one node's share), by name."""
    total = sa.func.sum(counters.c.value)
    query = sa.select(counters.c.name, total).group_by(counters.c.name).order_by(counters.c.name)
    if prefix:
        query = query.where(counters.c.name.startswith(prefix, autoescape=True))
    if node_id is not None:
        query = query.where(counters.c.node_id == node_id)
    with db.read() as conn:
        return {name: int(value) for name, value in conn.execute(query)}
