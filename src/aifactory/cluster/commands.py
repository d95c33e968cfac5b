"""The command channel: Ignite/Stop from the dashboard (of any node) to the nodes, through the database.

A command is `target_status` plus an increasing `command_seq` on the node's row; the node applies it
once and acknowledges it by copying the sequence number to `applied_seq`, so a `start` sent to a running
node is not replayed later, and a command sent while a node was down is applied when it comes back.

A command sent to every node (of a role) is also the cluster's target for that role, kept in
`system_config`: a node that joins later, or an engine that is new on a node, starts from it, so a
worker added to an Ignited cluster starts working instead of waiting for the next Ignite.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from aifactory.db import kv
from aifactory.db.database import Database
from aifactory.db.schema import nodes

ACTIONS = ("start", "stop")
ROLES = ("master", "worker")
TARGET_KEY = "cluster.target.{role}"


@dataclass(frozen=True)
class Command:
    action: str
    seq: int


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
        count = conn.execute(query).rowcount or 0
    if node_id is None:
        for each in ROLES if role == "all" else (role,):
            kv.set_value(db, TARGET_KEY.format(role=each), action)
    return count


def cluster_target(db: Database, role: str) -> str | None:
    """The last start/stop sent to every node of `role` (None before the first)."""
    value = kv.get_value(db, TARGET_KEY.format(role=role))
    return value if value in ACTIONS else None


def desired_for_new_engines(db: Database, role: str) -> str:
    return "running" if cluster_target(db, role) == "start" else "stopped"


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
