"""Cluster membership: each node owns one row of `nodes`, claimed at start and kept fresh by heartbeats.

A node is online while its heartbeat (written with the database's clock) is younger than the offline
window. A second process under the same node id is refused while the first lives; "lives" is decided
by the pid when both are on the same host (a restart after kill -9 or the OOM killer is accepted at
once, however fresh the dead process's heartbeat), and by the heartbeat's age across hosts.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil
import sqlalchemy as sa

from aifactory.db.database import Database
from aifactory.db.schema import engine_state, nodes
from aifactory.settings import Settings

ROLES = ("master", "worker")


class NodeConflict(Exception):
    """Another live process already runs under this node id (or holds the master lease)."""


@dataclass(frozen=True)
class Registration:
    took_over: str = ""  # a description of the dead process whose row was taken over, if any


def resolve_node_id(settings: Settings, role: str) -> str:
    """NODE_ID if set; else an id generated once and kept in DATA_DIR, so a restart keeps its identity."""
    if settings.node_id:
        return settings.node_id
    path = Path(settings.data_dir) / f"node_id_{role}"
    if path.exists():
        stored = path.read_text().strip()
        if stored:
            return stored
    node_id = f"{role}-{socket.gethostname()[:40]}-{uuid.uuid4().hex[:6]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(node_id + "\n")
    return node_id


def process_started(pid: int) -> float | None:
    """When process `pid` of this host started (epoch seconds), or None if there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_alive(pid: int | None, started: float | None) -> bool:
    """Whether the process `pid` that started at `started` still runs on this host. The start time
    tells a reused pid (a new process, perhaps our own restart in a container) from the old one."""
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # someone else's process: assume it is the one
    return started is None or abs(created - started) < 1.0


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
    started: float | None = None,
) -> Registration:
    """Claim the node's row for this process; NodeConflict if another live process holds it."""
    took_over = ""
    with db.begin() as conn:
        row = conn.execute(
            sa.select(
                nodes.c.instance_id,
                nodes.c.status,
                nodes.c.pid,
                nodes.c.hostname,
                nodes.c.process_started,
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
            if row.hostname == hostname and not process_alive(row.pid, row.process_started):
                took_over = f"pid {row.pid}, no longer running, heartbeat {row.age:.0f}s ago"
            else:
                raise NodeConflict(
                    f"node {node_id!r} is already running (pid {row.pid} on {row.hostname}, "
                    f"heartbeat {row.age:.0f}s ago); stop it first or set another NODE_ID"
                )
        values: dict[str, Any] = {
            "role": role,
            "hostname": hostname,
            "pid": pid,
            "process_started": started,
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
    return Registration(took_over)


def heartbeat(
    db: Database,
    node_id: str,
    instance_id: str,
    *,
    status: str,
    cpu_percent: float,
    ram_percent: float,
    profile: dict | None = None,
) -> Literal["ok", "taken", "gone"]:
    """Refresh the node's row: "ok"; "taken" if another process now holds the node id; "gone" if the
    row was removed (cleaned up as stale while this node was silent)."""
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
        if result.rowcount:
            return "ok"
        held = conn.execute(sa.select(nodes.c.node_id).where(nodes.c.node_id == node_id)).first()
    return "taken" if held else "gone"


def mark_stopped(db: Database, node_id: str, instance_id: str) -> None:
    with db.begin() as conn:
        conn.execute(
            nodes.update()
            .where(nodes.c.node_id == node_id, nodes.c.instance_id == instance_id)
            .values(status="stopped", last_heartbeat=db.now())
        )


def exists(db: Database, node_id: str) -> bool:
    with db.read() as conn:
        return conn.execute(sa.select(nodes.c.node_id).where(nodes.c.node_id == node_id)).first() is not None


def find_instance(db: Database, instance_id: str) -> dict | None:
    """The row of the node process with this instance id (which node holds a lease, for messages)."""
    with db.read() as conn:
        row = conn.execute(sa.select(nodes).where(nodes.c.instance_id == instance_id)).first()
    return dict(row._mapping) if row else None


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
    """Forget nodes that have not sent a heartbeat for `older_than` seconds (their engine rows too).
    A node that was only silent (a long pause) registers again at its next heartbeat."""
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
