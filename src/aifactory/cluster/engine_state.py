"""Per-node engine state: what the user wants each engine to do, and what it reports doing.

`desired` is written by Ignite/Stop and by per-engine control; it survives restarts, so a node that
comes back resumes the engines that were running. A node's new engines (a node that joins, an engine
added by an upgrade) start from the cluster's target instead, so they follow an Ignite sent before
they existed. `phase`, `detail` and `counters` are reported by the engine itself for the dashboard;
`last_error` is a one-line reason (the traceback is in the node's log).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from aifactory.db.database import Database
from aifactory.db.schema import engine_state

DESIRED = ("running", "stopped")


def ensure(
    db: Database, node_id: str, names: list[str], desired: str | dict[str, str] = "stopped"
) -> list[str]:
    """Create rows for this node's engines (wanting `desired`, one value or one per engine) and drop
    rows of engines it no longer has; returns the engines created."""
    with db.begin() as conn:
        existing = set(
            conn.execute(sa.select(engine_state.c.engine).where(engine_state.c.node_id == node_id)).scalars()
        )
        created = [name for name in names if name not in existing]
        for name in created:
            want = desired if isinstance(desired, str) else desired.get(name, "stopped")
            conn.execute(
                engine_state.insert().values(
                    node_id=node_id, engine=name, desired=want, counters={}, updated_at=db.now()
                )
            )
        gone = existing - set(names)
        if gone:
            conn.execute(
                engine_state.delete().where(
                    engine_state.c.node_id == node_id, engine_state.c.engine.in_(gone)
                )
            )
    return created


def set_desired(
    db: Database, node_id: str, desired: str, engine: str | None = None, exclude: tuple[str, ...] = ()
) -> int:
    """Set what `engine` (default: every engine of the node but those in `exclude`) should do."""
    if desired not in DESIRED:
        raise ValueError(f"unknown desired state {desired!r}")
    query = engine_state.update().where(engine_state.c.node_id == node_id).values(desired=desired)
    if engine is not None:
        query = query.where(engine_state.c.engine == engine)
    if exclude:
        query = query.where(engine_state.c.engine.not_in(exclude))
    with db.begin() as conn:
        return conn.execute(query).rowcount or 0


def desired_states(db: Database, node_id: str) -> dict[str, str]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(engine_state.c.engine, engine_state.c.desired).where(engine_state.c.node_id == node_id)
        )
        return {engine: desired for engine, desired in rows}


def report(db: Database, node_id: str, engine: str, **values: Any) -> None:
    """Update what an engine reports (phase, detail, counters, last_error, restarts, started_at)."""
    with db.begin() as conn:
        conn.execute(
            engine_state.update()
            .where(engine_state.c.node_id == node_id, engine_state.c.engine == engine)
            .values(updated_at=db.now(), **values)
        )


def load(db: Database, node_id: str, engine: str) -> dict | None:
    with db.read() as conn:
        row = conn.execute(
            sa.select(engine_state).where(engine_state.c.node_id == node_id, engine_state.c.engine == engine)
        ).first()
    return dict(row._mapping) if row else None


def list_states(db: Database, node_id: str | None = None) -> list[dict]:
    query = sa.select(engine_state).order_by(engine_state.c.node_id, engine_state.c.engine)
    if node_id is not None:
        query = query.where(engine_state.c.node_id == node_id)
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
