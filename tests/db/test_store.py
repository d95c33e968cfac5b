"""Counters, events, key/value config and the node command channel, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from aifactory.db import Database, counters, events, kv
from aifactory.db import engines as engine_db
from aifactory.db import nodes as node_db


def register(db: Database, node_id: str, role: str = "worker", instance: str = "i1") -> None:
    node_db.register(
        db,
        node_id=node_id,
        role=role,
        hostname="h",
        pid=1,
        instance_id=instance,
        version="t",
        api_url="",
        alive_window=60,
    )


def test_counters_add_up_exactly_under_concurrent_writers(db: Database) -> None:
    def work() -> None:
        for _ in range(25):
            counters.add(db, {"pages.fetched": 1, "bytes": 100})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert counters.get_all(db) == {"bytes": 10000, "pages.fetched": 100}
    assert counters.get_all(db, prefix="pages.") == {"pages.fetched": 100}


def test_counters_share_the_callers_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError), db.begin() as conn:
        counters.add(db, {"docs": 5}, conn)
        raise RuntimeError("the work failed, so the count must not stick")
    assert counters.get_all(db) == {}


def test_events_newest_first_and_pruned(db: Database) -> None:
    for i in range(30):
        events.record(db, f"event {i}", source="test", level="warning" if i % 10 == 0 else "info")
    recent = events.recent(db, 5)
    assert [e["message"] for e in recent] == [f"event {i}" for i in (29, 28, 27, 26, 25)]
    assert [e["message"] for e in events.recent(db, 10, min_level="warning")] == [
        "event 20",
        "event 10",
        "event 0",
    ]
    assert events.prune(db, keep=10) == 20
    assert len(events.recent(db, 100)) == 10


def test_key_value_config(db: Database) -> None:
    assert kv.get_value(db, "x", "fallback") == "fallback"
    kv.set_value(db, "x", "1")
    kv.set_value(db, "x", "2")
    assert kv.get_value(db, "x") == "2" and kv.get_all(db) == {"x": "2"}


def test_commands_are_sequenced_and_acknowledged(db: Database) -> None:
    register(db, "w1")
    register(db, "m1", role="master")
    assert node_db.pending_command(db, "w1") is None
    assert node_db.send_command(db, "start", role="worker") == 1
    assert node_db.send_command(db, "stop") == 2
    command = node_db.pending_command(db, "w1")
    assert command == node_db.Command("stop", 2)  # the latest wish wins
    node_db.ack_command(db, "w1", command.seq)
    assert node_db.pending_command(db, "w1") is None
    assert node_db.send_command(db, "start", node_id="missing") == 0
    with pytest.raises(ValueError):
        node_db.send_command(db, "reboot")


def test_heartbeat_ages_are_measured_on_the_database_clock(db: Database) -> None:
    register(db, "w1")
    assert node_db.heartbeat(db, "w1", "i1", status="running", cpu_percent=1.0, ram_percent=2.0)
    row = node_db.list_nodes(db, offline_after=60)[0]
    assert row["online"] and 0 <= row["heartbeat_age"] < 5
    assert node_db.active_node_ids(db, window=60, roles=("worker",)) == ["w1"]
    # a heartbeat from a process that lost the node id is refused
    assert not node_db.heartbeat(db, "w1", "someone-else", status="idle", cpu_percent=0, ram_percent=0)


def test_a_live_node_id_cannot_be_claimed_twice(db: Database) -> None:
    register(db, "w1", instance="first")
    with pytest.raises(node_db.NodeConflict, match="already running"):
        register(db, "w1", instance="second")
    node_db.mark_stopped(db, "w1", "first")
    register(db, "w1", instance="second")  # after a clean stop the id is free again


def test_deleting_stale_nodes_removes_their_engine_rows(db: Database) -> None:
    register(db, "old")
    engine_db.ensure(db, "old", ["collector"])
    with db.begin() as conn:
        conn.execute(node_db.nodes.update().values(last_heartbeat=db.now() - 4000))
    assert node_db.delete_stale(db, older_than=3600, role="master") == []
    assert node_db.delete_stale(db, older_than=3600) == ["old"]
    assert engine_db.list_states(db) == []


def test_engine_rows_follow_the_engines_a_node_has(db: Database) -> None:
    register(db, "m1", role="master")
    engine_db.ensure(db, "m1", ["collector", "trainer"])
    engine_db.set_desired(db, "m1", "running", engine="trainer")
    engine_db.ensure(db, "m1", ["trainer", "evaluator"])
    assert engine_db.desired_states(db, "m1") == {"evaluator": "stopped", "trainer": "running"}
