"""Counters, events and key/value config, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from aifactory.db import Database, counters, events, kv
from aifactory.db.schema import counters as counters_table


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


def test_each_node_adds_to_its_own_rows_and_reads_sum_them(db: Database) -> None:
    """Nodes never wait on each other's counter rows: each writes (name, node) rows, reads add them up."""
    counters.add(db, {"pages": 2, "bytes": 10}, node_id="w1")
    with db.begin() as conn:
        counters.add(db, {"pages": 3}, conn, node_id="w2")
    counters.add(db, {"pages": 1})  # no node: the process's own (db.node_id, "" outside a node)
    assert counters.get_all(db) == {"bytes": 10, "pages": 6}
    assert counters.get_all(db, node_id="w2") == {"pages": 3}
    with db.read() as conn:
        rows = conn.execute(sa.select(counters_table.c.node_id).where(counters_table.c.name == "pages"))
        assert sorted(rows.scalars()) == ["", "w1", "w2"]
