"""Membership: claiming a node's row, heartbeats on the database clock, taking over from a dead process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from aifactory.cluster import engine_state, membership
from aifactory.db import Database


def register(
    db: Database, node_id: str, role: str = "worker", instance: str = "i1", **values: object
) -> None:
    membership.register(
        db,
        node_id=node_id,
        role=role,
        hostname=values.get("hostname", "h"),
        pid=values.get("pid", 1),
        instance_id=instance,
        version="t",
        api_url="",
        alive_window=60,
        started=values.get("started"),
    )


def test_heartbeat_ages_are_measured_on_the_database_clock(db: Database) -> None:
    register(db, "w1")
    assert membership.heartbeat(db, "w1", "i1", status="running", cpu_percent=1.0, ram_percent=2.0) == "ok"
    row = membership.list_nodes(db, offline_after=60)[0]
    assert row["online"] and 0 <= row["heartbeat_age"] < 5
    assert membership.active_node_ids(db, window=60, roles=("worker",)) == ["w1"]
    # a heartbeat from a process that lost the node id is refused, and says why
    assert (
        membership.heartbeat(db, "w1", "someone-else", status="idle", cpu_percent=0, ram_percent=0) == "taken"
    )
    membership.delete_stale(db, older_than=-1)
    assert membership.heartbeat(db, "w1", "i1", status="idle", cpu_percent=0, ram_percent=0) == "gone"


def test_a_live_node_id_cannot_be_claimed_twice(db: Database) -> None:
    register(db, "w1", instance="first")
    with pytest.raises(membership.NodeConflict, match="already running"):
        register(db, "w1", instance="second")
    membership.mark_stopped(db, "w1", "first")
    register(db, "w1", instance="second")  # after a clean stop the id is free again


def test_deleting_stale_nodes_removes_their_engine_rows(db: Database) -> None:
    register(db, "old")
    engine_state.ensure(db, "old", ["collector"])
    with db.begin() as conn:
        conn.execute(membership.nodes.update().values(last_heartbeat=db.now() - 4000))
    assert membership.delete_stale(db, older_than=3600, role="master") == []
    assert membership.delete_stale(db, older_than=3600) == ["old"]
    assert engine_state.list_states(db) == []


def test_a_row_held_by_a_dead_process_on_this_host_is_taken_over_at_once(db: Database) -> None:
    """After kill -9 the row still looks alive (fresh heartbeat, status running); the pid says otherwise."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    started = membership.process_started(dead.pid)
    dead.wait()
    here = socket.gethostname()
    register(db, "w1", instance="old", hostname=here, pid=dead.pid, started=started)
    assert membership.heartbeat(db, "w1", "old", status="running", cpu_percent=0, ram_percent=0) == "ok"
    membership.register(
        db, node_id="w1", role="worker", hostname=here, pid=os.getpid(), instance_id="new",
        version="t", api_url="", alive_window=60, started=membership.process_started(os.getpid()),
    )  # fmt: skip
    assert membership.find_instance(db, "new")["pid"] == os.getpid()


def test_a_row_held_by_a_live_process_is_refused_even_with_the_same_pid_reused(db: Database) -> None:
    here = socket.gethostname()
    me = membership.process_started(os.getpid())
    register(db, "w1", instance="live", hostname=here, pid=os.getpid(), started=me)
    with pytest.raises(membership.NodeConflict, match=f"already running \\(pid {os.getpid()} on {here}"):
        register(db, "w1", instance="other", hostname=here)
    # the same pid with another start time is another process (a container restarted with pid 1)
    with db.begin() as conn:
        conn.execute(membership.nodes.update().values(process_started=(me or 0) - 1000))
    register(db, "w1", instance="other", hostname=here)


def test_process_alive_tells_the_living_from_the_dead() -> None:
    assert membership.process_alive(os.getpid(), membership.process_started(os.getpid()))
    assert not membership.process_alive(os.getpid(), 1.0)  # same pid, other start: a reused pid
    assert not membership.process_alive(None, None)
