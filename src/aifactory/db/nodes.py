"""Cluster membership and the command channel between the dashboard and the nodes.

Each node owns one row: it writes its heartbeat (with the database's clock) and reads commands from
it. A command is `target_status` plus an increasing `command_seq`; the node applies a command once and
acknowledges it by copying the sequence number to `applied_seq`, so a `start` sent to a running node
is not replayed later, and a command sent while a node was down is applied when it comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from aifactory.db.database import Database
from aifactory.db.schema import engine_state, nodes

ACTIONS = ("start", "stop")
ROLES = ("master", "worker")


class NodeConflict(Exception):
    """Another live process already runs under this node id."""


@dataclass(frozen=True)
class Command:
    action: str
    seq: int


def register(
    db: Database,
    *,
    node_id: str,
    role: str,
    hostname: str,
    pid: int,
    instance_id: str,
    version: str,
    api_url: str,
    alive_window: float,
) -> None:
    """Claim the node's row for this process; refuse if another live process holds it."""
    with db.begin() as conn:
        row = conn.execute(
            sa.select(
                nodes.c.instance_id,
                nodes.c.status,
                nodes.c.pid,
                nodes.c.hostname,
                (db.now() - nodes.c.last_heartbeat).label("age"),
            ).where(nodes.c.node_id == node_id)
        ).first()
        if (
            row is not None
            and row.instance_id != instance_id
            and row.status != "stopped"
            and row.age is not None
            and row.age < alive_window
        ):
            raise NodeConflict(
                f"node {node_id!r} is already running (pid {row.pid} on {row.hostname}, "
                f"heartbeat {row.age:.0f}s ago); stop it first or set another NODE_ID"
            )
        values: dict[str, Any] = {
            "role": role,
            "hostname": hostname,
            "pid": pid,
            "instance_id": instance_id,
            "version": version,
            "api_url": api_url,
            "status": "idle",
            "started_at": db.now(),
            "last_heartbeat": db.now(),
        }
        if row is None:
            conn.execute(nodes.insert().values(node_id=node_id, **values))
        else:
            conn.execute(nodes.update().where(nodes.c.node_id == node_id).values(**values))


def heartbeat(
    db: Database,
    node_id: str,
    instance_id: str,
    *,
    status: str,
    cpu_percent: float,
    ram_percent: float,
    profile: dict | None = None,
) -> bool:
    """Refresh the node's row; False if another process has taken the node id over."""
    values: dict[str, Any] = {
        "status": status,
        "cpu_percent": cpu_percent,
        "ram_percent": ram_percent,
        "last_heartbeat": db.now(),
    }
    if profile is not None:
        values["profile"] = profile
    with db.begin() as conn:
        result = conn.execute(
            nodes.update()
            .where(nodes.c.node_id == node_id, nodes.c.instance_id == instance_id)
            .values(**values)
        )
    return bool(result.rowcount)


def mark_stopped(db: Database, node_id: str, instance_id: str) -> None:
    with db.begin() as conn:
        conn.execute(
            nodes.update()
            .where(nodes.c.node_id == node_id, nodes.c.instance_id == instance_id)
            .values(status="stopped", last_heartbeat=db.now())
        )


def send_command(db: Database, action: str, *, node_id: str | None = None, role: str = "all") -> int:
    """Queue start/stop for one node, or for every node of a role; returns how many nodes got it."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    query = nodes.update().values(target_status=action, command_seq=nodes.c.command_seq + 1)
    if node_id is not None:
        query = query.where(nodes.c.node_id == node_id)
    elif role != "all":
        query = query.where(nodes.c.role == role)
    with db.begin() as conn:
        return conn.execute(query).rowcount or 0


def pending_command(db: Database, node_id: str) -> Command | None:
    with db.read() as conn:
        row = conn.execute(
            sa.select(nodes.c.target_status, nodes.c.command_seq, nodes.c.applied_seq).where(
                nodes.c.node_id == node_id
            )
        ).first()
    if row is None or row.command_seq <= row.applied_seq or row.target_status not in ACTIONS:
        return None
    return Command(row.target_status, row.command_seq)


def ack_command(db: Database, node_id: str, seq: int) -> None:
    with db.begin() as conn:
        conn.execute(nodes.update().where(nodes.c.node_id == node_id).values(applied_seq=seq))


def exists(db: Database, node_id: str) -> bool:
    with db.read() as conn:
        return conn.execute(sa.select(nodes.c.node_id).where(nodes.c.node_id == node_id)).first() is not None


def list_nodes(db: Database, *, offline_after: float, list_window_sec: float | None = None) -> list[dict]:
    """Nodes with their heartbeat age, `online` and a display `state`, on the database's clock."""
    age = (db.now() - nodes.c.last_heartbeat).label("heartbeat_age")
    query = sa.select(nodes, age).order_by(nodes.c.role, nodes.c.node_id)
    if list_window_sec is not None:
        query = query.where(sa.or_(nodes.c.last_heartbeat.is_(None), age < list_window_sec))
    out = []
    with db.read() as conn:
        for row in conn.execute(query):
            item = dict(row._mapping)
            fresh = item["heartbeat_age"] is not None and item["heartbeat_age"] < offline_after
            item["online"] = fresh and item["status"] != "stopped"
            # what to show: stopped (ended cleanly), offline (went silent), else running/idle
            item["state"] = item["status"] if item["online"] or item["status"] == "stopped" else "offline"
            out.append(item)
    return out


def delete_stale(db: Database, *, older_than: float, role: str = "all") -> list[str]:
    """Forget nodes that have not sent a heartbeat for `older_than` seconds (their engine rows too)."""
    stale = sa.or_(nodes.c.last_heartbeat.is_(None), db.now() - nodes.c.last_heartbeat > older_than)
    condition = stale if role == "all" else sa.and_(stale, nodes.c.role == role)
    with db.begin() as conn:
        ids = list(conn.execute(sa.select(nodes.c.node_id).where(condition)).scalars())
        if ids:
            conn.execute(engine_state.delete().where(engine_state.c.node_id.in_(ids)))
            conn.execute(nodes.delete().where(nodes.c.node_id.in_(ids)))
    return ids


def active_node_ids(db: Database, *, window: float, roles: tuple[str, ...]) -> list[str]:
    """Ids of nodes of these roles with a heartbeat within `window` seconds, sorted (for sharding)."""
    query = (
        sa.select(nodes.c.node_id)
        .where(
            nodes.c.role.in_(roles), nodes.c.status != "stopped", db.now() - nodes.c.last_heartbeat < window
        )
        .order_by(nodes.c.node_id)
    )
    with db.read() as conn:
        return list(conn.execute(query).scalars())
